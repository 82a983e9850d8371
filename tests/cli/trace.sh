#!/bin/sh
# `btvm run --trace`: on guest tests that exercise every way of translating
# (calls and returns, the stack window, strings, user mode and syscalls),
# the trace has every block the run translated (--stats' count), whole and
# in the documented format (check_trace.py); with --trace-cpl and
# --trace-range only what they select; the same on the direct engine. With
# exits and faults: a line for every exit to the runtime, every event
# delivered (interrupts and exceptions) and every trap of the direct
# engine's child, as many as --stats counts.
#
#   trace.sh BTVM GUEST_DIR
set -u
btvm=$1 guests=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
run() {  # NAME CHECK_ARGS -- BTVM_ARGS...
  name=$1 check=$2
  shift 3
  "$btvm" run "$@" --trace-file "$tmp/trace" --stats >"$tmp/out" 2>"$tmp/stats"
  if python3 "$here/check_trace.py" "$tmp/trace" "$tmp/stats" $check >"$tmp/check"; then
    echo "PASS: $name: $(cat "$tmp/check")"
  else
    echo "FAIL: $name:"
    cat "$tmp/check"
    failures=$((failures + 1))
  fi
}
for g in calls strings stack usermode; do
  run "$g" "" -- --kernel "$guests/$g.elf" --trace blocks
done
run "usermode, cpl 3" "--cpl 3" -- --kernel "$guests/usermode.elf" --trace blocks --trace-cpl 3
run "usermode, a range" "--range 0x100000-0x100fff" -- --kernel "$guests/usermode.elf" \
  --trace blocks --trace-range 0x100000-0x100fff
run "usermode, direct engine" "" -- --engine direct --kernel "$guests/usermode.elf" --trace blocks
run "interrupts, every kind" "--kinds blocks,exits,faults" -- --kernel "$guests/interrupts.elf" \
  --trace blocks,exits,faults
run "userdirect in the child, exits and faults" "--kinds exits,faults" -- --engine direct \
  --direct-policy child --kernel "$guests/userdirect.elf" --trace exits,faults
run "usermode, faults at cpl 3" "--kinds faults --cpl 3" -- --kernel "$guests/usermode.elf" \
  --trace faults --trace-cpl 3
[ "$failures" -eq 0 ]
