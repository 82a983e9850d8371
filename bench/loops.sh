#!/bin/bash
# Times the workload loops of bench/loops/ natively, on btvm (engine bt) and
# under QEMU TCG, and prints a table of wall time, CPU time and in-loop TSC
# cycles per configuration, each as a ratio to native.
#
#   loops.sh [--build DIR] [--btvm BTVM] [--qemu QEMU] [--no-qemu]
#            [--configs "native btvm qemu"] [--reps N] [--scale F]
#            [--loops "reg mem call"] [--timeout S]
#   loops.sh --check [--build DIR] [--btvm BTVM]
#
# Each loop is one C source linked into a native program
# (DIR/bench/bench_loop_<loop>) and a guest kernel
# (DIR/guests/bench_loop_<loop>.elf) from the same object file; the guest
# reads its iteration count from COM1 (a line on btvm's or QEMU's stdin).
# Every run prints "result: 0x..." and the script checks that all
# configurations print the native result.
#
# The runs are interleaved (for each repetition: each loop on each
# configuration in turn), so drift of the machine's speed hits all
# configurations alike. Figures:
#   wall    the whole process (btvm's and QEMU's start-up and boot included,
#           about 0.1 s), min and median;
#   cpu     user + system time of the process (all of QEMU's threads), median:
#           steadier than wall time on a loaded machine;
#   cycles  rdtsc around the loop inside the program or guest, median. btvm
#           emulates rdtsc with the host's TSC and QEMU TCG derives it from
#           host time, so these compare directly; they count wall time, not
#           CPU time.
#
# The default counts take about 0.5 s of native CPU each on a 2.1 GHz EPYC;
# --scale F multiplies them (btvm without block chaining needs minutes at
# scale 1). --check runs each loop once with a short count natively and on
# btvm and compares results (the ctest bench.loops_check).
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
btvm=
qemu=qemu-system-x86_64
configs="native btvm qemu"
reps=3
scale=1
loops="reg mem call"
timeout_s=1800
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --btvm) btvm=$2; shift 2 ;;
    --qemu) qemu=$2; shift 2 ;;
    --no-qemu) configs="native btvm"; shift ;;
    --configs) configs=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --loops) loops=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --check) check=1; shift ;;
    *) echo "usage: loops.sh [--build DIR] [--btvm BTVM] [--qemu QEMU] [--no-qemu] [--configs LIST]" \
         "[--reps N] [--scale F] [--loops LIST] [--timeout S] | --check [--build DIR] [--btvm BTVM]" >&2
       exit 2 ;;
  esac
done
[ -n "$btvm" ] || btvm=$build/runtime/btvm

# Iterations: the benchmark's (about 0.5 s native) and the check's (short).
iters_bench() {
  case "$1" in reg) echo 300000000 ;; mem) echo 2400 ;; call) echo 12000 ;; esac
}
iters_check() {
  case "$1" in reg) echo 200000 ;; mem) echo 2 ;; call) echo 4 ;; esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run CONFIG LOOP N: runs one configuration, output in $tmp/out, exit status
# in $status, "wall user sys" seconds in $tmp/time.
run() {
  local config=$1 loop=$2 n=$3
  local kernel=$build/guests/bench_loop_$loop.elf
  TIMEFORMAT='%3R %3U %3S'
  {
    time {
      case "$config" in
        native)
          timeout "$timeout_s" "$build/bench/bench_loop_$loop" "$n" ;;
        btvm)
          printf '\n%s\n' "$n" | timeout "$timeout_s" "$btvm" run --kernel "$kernel" ;;
        qemu)
          printf '\n%s\n' "$n" | timeout "$timeout_s" "$qemu" -accel tcg -M pc -m 128 \
            -nodefaults -display none -monitor none -serial stdio -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel "$kernel" ;;
      esac >"$tmp/out" 2>&1
      echo $? >"$tmp/status"
    }
  } 2>"$tmp/time"
  status=$(cat "$tmp/status")
}

failures=0
# verify CONFIG LOOP N: checks the last run; prints why not and counts.
verify() {
  local config=$1 loop=$2 n=$3 want_status=1 result
  [ "$config" = native ] && want_status=0
  result=$(sed -n 's/^result: //p' "$tmp/out")
  if [ "$status" -ne "$want_status" ]; then
    echo "FAIL: $loop on $config: exit status $status, expected $want_status" >&2
  elif ! grep -qx "loop $loop: $n iterations" "$tmp/out"; then
    echo "FAIL: $loop on $config: did not run $n iterations" >&2
  elif [ -z "$result" ]; then
    echo "FAIL: $loop on $config: no result line" >&2
  elif [ "$config" = native ]; then
    echo "$result" >"$tmp/expect.$loop"
    return 0
  elif [ "$result" != "$(cat "$tmp/expect.$loop")" ]; then
    echo "FAIL: $loop on $config: result $result, native $(cat "$tmp/expect.$loop")" >&2
  else
    return 0
  fi
  sed 's/^/  | /' "$tmp/out" >&2
  failures=$((failures + 1))
  return 1
}

if [ "$check" -eq 1 ]; then
  for loop in $loops; do
    n=$(iters_check "$loop")
    for config in native btvm; do
      run "$config" "$loop" "$n"
      verify "$config" "$loop" "$n" || continue
      [ "$config" = btvm ] && echo "PASS: $loop: btvm and native agree ($(cat "$tmp/expect.$loop"))"
    done
  done
  [ "$failures" -eq 0 ] && echo "loops.sh: all loops agree"
  [ "$failures" -eq 0 ]
  exit
fi

# Native first: it is the reference every other result is checked against.
configs="native $(echo "$configs" | tr ' ' '\n' | grep -vx native | tr '\n' ' ')"
: >"$tmp/samples"
for rep in $(seq "$reps"); do
  for loop in $loops; do
    n=$(awk -v b="$(iters_bench "$loop")" -v s="$scale" \
      'BEGIN { n = int(b * s + 0.5); print (n < 1 ? 1 : n) }')
    echo "$n" >"$tmp/n.$loop"
    for config in $configs; do
      run "$config" "$loop" "$n"
      echo "loops.sh: rep $rep, $loop on $config: $(cat "$tmp/time") s wall/user/sys" >&2
      verify "$config" "$loop" "$n" || continue
      cycles=$(sed -n 's/^measured: \([0-9]*\) cycles$/\1/p' "$tmp/out")
      read -r wall user sys <"$tmp/time"
      echo "$loop $config $wall $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }') $cycles" \
        >>"$tmp/samples"
    done
  done
done

# stat LOOP CONFIG FIELD min|median: one figure over the samples.
stat() {
  awk -v l="$1" -v c="$2" -v f="$3" '$1 == l && $2 == c { print $f }' "$tmp/samples" |
    sort -g | awk -v how="$4" '{ v[NR] = $1 }
      END { if (NR == 0) { print "nan"; exit }
            if (how == "min") print v[1];
            else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

printf '%-5s %-7s %11s %9s %9s %9s %11s | %9s %9s %8s %8s\n' loop config iterations \
  "wall min" "wall med" "cpu med" "Mcyc med" "wall min" "wall med" "cpu" "cycles"
printf '%-5s %-7s %11s %9s %9s %9s %11s | %s\n' "" "" "" "(s)" "(s)" "(s)" "(loop)" \
  "ratio to native (median unless min)"
for loop in $loops; do
  for config in $configs; do
    row=""
    for spec in "3 min" "3 median" "4 median" "5 median"; do
      row="$row $(stat "$loop" "$config" $spec)"
    done
    native_row=""
    for spec in "3 min" "3 median" "4 median" "5 median"; do
      native_row="$native_row $(stat "$loop" native $spec)"
    done
    echo "$loop $config $(cat "$tmp/n.$loop")$row$native_row"
  done
done | awk '{
  r = ""
  for (i = 4; i <= 7; i++) r = r sprintf(" %8.2fx", ($(i + 4) > 0 ? $i / $(i + 4) : 0))
  printf "%-5s %-7s %11s %9.3f %9.3f %9.3f %11.1f |%s\n", $1, $2, $3, $4, $5, $6, $7 / 1e6, r
}'
[ "$failures" -eq 0 ] || echo "loops.sh: $failures run(s) failed (see above)" >&2
[ "$failures" -eq 0 ]
