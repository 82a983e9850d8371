#!/bin/sh
# Boot time of Debian's kernels to the busybox prompt: btvm (kernel
# decompressed on the host, and through its own decompressor) next to QEMU
# TCG, with the same kernel, initramfs and command line, measured in one
# run (interleaved: each repetition boots every configuration in turn) and
# printed as ratios to QEMU TCG.
#
#   bench/boot.sh [--build DIR] [--reps N] [--kernels "cloud generic"] [--no-qemu]
#
# Time is wall time from launch to the first shell prompt
# (tests/linux/session.py), then `reboot -f` ends the run. Needs the guest
# image (cmake --build DIR --target guest-image).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
reps=3
kernels="cloud generic"
qemu=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --kernels) kernels=$2; shift 2 ;;
    --no-qemu) qemu=0; shift ;;
    *) echo "usage: boot.sh [--build DIR] [--reps N] [--kernels LIST] [--no-qemu]" >&2; exit 2 ;;
  esac
done
btvm=$build/runtime/btvm
image=$build/guest-image
session=$here/../tests/linux/session.py
append="console=ttyS0"
[ -f "$image/initramfs.cpio.gz" ] || { echo "boot.sh: no guest image in $image" >&2; exit 1; }
configs="btvm-host btvm-guest"
[ "$qemu" = 1 ] && configs="$configs qemu-tcg"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

boot() {  # boot CONFIG KERNEL: prints seconds to the prompt, or nothing
  kernel=$image/vmlinuz-$2
  case $1 in
    btvm-host) set -- "$btvm" run --kernel "$kernel" --initrd "$image/initramfs.cpio.gz" \
                 --append "$append" --decompress host ;;
    btvm-guest) set -- "$btvm" run --kernel "$kernel" --initrd "$image/initramfs.cpio.gz" \
                 --append "$append" --decompress guest ;;
    qemu-tcg) set -- qemu-system-x86_64 -accel tcg -m 128 -nodefaults -display none \
                 -monitor none -serial stdio -no-reboot -kernel "$kernel" \
                 -initrd "$image/initramfs.cpio.gz" -append "$append" ;;
  esac
  python3 "$session" --timeout 300 --step 'reboot -f' '' -- "$@" |
    sed -n 's/^boot: \([0-9.]*\) s to the prompt$/\1/p'
}

i=1
while [ "$i" -le "$reps" ]; do
  for k in $kernels; do
    for c in $configs; do
      t=$(boot "$c" "$k")
      echo "boot.sh: rep $i, $k on $c: ${t:-failed} s" >&2
      [ -n "$t" ] && echo "$t" >>"$tmp/$k.$c"
    done
  done
  i=$((i + 1))
done

# min, median of a file of numbers
stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s", v[1], m }'; }
printf '%-8s %-11s %9s %9s | %s\n' kernel config "min (s)" "med (s)" "median ratio to qemu-tcg"
for k in $kernels; do
  ref=
  [ -f "$tmp/$k.qemu-tcg" ] && ref=$(stats "$tmp/$k.qemu-tcg" | cut -d' ' -f2)
  for c in $configs; do
    [ -f "$tmp/$k.$c" ] || { printf '%-8s %-11s %9s\n' "$k" "$c" failed; continue; }
    set -- $(stats "$tmp/$k.$c")
    ratio=-
    [ -n "$ref" ] && ratio=$(awk -v a="$2" -v b="$ref" 'BEGIN { printf "%.2fx", a / b }')
    printf '%-8s %-11s %9.2f %9.2f | %s\n' "$k" "$c" "$1" "$2" "$ratio"
  done
done
