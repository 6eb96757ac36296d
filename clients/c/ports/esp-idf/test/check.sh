#!/bin/sh
# Compile-checks the ESP-IDF port and its example without ESP-IDF: against
# test/stubs (declarations of the ESP-IDF 5.x API the code uses), the C
# client's header and the system's mbedtls headers (Debian: libmbedtls-dev).
# Also compiles the core library (clients/c/src/*.c) when it is there.
# Any warning fails (-Werror).
#
#   test/check.sh path/to/keys.h        or   FOTA_KEYS_H=path/to/keys.h test/check.sh
#
# keys.h is what `fota device add ... --keys-h keys.h --keys DIR` writes (the
# example includes it). Without one, and with Go at hand, the script makes
# a stand-in from `fota keys init` plus placeholder DEVICE_ID, HMAC_PSK and
# OTA_SERVER_URL, and says so.
#
# CC (default cc) and CFLAGS (added) are honoured. CFLAGS comes before the
# stubs and the system's headers on the include path, so another mbedtls's
# headers are checked with, e.g. (ESP-IDF 5 ships mbedtls 3.x):
#
#   CFLAGS=-I/path/to/mbedtls-3.6/include test/check.sh keys.h
set -eu

here=$(cd "$(dirname "$0")" && pwd)
port=$(dirname "$here")
clients_c=$(cd "$port/../.." && pwd)
repo=$(cd "$clients_c/../.." && pwd)
cc=${CC:-cc}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

keys=${1:-${FOTA_KEYS_H:-}}
if [ -z "$keys" ]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "check.sh: give a keys.h (argument or FOTA_KEYS_H); fota device add --keys-h writes one" >&2
        exit 2
    fi
    echo "check.sh: no keys.h given: using one from 'fota keys init' with placeholder device values"
    (cd "$repo" && go run ./cmd/fota keys init --dir "$tmp/keys" >/dev/null)
    mkdir -p "$tmp/keysinc"
    {
        printf '#include "%s"\n' "$tmp/keys/keys.h"
        printf '#define FOTA_DEVICE_KEYS_H 1\n'
        printf 'static const char DEVICE_ID[] = "check-device";\n'
        printf 'static const char HMAC_PSK[] = "%s";\n' \
            "0000000000000000000000000000000000000000000000000000000000000000"
        printf 'static const char OTA_SERVER_URL[] = "https://fota.example:8443";\n'
    } >"$tmp/keysinc/keys.h"
    keys=$tmp/keysinc/keys.h
fi
if [ ! -f "$keys" ]; then
    echo "check.sh: $keys: no such file" >&2
    exit 2
fi
# The example includes "keys.h": give it a folder holding just that name.
mkdir -p "$tmp/keysdir"
cp "$keys" "$tmp/keysdir/keys.h"

warn="-std=c99 -Wall -Wextra -Werror -Wpedantic -Wshadow -Wstrict-prototypes"
esp_inc="-I$here/stubs -I$clients_c/include -I$port/include"

failed=0
run() {
    # $1: what, rest: the command
    what=$1
    shift
    if "$@"; then
        echo "ok   $what"
    else
        echo "FAIL $what"
        failed=1
    fi
}

# The port under the option combinations its #ifdefs read.
run "fota_port_esp.c" \
    $cc $warn ${CFLAGS:-} $esp_inc -c "$port/fota_port_esp.c" -o "$tmp/port.o"
run "fota_port_esp.c (eFuse anti-rollback)" \
    $cc $warn ${CFLAGS:-} -DFOTA_CHECK_ANTI_ROLLBACK $esp_inc -c "$port/fota_port_esp.c" -o "$tmp/port-ar.o"
run "fota_port_esp.c (no rollback, no certificate bundle)" \
    $cc $warn ${CFLAGS:-} -DFOTA_CHECK_NO_ROLLBACK -DFOTA_CHECK_NO_BUNDLE $esp_inc \
    -c "$port/fota_port_esp.c" -o "$tmp/port-min.o"

run "fota_port_esp.c (delta updates)" \
    $cc $warn ${CFLAGS:-} -DFOTA_DELTA=1 $esp_inc -I"$clients_c/src" -c "$port/fota_port_esp.c" -o "$tmp/port-delta.o"
run "examples/ota/main/main.c (delta updates)" \
    $cc $warn ${CFLAGS:-} -DFOTA_DELTA=1 $esp_inc -I"$tmp/keysdir" -c "$port/examples/ota/main/main.c" -o "$tmp/main-delta.o"

run "examples/ota/main/main.c" \
    $cc $warn ${CFLAGS:-} $esp_inc -I"$tmp/keysdir" -c "$port/examples/ota/main/main.c" -o "$tmp/main.o"

# The core is portable C99: no ESP-IDF stubs on its include path.
core_found=0
for src in "$clients_c"/src/*.c; do
    [ -f "$src" ] || continue
    core_found=1
    name=$(basename "$src" .c)
    run "src/$name.c" \
        $cc $warn ${CFLAGS:-} -I"$clients_c/include" -I"$clients_c/src" -c "$src" -o "$tmp/core-$name.o"
    run "src/$name.c (delta updates)" \
        $cc $warn ${CFLAGS:-} -DFOTA_DELTA=1 -I"$clients_c/include" -I"$clients_c/src" -c "$src" -o "$tmp/core-delta-$name.o"
done
if [ "$core_found" = 0 ]; then
    echo "skip core library: no $clients_c/src/*.c yet"
fi

if [ "$failed" != 0 ]; then
    echo "check.sh: FAILED"
    exit 1
fi
echo "check.sh: all compiled without warnings ($($cc --version | head -n 1))"
