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
# The summary above the counters: where the time went adds up to the run,
# and this CPL-0 loop (a few milliseconds, as long as translating the
# guest) is a good part of it.
read -r total kernel < <(awk '/where the time went/ {on = 1; next}
  on && !/%/ {on = 0}
  on {p = $(NF-2); sub("%", "", p); t += p; if (/translated kernel code/) k = p}
  END {print t, k}' <<<"$out")
echo "hot_blocks: time split adds up to ${total:-?}%, translated kernel code ${kernel:-?}%"
if [ -z "$total" ] || awk -v t="$total" -v k="$kernel" 'BEGIN { exit !(t < 99.5 || t > 100.5 || k < 20) }'; then
  echo "hot_blocks: expected a time split that adds up to 100%, a good part translated kernel code"
  exit 1
fi
# The hottest block's code, as --trace blocks shows it: its 15 guest
# instructions, each followed by host code.
guest_lines=$(awk '/^  hottest block 0x/ {n++} n == 1 && /^  guest  / {g++} n == 1 && /^end block/ {print g; exit}' <<<"$out")
host_lines=$(awk '/^  hottest block 0x/ {n++} n == 1 && /^    host  / {h++} n == 1 && /^end block/ {print h; exit}' <<<"$out")
echo "hot_blocks: the hottest block's code: ${guest_lines:-0} guest, ${host_lines:-0} host instructions"
if [ "${guest_lines:-0}" != 15 ] || [ "${host_lines:-0}" -lt 15 ]; then
  echo "hot_blocks: expected the hottest block's 15 guest instructions with their host code"
  exit 1
fi
