#!/bin/sh
# Runs a guest test kernel under QEMU TCG and checks how it ended.
#
#   run_qemu.sh [--qemu QEMU] [--cpu MODEL] [--expect STATUS] [--require REGEX]
#               [--out FILE] [--timeout SECONDS] KERNEL.elf
#
# The guest's serial output (COM1) goes to stdout and, with --out, to FILE.
# Passes (exit 0) when QEMU exits with STATUS (isa-debug-exit writes of v
# give (v << 1) | 1; the i8042 reset with -no-reboot gives 0), the output is
# not empty, some line matches REGEX (grep -E; if given) and no line starts
# with "FAIL:". --cpu gives QEMU's -cpu (default: the machine's, qemu64).
# (QEMU itself exits with 1 when it cannot start: the output
# checks keep that from passing as a guest's status 1.) Nothing but the guest writes to COM1 under QEMU 7.2
# (SeaBIOS logs to port 0x402, which is not connected here).
set -u

qemu="qemu-system-x86_64"
cpu=
expect=1
require=
out=
timeout_s=60
while [ $# -gt 1 ]; do
  case "$1" in
    --qemu) qemu=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --expect) expect=$2; shift 2 ;;
    --require) require=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    *) echo "run_qemu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ $# -ne 1 ]; then
  echo "usage: run_qemu.sh [--qemu QEMU] [--cpu MODEL] [--expect STATUS] [--require REGEX]" \
    "[--out FILE] [--timeout S] KERNEL" >&2
  exit 2
fi
kernel=$1
[ -n "$out" ] || out=$(mktemp)
set --
[ -n "$cpu" ] && set -- -cpu "$cpu"

timeout --kill-after=5 "$timeout_s" "$qemu" \
  -accel tcg -M pc -m 128 -nodefaults -display none -monitor none -serial stdio \
  -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 "$@" \
  -kernel "$kernel" </dev/null >"$out"
status=$?
cat "$out"

if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "run_qemu.sh: $kernel: timed out after ${timeout_s}s" >&2
  exit 1
fi
if [ "$status" -ne "$expect" ]; then
  echo "run_qemu.sh: $kernel: exit status $status, expected $expect" >&2
  exit 1
fi
if [ ! -s "$out" ]; then
  echo "run_qemu.sh: $kernel: no serial output" >&2
  exit 1
fi
if [ -n "$require" ] && ! grep -Eq "$require" "$out"; then
  echo "run_qemu.sh: $kernel: no line matches '$require'" >&2
  exit 1
fi
if grep -q '^FAIL:' "$out"; then
  echo "run_qemu.sh: $kernel: a FAIL line in the output" >&2
  exit 1
fi
exit 0
