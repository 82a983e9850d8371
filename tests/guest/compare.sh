#!/bin/sh
# Runs one guest kernel on btvm and on QEMU TCG and compares the two serial
# outputs and exit statuses.
#
#   compare.sh [--qemu QEMU] [--qemu-cpu MODEL] [--out-dir DIR] [--timeout S]
#              [--engine ENGINE] [--btvm-arg ARG]... BTVM KERNEL.elf EXPECTED_STATUS
#
# btvm prints the guest's serial output on its stdout (`btvm run --kernel
# KERNEL`); QEMU runs through run_qemu.sh. Both must exit with
# EXPECTED_STATUS and print the same bytes, except on lines that start with
# "measured: ": those carry timings (cycles per syscall...), which differ
# between runs and engines, so only their place is compared, not their text.
# The outputs are kept as
# DIR/<name>.compare.btvm.out and DIR/<name>.compare.qemu.out (DIR: a
# temporary directory; the names differ from qemu.<name>'s <name>.qemu.out so
# that both tests may run at once).
set -u

here=$(cd "$(dirname "$0")" && pwd)
qemu="qemu-system-x86_64"
qemu_cpu=
out_dir=
timeout_s=60
engine=bt
btvm_args=
while [ $# -gt 3 ]; do
  case "$1" in
    --qemu) qemu=$2; shift 2 ;;
    --qemu-cpu) qemu_cpu=$2; shift 2 ;;
    --out-dir) out_dir=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    --btvm-arg) btvm_args="$btvm_args $2"; shift 2 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ $# -ne 3 ]; then
  echo "usage: compare.sh [--qemu QEMU] [--qemu-cpu MODEL] [--out-dir DIR] [--timeout S]" \
    "[--engine ENGINE] [--btvm-arg ARG]... BTVM KERNEL EXPECTED_STATUS" >&2
  exit 2
fi
btvm=$1
kernel=$2
expect=$3
[ -n "$out_dir" ] || out_dir=$(mktemp -d)
name=$(basename "$kernel" .elf)
variant=$engine$(printf '%s' "$btvm_args" | sed 's/[ -][ -]*/-/g')
btvm_out=$out_dir/$name.compare.$variant.out
qemu_out=$out_dir/$name.compare.qemu-$variant.out

# shellcheck disable=SC2086 # btvm_args: words, none with spaces
timeout --kill-after=5 "$timeout_s" "$btvm" run --engine "$engine" $btvm_args --kernel "$kernel" \
  </dev/null >"$btvm_out"
btvm_status=$?
set --
[ -n "$qemu_cpu" ] && set -- --cpu "$qemu_cpu"
"$here/run_qemu.sh" --qemu "$qemu" "$@" --expect "$expect" --timeout "$timeout_s" --out "$qemu_out" \
  "$kernel" >/dev/null
qemu_ok=$?

# The outputs with each "measured: " line's text replaced.
mask() {
  sed 's/^measured: .*/measured: (not compared)/' "$1" >"$1.masked"
}
mask "$btvm_out"
mask "$qemu_out"

fail=0
if [ "$qemu_ok" -ne 0 ]; then
  echo "compare.sh: $name: QEMU run failed (see $qemu_out); the expectation is wrong" >&2
  fail=1
fi
if [ "$btvm_status" -ne "$expect" ]; then
  echo "compare.sh: $name: btvm ($engine) exit status $btvm_status, expected $expect" >&2
  fail=1
fi
if ! diff -u --label "qemu: $name" --label "btvm: $name" "$qemu_out.masked" "$btvm_out.masked"; then
  echo "compare.sh: $name: serial output differs between QEMU and btvm" >&2
  fail=1
fi
[ "$fail" -eq 0 ] && echo "compare.sh: $name: btvm ($engine) and QEMU agree (status $expect)"
exit "$fail"
