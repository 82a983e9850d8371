#!/bin/bash
# `--stats` counts each translated block's entries: the register loop's
# body is one block (15 instructions) entered once per iteration, so it
# heads the hottest blocks with about as many entries as iterations, and
# the guest instructions run translated are at least 15 per iteration.
#   hot_blocks.sh BTVM GUEST_DIR
set -u
btvm=$1
dir=$2
n=1000000
out=$(printf '\n%s\n' "$n" | "$btvm" run --stats --kernel "$dir/bench_loop_reg.elf" 2>&1)
run=$(awk '/guest instructions run translated/ {print $NF}' <<<"$out")
read -r insns entries < <(awk '/hottest blocks/ {getline; print $2, $4; exit}' <<<"$out")
echo "hot_blocks: ${run:-none} instructions run; hottest block: ${insns:-?} x ${entries:-?}"
if ! grep -q '^result: ' <<<"$out"; then
  echo "hot_blocks: the loop guest failed"
  exit 1
fi
if [ -z "$run" ] || [ -z "$entries" ] || [ "$insns" != 15 ] ||
   [ "$entries" -lt $((n - 2)) ] || [ "$entries" -gt $((n + 2)) ] ||
   [ "$run" -lt $((15 * (n - 2))) ]; then
  echo "hot_blocks: expected the loop block (15 instructions) entered about $n times"
  exit 1
fi
