#!/usr/bin/env bash
# Delta patch sizes on real compiled firmware (docs/PERFORMANCE.md, "Delta
# updates"): builds two pairs of flat rv32imc images from this repository's
# C client, makes patches with `fota delta create` (heatshrink, crle, none),
# checks that each applies back to the new image, and compares them with
# Debian's bsdiff and xdelta3 (-9) on the same pairs.
#
#   bash scripts/delta-figures.sh [--keep DIR]
#
# --keep DIR leaves the pairs' images (a-old.bin, a-new.bin, b-old.bin, b-new.bin) in DIR (e.g. for BenchmarkCreate
# or a look with cmp). Installs with apt-get what is missing:
# gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, libmbedtls-dev
# (headers only), bsdiff, xdelta3. Needs the repository's git history: the
# pairs are built from fixed commits so that the figures do not move when the
# client changes.
#
# The images: the C client (clients/c/src, -Os -march=rv32imc) and a small
# main, linked by picolibc's linker script with every global function and
# object of picolibc's rv32im libc.a kept, which stands in for the rest of a
# firmware (an RTOS, drivers, a TLS library) and brings the image to about
# 880 KiB. mbedtls is not linked: Debian ships it only for the host, so its
# calls are left unresolved (the linker writes them as calls to address 0);
# the code around them is real. objcopy -O binary makes the flat image.
#
#   one-function  NEW vs NEW with one line of fota_json_uint changed
#   many-changes  the client at OLD (its first size-checked version) vs NEW
#                 (about 40 commits later: most functions rewritten), and
#                 the NEW image keeps every libc function where the OLD one
#                 leaves out one in eight (code added all through the image)
set -euo pipefail
cd "$(dirname "$0")/.."
keep=
if [ "${1:-}" = --keep ]; then keep=${2:?--keep needs a directory}; fi

OLD=957209a  # clients/c: size script (rv32imc -Os ...)
NEW=296da3a  # clients/c: fota_client_notify (push over MQTT) ...
CC=riscv64-unknown-elf-gcc

need=()
command -v "$CC" >/dev/null || need+=(gcc-riscv64-unknown-elf)
[ -d /usr/lib/picolibc/riscv64-unknown-elf ] || need+=(picolibc-riscv64-unknown-elf)
[ -f /usr/include/mbedtls/aes.h ] || need+=(libmbedtls-dev)
command -v bsdiff >/dev/null || need+=(bsdiff)
command -v xdelta3 >/dev/null || need+=(xdelta3)
if [ ${#need[@]} -gt 0 ]; then
  echo "delta-figures: installing ${need[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
for c in $OLD $NEW; do
  git cat-file -e "$c^{commit}" 2>/dev/null || {
    echo "delta-figures: commit $c is not in this clone: fetch the full history (git fetch --unshallow)" >&2
    exit 2
  }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/fota" ./cmd/fota

# Only mbedtls's headers, not the host's C library headers beside them.
mkdir -p "$tmp/inc"
ln -s /usr/include/mbedtls "$tmp/inc/mbedtls"
[ -d /usr/include/psa ] && ln -s /usr/include/psa "$tmp/inc/psa"

arch=(--specs=picolibc.specs -march=rv32imc -mabi=ilp32)
libc=/usr/lib/picolibc/riscv64-unknown-elf/lib/$("$CC" "${arch[@]}" -print-multi-directory)/libc.a
[ -f "$libc" ] || { echo "delta-figures: no picolibc libc.a for rv32imc ($libc)" >&2; exit 2; }
riscv64-unknown-elf-nm -g --defined-only "$libc" 2>/dev/null |
  awk '$2 ~ /^[TDRB]$/ { print $3 }' | sort -u >"$tmp/libc.syms"
awk 'NR % 8 != 0' "$tmp/libc.syms" >"$tmp/libc-old.syms"
printf 'int main(void) { return 0; }\n' >"$tmp/main.c"

# image COMMIT OUT SYMS [EDIT]: the client at COMMIT (EDIT, a sed program,
# applied to src/fota_util.c) linked with the libc symbols listed in SYMS.
image() {
  local commit=$1 out=$2 syms=$3 edit=${4:-} dir
  dir=$(mktemp -d "$tmp/src.XXXX")
  git archive "$commit" clients/c | tar -x -C "$dir"
  dir=$dir/clients/c
  if [ -n "$edit" ]; then
    cp "$dir/src/fota_util.c" "$dir/orig.c"
    sed -i "$edit" "$dir/src/fota_util.c"
    ! cmp -s "$dir/orig.c" "$dir/src/fota_util.c" || { echo "delta-figures: the edit changed nothing" >&2; exit 1; }
  fi
  local flags=("${arch[@]}" -Os -ffunction-sections -fdata-sections -I"$dir/include" -I"$dir/src"
    -isystem "$tmp/inc" "-DMBEDTLS_USER_CONFIG_FILE=\"$dir/scripts/mcu_mbedtls.h\"")
  local objs=("$dir/main.o")
  "$CC" "${flags[@]}" -c "$tmp/main.c" -o "$dir/main.o"
  for src in "$dir"/src/*.c; do
    "$CC" "${flags[@]}" -c "$src" -o "${src%.c}.o"
    objs+=("${src%.c}.o")
  done
  # Keep every function: gc-sections (picolibc's specs) would drop all but
  # main, which calls nothing.
  local keepsyms
  keepsyms=$( { cat "$syms"; riscv64-unknown-elf-nm -g --defined-only "${objs[@]}" | awk 'NF == 3 { print $3 }'; } |
    sed 's/^/-Wl,-u,/')
  # shellcheck disable=SC2086
  "$CC" "${flags[@]}" -o "$out.elf" "${objs[@]}" $keepsyms \
    -Wl,--unresolved-symbols=ignore-all -Wl,--defsym=__flash_size=4M -Wl,--defsym=__ram_size=1M
  riscv64-unknown-elf-objcopy -O binary "$out.elf" "$out"
}

edit='s/if (x < min) return false;/if (v->n == 0 || x < min) return false;/'
image $NEW "$tmp/a-old.bin" "$tmp/libc.syms"
image $NEW "$tmp/a-new.bin" "$tmp/libc.syms" "$edit"
image $OLD "$tmp/b-old.bin" "$tmp/libc-old.syms"
image $NEW "$tmp/b-new.bin" "$tmp/libc.syms"

size() { stat -c %s "$1"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f%%", 100 * a / b }'; }

echo "Delta patches, $("$CC" --version | head -1 | sed 's/.*(\(.*\)).*/\1/;s/^/gcc /'), rv32imc -Os, picolibc $(dpkg-query -W -f '${Version}' picolibc-riscv64-unknown-elf 2>/dev/null || echo '?')"
printf '%-13s %8s %8s %10s %7s %8s %8s %8s %8s\n' pair from to heatshrink "% of to" crle none bsdiff xdelta3
for p in a:one-function b:many-changes; do
  k=${p%%:*} name=${p#*:}
  from=$tmp/$k-old.bin to=$tmp/$k-new.bin
  declare -A sz=()
  for c in heatshrink crle none; do
    "$tmp/fota" delta create --from "$from" --to "$to" -o "$tmp/$k.$c" --compression "$c" >/dev/null
    "$tmp/fota" delta apply --from "$from" --patch "$tmp/$k.$c" -o "$tmp/$k.$c.out" >/dev/null
    cmp -s "$tmp/$k.$c.out" "$to" || { echo "delta-figures: $name $c patch does not apply back to the new image" >&2; exit 1; }
    sz[$c]=$(size "$tmp/$k.$c")
  done
  bsdiff "$from" "$to" "$tmp/$k.bsdiff"
  xdelta3 -9 -e -f -s "$from" "$to" "$tmp/$k.xdelta3"
  printf '%-13s %8d %8d %10d %7s %8d %8d %8d %8d\n' "$name" "$(size "$from")" "$(size "$to")" \
    "${sz[heatshrink]}" "$(pct "${sz[heatshrink]}" "$(size "$to")")" "${sz[crle]}" "${sz[none]}" \
    "$(size "$tmp/$k.bsdiff")" "$(size "$tmp/$k.xdelta3")"
  printf '%-13s heatshrink / bsdiff = %s\n' "" "$(awk -v a="${sz[heatshrink]}" -v b="$(size "$tmp/$k.bsdiff")" 'BEGIN { printf "%.2f", a / b }')"
done
if [ -n "$keep" ]; then
  mkdir -p "$keep"
  cp "$tmp"/{a,b}-{old,new}.bin "$keep/"
  echo "images in $keep" >&2
fi
