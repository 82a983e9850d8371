#!/bin/bash
# `--stats` counts the guest returns that missed their call's host return
# (translator/bt_context.h, calls and returns): the calls guest rewrites
# return addresses, switches stacks, longjmps and recurses past the host
# frames btvm keeps, so some returns miss; the recursive Fibonacci of the
# call-heavy loop returns where it was called from, so almost none do.
#   ret_misses.sh BTVM GUEST_DIR
set -u
btvm=$1
dir=$2
fail=0
misses() { awk '/returns that missed their call.s host return/ {print $NF}' <<<"$1"; }

out=$("$btvm" run --stats --kernel "$dir/calls.elf" 2>&1)
n=$(misses "$out")
echo "ret_misses: calls guest: ${n:-none}"
if ! grep -q '^SUMMARY: .* 0 failures' <<<"$out" || [ "${n:-0}" -le 0 ]; then
  echo "ret_misses: the calls guest failed or counted no missed return"
  fail=1
fi

# 20 iterations of fib(20..23): about 430,000 calls.
out=$(printf '\n20\n' | "$btvm" run --stats --kernel "$dir/bench_loop_call.elf" 2>&1)
n=$(misses "$out")
echo "ret_misses: call loop: ${n:-none}"
if ! grep -q '^result: ' <<<"$out" || [ -z "$n" ] || [ "$n" -gt 1000 ]; then
  echo "ret_misses: the call loop failed or its returns missed (expected under 1000)"
  fail=1
fi
exit $fail
