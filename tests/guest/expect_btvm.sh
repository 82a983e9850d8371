#!/bin/sh
# Runs a guest kernel on btvm and checks how the run ended, for kernels whose
# end differs from QEMU's (a triple fault: QEMU -no-reboot exits with 0, btvm
# reports an error).
#
#   expect_btvm.sh [--status S] [--output REGEX] [--stderr REGEX] [--timeout S]
#                  BTVM KERNEL.elf
#
# Passes when btvm exits with status S, some line of the guest's serial
# output (btvm's stdout) matches the --output regex (grep -E), and some line
# of btvm's stderr matches the --stderr regex, in which @1@ stands for the
# text the first group of the --output regex matched (sed -E), and no output
# line starts with "FAIL:".
set -u

status=0
output=
stderr_re=
timeout_s=60
while [ $# -gt 2 ]; do
  case "$1" in
    --status) status=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --stderr) stderr_re=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    *) echo "expect_btvm.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ $# -ne 2 ]; then
  echo "usage: expect_btvm.sh [--status S] [--output REGEX] [--stderr REGEX] [--timeout S]" \
    "BTVM KERNEL" >&2
  exit 2
fi
btvm=$1
kernel=$2
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

timeout --kill-after=5 "$timeout_s" "$btvm" run --kernel "$kernel" </dev/null >"$out" 2>"$err"
got=$?
cat "$out"
cat "$err" >&2

fail=0
if [ "$got" -ne "$status" ]; then
  echo "expect_btvm.sh: $kernel: exit status $got, expected $status" >&2
  fail=1
fi
captured=
if [ -n "$output" ]; then
  line=$(grep -E -m1 "$output" "$out")
  if [ -z "$line" ]; then
    echo "expect_btvm.sh: $kernel: no output line matches '$output'" >&2
    fail=1
  else
    captured=$(printf '%s\n' "$line" | sed -E "s/.*$output.*/\\1/")
  fi
fi
if [ -n "$stderr_re" ]; then
  re=$(printf '%s\n' "$stderr_re" | sed "s/@1@/$captured/g")
  if ! grep -Eq "$re" "$err"; then
    echo "expect_btvm.sh: $kernel: no stderr line matches '$re'" >&2
    fail=1
  fi
fi
if grep -q '^FAIL:' "$out"; then
  echo "expect_btvm.sh: $kernel: a FAIL line in the output" >&2
  fail=1
fi
exit "$fail"
