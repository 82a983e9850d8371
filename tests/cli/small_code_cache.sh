#!/bin/bash
# Guest kernels run with the smallest code cache (64K), so it fills and is
# flushed while they run (also in the middle of chained blocks and of the
# self-modifying-code test): every kernel must still pass, with the exit
# status it has with the default cache, and some flushes must happen.
#   small_code_cache.sh BTVM GUEST_DIR
set -u
btvm=$1
dir=$2
total=0
fail=0
for name in smc strings exceptions paging usermode insns calls; do
  out=$("$btvm" run --code-cache 64K --stats --kernel "$dir/$name.elf" 2>&1)
  status=$?
  if [ "$status" -ne 1 ] || grep -q '^FAIL' <<<"$out" || ! grep -q '^SUMMARY: .* 0 failures' <<<"$out"; then
    echo "small_code_cache: $name failed (status $status)"
    grep -E '^(FAIL|SUMMARY|btvm:)' <<<"$out"
    fail=1
  fi
  n=$(awk '/^  code-cache flushes +[0-9]+$/ {print $NF}' <<<"$out")
  total=$((total + ${n:-0}))
done
echo "small_code_cache: $total flushes"
[ "$total" -gt 0 ] || { echo "small_code_cache: the cache never filled"; fail=1; }
exit $fail
