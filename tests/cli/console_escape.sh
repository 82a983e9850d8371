#!/bin/sh
# Ctrl-A x on the console input ends the run at once, with status 0 and
# one line on stderr, as `qemu -nographic` does; Ctrl-A h prints the
# escapes and the run goes on. The guest (a benchmark loop) waits on COM1
# for its iteration count, so without the escape it would not end soon.
set -u
btvm=$1
guest=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

printf '\001h\001x' | timeout 30 "$btvm" run --kernel "$guest" >"$tmp/out" 2>"$tmp/err"
status=$?
if [ "$status" -eq 0 ] && grep -q 'btvm: terminated (C-a x)' "$tmp/err" &&
   grep -q 'C-a x    exit btvm' "$tmp/out"; then
  echo "PASS: C-a h lists the escapes, C-a x ends the run with status 0"
else
  echo "FAIL: status $status; stdout:"; cat "$tmp/out"; echo "stderr:"; cat "$tmp/err"
  fail=1
fi

# Input without escapes reaches the guest unchanged.
printf '\n3\n' | timeout 30 "$btvm" run --kernel "$guest" >"$tmp/out" 2>"$tmp/err"
if grep -q '^result: ' "$tmp/out"; then
  echo "PASS: input without escapes reaches the guest"
else
  echo "FAIL: no result; stdout:"; cat "$tmp/out"; fail=1
fi
exit $fail
