#!/usr/bin/env bash
# Size of the fota C client on an ESP32-C3 (RISC-V rv32imc): cross-compiles
# the library (src/; not mbedtls, not a port; src/fota_push.c and
# src/fota_delta.c, optional, are printed apart) with -Os and prints its code
# and static data (text/data/bss), the largest stack any public function
# needs (from -fcallgraph-info: the library's own frames along its deepest
# call chain; mbedtls's and the port's frames are theirs), and the RAM an
# application gives it: work buffer + fota_client_t + that stack.
#
#   clients/c/scripts/size.sh [--check]
#
# The delta-enabled build (-DFOTA_DELTA=1: the core with its delta code, and
# src/fota_delta.c) is measured apart: its code, which has no limit of its
# own, and its RAM (work buffer + its larger client + stack, which holds the
# download record and in it the patcher's state, fota_delta_t), which has
# the same 8 KiB budget: a delta update takes no more RAM than a full one.
#
# --check exits 1 when a target is missed: code <= 16 KiB, static data <=
# 1 KiB, work buffer + client + stack <= 8 KiB (both builds). Needs Debian's
# gcc-riscv64-unknown-elf and picolibc-riscv64-unknown-elf, and mbedtls
# headers (libmbedtls-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
check=${1:-}
CC=${RISCV_CC:-riscv64-unknown-elf-gcc}
command -v "$CC" >/dev/null || { echo "size.sh: $CC not found: apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf" >&2; exit 2; }
MBEDTLS_INCLUDE=${MBEDTLS_INCLUDE:-/usr/include}
[ -f "$MBEDTLS_INCLUDE/mbedtls/aes.h" ] || { echo "size.sh: no mbedtls headers in $MBEDTLS_INCLUDE: apt-get install libmbedtls-dev" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Only mbedtls's headers, not the host's C library headers beside them.
mkdir -p "$tmp/inc"
ln -s "$MBEDTLS_INCLUDE/mbedtls" "$tmp/inc/mbedtls"
[ -d "$MBEDTLS_INCLUDE/psa" ] && ln -s "$MBEDTLS_INCLUDE/psa" "$tmp/inc/psa"

flags=(--specs=picolibc.specs -march=rv32imc -mabi=ilp32 -Os -std=c99 -Wall -Wextra -Werror
  -Iinclude -Isrc -isystem "$tmp/inc" "-DMBEDTLS_USER_CONFIG_FILE=\"$PWD/scripts/mcu_mbedtls.h\"")
# src/fota_push.c is optional (push over MQTT: the broker password, the
# payload's spread, the wait before a pushed check): only firmware with push
# links it, so it is measured and printed apart, not held to the target.
# src/fota_delta.c (applying delta patches) likewise: firmware that takes
# delta updates links it and gives it a fota_delta_t and stack (below).
optional=src/fota_push.c
delta=src/fota_delta.c
objs=()
for src in src/*.c; do
  [ "$src" = "$optional" ] && continue
  [ "$src" = "$delta" ] && continue
  obj="$tmp/$(basename "$src" .c).o"
  "$CC" "${flags[@]}" -fcallgraph-info=su -c "$src" -o "$obj"
  objs+=("$obj")
done
mkdir "$tmp/optional" "$tmp/delta"
"$CC" "${flags[@]}" -c "$optional" -o "$tmp/optional/fota_push.o"
"$CC" "${flags[@]}" -fcallgraph-info=su -c "$delta" -o "$tmp/delta/fota_delta.o"

# The client struct's size, read off a probe object's symbol table.
cat > "$tmp/probe.c" <<'EOF'
#include "fota_client.h"
const unsigned char fota_client_size[sizeof(fota_client_t)] = {1};
const unsigned char fota_work_min[FOTA_WORK_MIN] = {1};
EOF
cat > "$tmp/delta_probe.c" <<'EOF'
#include "fota_delta.h"
const unsigned char fota_delta_size[sizeof(fota_delta_t)] = {1};
EOF
"$CC" "${flags[@]}" -c "$tmp/delta_probe.c" -o "$tmp/delta_probe.o"
"$CC" "${flags[@]}" -c "$tmp/probe.c" -o "$tmp/probe.o"
# The delta-enabled build: the core again with -DFOTA_DELTA=1, and the applier.
mkdir "$tmp/dbuild"
dobjs=()
for src in src/*.c; do
  [ "$src" = "$optional" ] && continue
  obj="$tmp/dbuild/$(basename "$src" .c).o"
  "$CC" "${flags[@]}" -DFOTA_DELTA=1 -fcallgraph-info=su -c "$src" -o "$obj"
  dobjs+=("$obj")
done
"$CC" "${flags[@]}" -DFOTA_DELTA=1 -c "$tmp/probe.c" -o "$tmp/dprobe.o"
# The applier calls the client's patch I/O through function pointers, which
# the call graph cannot see: those edges are added by hand.
printf 'edge: { sourcename: "flush" targetname: "patch_write" }\nedge: { sourcename: "stream_byte" targetname: "patch_read" }\n' >"$tmp/dbuild/indirect.ci"

symsize() { printf "%d" "0x$(riscv64-unknown-elf-nm -S "$2" | awk -v s="$1" '$4 == s { print $2 }')"; }
client=$(symsize fota_client_size "$tmp/probe.o")
work=$(symsize fota_work_min "$tmp/probe.o")
delta_struct=$(symsize fota_delta_size "$tmp/delta_probe.o")

echo "fota C client, $("$CC" --version | head -1), -march=rv32imc -mabi=ilp32 -Os"
riscv64-unknown-elf-size "${objs[@]}" | sed "s|$tmp/||"
read -r text data bss < <(riscv64-unknown-elf-size -t "${objs[@]}" | awk 'END { print $1, $2, $3 }')

# Worst stack: the largest sum of frames along a call chain from a public
# function, over the library's own functions (calls into mbedtls, the C
# library and the port end the chain; there is no recursion).
# worst_stack API CI_FILE...: the worst chain from the API functions.
worst_stack() {
  local api=$1; shift
  cat "$@" | awk -v apis="$api" '
  function name(t) { sub(/.*:/, "", t); return t }
  /^node:/ {
    t = $0; sub(/.*title: "/, "", t); sub(/".*/, "", t)
    l = $0
    if (match(l, /[0-9]+ bytes/)) { frame[name(t)] = substr(l, RSTART, RLENGTH) + 0 }
  }
  /^edge:/ {
    s = $0; sub(/.*sourcename: "/, "", s); sub(/".*/, "", s)
    d = $0; sub(/.*targetname: "/, "", d); sub(/".*/, "", d)
    s = name(s); d = name(d); calls[s] = calls[s] " " d
  }
  function worst(f,   n, i, parts, best, w) {
    if (f in memo) return memo[f]
    if (onpath[f]) { print "recursion through " f > "/dev/stderr"; exit 3 }
    onpath[f] = 1; best = 0
    n = split(calls[f], parts, " ")
    for (i = 1; i <= n; i++) if (parts[i] in frame) { w = worst(parts[i]); if (w > best) { best = w; via[f] = parts[i] } }
    onpath[f] = 0
    return memo[f] = frame[f] + best
  }
  END {
    split(apis, api, " ")
    max = 0
    for (i in api) { w = worst(api[i]); if (w > max) { max = w; top = api[i] } }
    chain = top; f = top; while (f in via) { f = via[f]; chain = chain " > " f }
    print max, chain
  }'
}
stack=$(worst_stack "fota_init fota_startup fota_check fota_confirm fota_reject fota_flush" "$tmp"/*.ci)
read -r worst chain <<<"$stack"
ram=$((work + client + worst))
dclient=$(symsize fota_client_size "$tmp/dprobe.o")
read -r dstack dstack_chain <<<"$(worst_stack "fota_init fota_startup fota_check fota_confirm fota_reject fota_flush" "$tmp"/dbuild/*.ci)"
read -r dcode ddata_all < <(riscv64-unknown-elf-size -t "${dobjs[@]}" | awk 'END { print $1, $2 + $3 }')
dwork=$(symsize fota_work_min "$tmp/dprobe.o")
dram=$((dwork + dclient + dstack))
read -r pstack pstack_chain <<<"$(worst_stack fota_delta_write "$tmp"/dbuild/*.ci)"

printf '\n%-44s %6d bytes (target <= 16384)\n' "code (text: instructions and constants)" "$text"
printf '%-44s %6d bytes (target <= 1024)\n' "static data (data + bss)" "$((data + bss))"
read -r ptext pdata pbss < <(riscv64-unknown-elf-size "$tmp/optional/fota_push.o" | awk 'END { print $1, $2, $3 }')
printf '%-44s %6d bytes (static data %d)\n' "optional push code (src/fota_push.c)" "$ptext" "$((pdata + pbss))"
read -r dtext ddata dbss < <(riscv64-unknown-elf-size "$tmp/delta/fota_delta.o" | awk 'END { print $1, $2, $3 }')
read -r dworst dchain <<<"$(worst_stack "fota_delta_begin fota_delta_write fota_delta_finish fota_delta_check" "$tmp"/delta/*.ci)"
printf '%-44s %6d bytes (static data %d)\n' "optional delta code (src/fota_delta.c)" "$dtext" "$((ddata + dbss))"
printf '%-44s %6d bytes, worst stack %d: %s\n' "  fota_delta_t" "$delta_struct" "$dworst" "$dchain"
printf '%-44s %6d bytes\n' "work buffer (FOTA_WORK_MIN)" "$work"
printf '%-44s %6d bytes\n' "fota_client_t (mbedtls contexts included)" "$client"
printf '%-44s %6d bytes: %s\n' "worst stack of the library's own frames" "$worst" "$chain"
printf '%-44s %6d bytes (target <= 8192)\n' "work buffer + client + stack" "$ram"
printf '\ndelta-enabled build (-DFOTA_DELTA=1, src/fota_delta.c linked):\n'
printf '%-44s %6d bytes (no limit of its own; static data %d)\n' "code: core with delta + fota_delta.c" "$dcode" "$ddata_all"
printf '%-44s %6d bytes\n' "work buffer (FOTA_WORK_MIN)" "$dwork"
printf '%-44s %6d bytes\n' "fota_client_t" "$dclient"
printf '%-44s %6d bytes\n' "fota_delta_t (in the download record, on the stack)" "$delta_struct"
printf '%-44s %6d bytes: %s\n' "worst stack of the library's own frames" "$dstack" "$dstack_chain"
printf '%-44s %6d bytes: %s\n' "  the patcher's part, from fota_delta_write" "$pstack" "$pstack_chain"
printf '%-44s %6d bytes (target <= 8192)\n' "work buffer + client + stack" "$dram"

if [ "$check" = --check ]; then
  ok=1
  [ "$text" -le 16384 ] || { echo "size.sh: code $text > 16384" >&2; ok=0; }
  [ $((data + bss)) -le 1024 ] || { echo "size.sh: static data $((data + bss)) > 1024" >&2; ok=0; }
  [ "$ram" -le 8192 ] || { echo "size.sh: RAM $ram > 8192" >&2; ok=0; }
  [ "$dram" -le 8192 ] || { echo "size.sh: delta build RAM $dram > 8192" >&2; ok=0; }
  [ $ok = 1 ] || exit 1
fi
