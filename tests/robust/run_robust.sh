#!/bin/sh
# Runs one robustness kernel on btvm and checks that btvm ended cleanly.
#
#   run_robust.sh [--status N | --any-status] [--error REGEX] [--require REGEX]
#                 [--timeout S] [--btvm-arg ARG]... BTVM KERNEL.elf
#
# Clean means: btvm finished within the timeout (no hang), was not killed by
# a signal (no crash, no failed internal check: those abort), and either
# exited with the guest's status and nothing on stderr, or with 125 and
# exactly one stderr line "btvm: error: ...". --status N requires status N
# (125 included); --any-status accepts any clean ending. --error requires
# the error line to match REGEX (grep -E), --require some line of the
# guest's serial output to match REGEX. The output is kept next to the
# kernel as <name>.robust.out / <name>.robust.err.
set -u
status_want=
any=0
error_re=
require=
timeout_s=120
btvm_args=
while [ $# -gt 2 ]; do
  case "$1" in
    --status) status_want=$2; shift 2 ;;
    --any-status) any=1; shift ;;
    --error) error_re=$2; shift 2 ;;
    --require) require=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --btvm-arg) btvm_args="$btvm_args $2"; shift 2 ;;
    *) echo "run_robust.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ $# -ne 2 ]; then
  echo "usage: run_robust.sh [--status N | --any-status] [--error RE] [--require RE]" \
    "[--timeout S] [--btvm-arg ARG]... BTVM KERNEL" >&2
  exit 2
fi
btvm=$1
kernel=$2
variant=$(printf '%s' "$btvm_args" | sed 's/[ -][ -]*/-/g')
out=${kernel%.elf}$variant.robust.out
err=${kernel%.elf}$variant.robust.err

# shellcheck disable=SC2086 # btvm_args: words, none with spaces
timeout --kill-after=5 "$timeout_s" "$btvm" run $btvm_args --kernel "$kernel" </dev/null >"$out" 2>"$err"
status=$?
tail -n 30 "$out"
cat "$err" >&2

fail() {
  echo "run_robust.sh: $(basename "$kernel"): $*" >&2
  exit 1
}
[ "$status" -eq 124 ] || [ "$status" -eq 137 ] && fail "hung: no end after ${timeout_s}s"
[ "$status" -gt 128 ] && fail "btvm died from signal $((status - 128))"
lines=$(wc -l <"$err")
if [ "$status" -eq 125 ]; then
  [ "$lines" -eq 1 ] && grep -q '^btvm: error: ' "$err" ||
    fail "status 125 needs exactly one 'btvm: error:' line on stderr ($lines lines)"
  if [ -n "$error_re" ] && ! grep -Eq "$error_re" "$err"; then
    fail "the error line does not match '$error_re'"
  fi
else
  [ "$lines" -eq 0 ] || fail "status $status with $lines stderr lines"
  [ -z "$error_re" ] || fail "status $status, expected an error matching '$error_re'"
fi
if [ "$any" -eq 0 ] && [ -n "$status_want" ] && [ "$status" -ne "$status_want" ]; then
  fail "exit status $status, expected $status_want"
fi
if [ -n "$require" ] && ! grep -Eq "$require" "$out"; then
  fail "no output line matches '$require'"
fi
echo "run_robust.sh: $(basename "$kernel"): clean end, status $status"
