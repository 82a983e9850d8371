#!/bin/bash
# The guest workloads of the Linux guest image (/bin/btvm-bench, from
# guest/linux/btvm-bench.c) timed natively, on btvm's engines and under QEMU
# TCG, printed as a table of per-operation times and ratios; then the round
# trip of each direct-engine transport from the micro-benchmarks.
#
#   bench/workloads.sh [--build DIR] [--reps N] [--scale F]
#                      [--configs "native bt direct direct-child direct-ptrace qemu"]
#                      [--workloads "spin compute syscall pagefault forkwait forkexec pingpong"]
#                      [--kernel cloud|generic] [--memory MiB] [--qemu QEMU]
#                      [--timeout S] [--no-transport]
#
# Configurations:
#   native         DIR/tests/linux/btvm_bench_native (the same source) on the host
#   bt             btvm run --engine bt
#   direct         btvm run --engine direct (the adaptive policy and the
#                  seccomp transport, the defaults)
#   direct-child   the same with --direct-policy child: user code always in
#                  the child process (each trap a round trip through it)
#   direct-ptrace  the same with the ptrace transport
#   qemu           qemu-system-x86_64 -accel tcg
# Every guest boots the same kernel (DIR/guest-image/vmlinuz-KERNEL) and
# initramfs with console=ttyS0 and the same memory size, and
# tests/linux/session.py types each `btvm-bench WORKLOAD N` at the prompt,
# then `reboot -f`: one boot per configuration and repetition runs all the
# workloads. Repetitions are interleaved (each runs every configuration in
# turn), so drift of the machine's speed hits all of them alike.
#
# The time of a workload is what btvm-bench measures around its loop with
# CLOCK_MONOTONIC inside the guest (start-up and boot excluded), divided by
# N. Each run's result is checked against native's (syscall, a sum of
# getppid(), against the first guest's: the parent's pid differs on the
# host); a mismatch is reported and makes the exit status 1. The default
# counts make `--reps 1` take 1-2 minutes on a 2-core machine (the direct
# engine's ptrace transport is the slowest configuration); --scale F
# multiplies them. Needs the guest image (cmake --build DIR --target
# guest-image) and, for the transport rows, DIR/bench/btvm_bench.
set -u

here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
reps=3
scale=1
configs="native bt direct direct-child direct-ptrace qemu"
workloads="spin compute syscall pagefault forkwait forkexec pingpong"
kernel=cloud
memory=256
qemu=qemu-system-x86_64
timeout_s=900
transport=1
usage() {
  echo "usage: workloads.sh [--build DIR] [--reps N] [--scale F] [--configs LIST]" \
    "[--workloads LIST] [--kernel cloud|generic] [--memory MiB] [--qemu QEMU]" \
    "[--timeout S] [--no-transport]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in --no-transport) ;; *) [ $# -ge 2 ] || usage ;; esac
  case "$1" in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --kernel) kernel=$2; shift 2 ;;
    --memory) memory=$2; shift 2 ;;
    --qemu) qemu=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --no-transport) transport=0; shift ;;
    *) usage ;;
  esac
done
btvm=$build/runtime/btvm
native=$build/tests/linux/btvm_bench_native
micro=$build/bench/btvm_bench
image=$build/guest-image
session=$here/../tests/linux/session.py

# Iterations at scale 1. Per operation, roughly (native / bt / direct /
# direct-ptrace / QEMU TCG, on a 2-core EPYC VM): spin 2.3 / 2.3 / 2.5 / 2.5
# / 3.2 ns; compute 17 / 24 / 20 / 20 / 35 us; syscall 0.3 / 5 / 30 / 32 /
# 1.3 us; pagefault 5 / 37 / 100 / 170 / 23 us; forkwait 0.3 / 2.4 / 4.3 /
# 17 / 1.9 ms; forkexec 0.8 / 10 / 20 / 60 / 13 ms; pingpong 9 / 160 / 660
# / 1700 / 200 us. pagefault N touches N pages (4 KiB each) of the guest's
# --memory (256 MiB by default): raise it with --scale above 2.
iters() {
  case "$1" in
    spin) echo 200000000 ;;
    compute) echo 20000 ;;
    syscall) echo 200000 ;;
    pagefault) echo 16000 ;;
    forkwait) echo 300 ;;
    forkexec) echo 100 ;;
    pingpong) echo 4000 ;;
    *) echo "workloads.sh: unknown workload $1" >&2; exit 2 ;;
  esac
}
for w in $workloads; do
  n=$(iters "$w") || exit 2
  eval "n_$w=$(awk -v b="$n" -v s="$scale" 'BEGIN { n = int(b * s + 0.5); print (n < 1 ? 1 : n) }')"
done
niters() { eval "echo \$n_$1"; }

for c in $configs; do
  case $c in
    native) [ -x "$native" ] || { echo "workloads.sh: no $native (build btvm_bench_native)" >&2; exit 1; } ;;
    bt|direct|direct-child|direct-ptrace)
      [ -x "$btvm" ] || { echo "workloads.sh: no $btvm" >&2; exit 1; } ;;
    qemu) command -v "$qemu" >/dev/null || { echo "workloads.sh: no $qemu" >&2; exit 1; } ;;
    *) echo "workloads.sh: unknown configuration $c" >&2; exit 2 ;;
  esac
  case $c in
    native) ;;
    *) [ -f "$image/vmlinuz-$kernel" ] && [ -f "$image/initramfs.cpio.gz" ] || {
         echo "workloads.sh: no guest image in $image (cmake --build DIR --target guest-image)" >&2
         exit 1
       } ;;
  esac
done
if [ "$transport" = 1 ] && [ ! -x "$micro" ]; then
  echo "workloads.sh: no $micro; leaving out the transport round trips" >&2
  transport=0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/samples"  # WORKLOAD CONFIG NS N RESULT, one line a run
: >"$tmp/boots"    # CONFIG SECONDS
: >"$tmp/micro"    # TRANSPORT REAL_US CPU_US
failures=0

# record CONFIG FILE: the btvm-bench lines of FILE into the samples.
record() {
  local config=$1 file=$2 w n line
  for w in $workloads; do
    n=$(niters "$w")
    line=$(tr -d '\r' <"$file" |
      sed -n "s/^btvm-bench $w $n: result \(0x[0-9a-f]*\), \([0-9]*\) ns, .*/\2 \1/p" | head -n 1)
    if [ -z "$line" ]; then
      echo "FAIL: $w $n on $config: no btvm-bench line" >&2
      failures=$((failures + 1))
      continue
    fi
    set -- $line
    echo "$w $config $1 $n $2" >>"$tmp/samples"
  done
}

# run_native: every workload on the host, one process each.
run_native() {
  local w
  : >"$tmp/out"
  for w in $workloads; do
    timeout "$timeout_s" "$native" "$w" "$(niters "$w")" >>"$tmp/out" 2>&1
  done
  record native "$tmp/out"
}

# run_guest CONFIG: one boot, every workload at the prompt, then reboot -f.
run_guest() {
  local config=$1 w n
  local kfile=$image/vmlinuz-$kernel initrd=$image/initramfs.cpio.gz
  local steps=()
  for w in $workloads; do
    n=$(niters "$w")
    steps+=(--step "btvm-bench $w $n" "^btvm-bench $w $n: result 0x[0-9a-f]+, [0-9]+ ns")
  done
  steps+=(--step 'reboot -f' '')
  local cmd
  case $config in
    bt) cmd=("$btvm" run --engine bt) ;;
    direct) cmd=("$btvm" run --engine direct) ;;
    direct-child) cmd=("$btvm" run --engine direct --direct-policy child) ;;
    direct-ptrace)
      cmd=("$btvm" run --engine direct --direct-policy child --direct-transport ptrace) ;;
    qemu) cmd=("$qemu" -accel tcg -nodefaults -display none -monitor none -serial stdio
                 -no-reboot) ;;
  esac
  case $config in
    qemu) cmd+=(-m "$memory" -kernel "$kfile" -initrd "$initrd" -append console=ttyS0) ;;
    *) cmd+=(--memory "${memory}M" --kernel "$kfile" --initrd "$initrd" --append console=ttyS0) ;;
  esac
  : >"$tmp/log"
  python3 "$session" --timeout "$timeout_s" --log "$tmp/log" "${steps[@]}" -- "${cmd[@]}" \
    >"$tmp/session" 2>&1
  local status=$?
  sed -n "s/^boot: \([0-9.]*\) s to the prompt$/$config \1/p" "$tmp/session" >>"$tmp/boots"
  if [ "$status" -ne 0 ]; then
    echo "FAIL: the session on $config:" >&2
    grep '^FAIL' "$tmp/session" | sed 's/^/  | /' >&2
    failures=$((failures + 1))
  fi
  record "$config" "$tmp/log"
}

# run_micro: BM_DirectSyscall's rows (ptrace, seccomp), wall and CPU time.
run_micro() {
  "$micro" --benchmark_filter='BM_DirectSyscall' --benchmark_format=csv 2>/dev/null |
    awk -F, '$1 ~ /BM_DirectSyscall/ {
      gsub(/"/, "", $8); f = ($5 == "ns" ? 0.001 : $5 == "ms" ? 1000 : 1)
      print $8, $3 * f, $4 * f }' >>"$tmp/micro"
}

for rep in $(seq "$reps"); do
  for config in $configs; do
    start=$(date +%s.%N)
    case $config in
      native) run_native ;;
      *) run_guest "$config" ;;
    esac
    echo "workloads.sh: rep $rep, $config: $(awk -v s="$start" -v e="$(date +%s.%N)" \
      'BEGIN { printf "%.1f", e - s }') s" >&2
  done
  if [ "$transport" = 1 ]; then
    run_micro
    echo "workloads.sh: rep $rep, BM_DirectSyscall done" >&2
  fi
done

# The expected result of each workload: native's, or for syscall (and
# without native) the first guest configuration's.
ref_config() {
  local c
  for c in $configs; do
    [ "$c" = native ] && [ "$1" = syscall ] && continue
    if awk -v w="$1" -v c="$c" '$1 == w && $2 == c { found = 1 } END { exit !found }' \
         "$tmp/samples"; then
      echo "$c"
      return
    fi
  done
}
mismatches=0
: >"$tmp/check"  # WORKLOAD CONFIG ok|MISMATCH
for w in $workloads; do
  rc=$(ref_config "$w")
  [ -n "$rc" ] || continue
  want=$(awk -v w="$w" -v c="$rc" '$1 == w && $2 == c { print $5; exit }' "$tmp/samples")
  for c in $configs; do
    bad=$(awk -v w="$w" -v c="$c" -v r="$want" '$1 == w && $2 == c && $5 != r { print $5 }' \
      "$tmp/samples" | sort -u | tr '\n' ' ')
    if [ "$w" = syscall ] && [ "$c" = native ]; then
      echo "$w $c -" >>"$tmp/check"
    elif [ -n "$bad" ]; then
      echo "MISMATCH: $w on $c: result $bad(expected $want, as on $rc)" >&2
      echo "$w $c MISMATCH" >>"$tmp/check"
      mismatches=$((mismatches + 1))
    else
      echo "$w $c ok" >>"$tmp/check"
    fi
  done
done

# The table: per-operation time (median and minimum over the repetitions),
# ratios of medians.
echo
printf '%-9s %-13s %10s %10s %10s | %8s %9s %8s | %s\n' workload config N \
  "med/op" "min/op" "x native" "x bt" "x qemu" result
printf '%-9s %-13s %10s %10s %10s | %s\n' "" "" "" "" "" \
  "ratios of medians (x bt: direct configurations only)"
awk -v workloads="$workloads" -v configs="$configs" '
  function fmt(ns) {
    if (ns == "") return "-"
    if (ns < 1000) return sprintf("%.2f ns", ns)
    if (ns < 1e6) return sprintf("%.2f us", ns / 1e3)
    if (ns < 1e9) return sprintf("%.2f ms", ns / 1e6)
    return sprintf("%.2f s", ns / 1e9)
  }
  function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2fx", a / b) }
  FILENAME == ARGV[1] { k = $1 " " $2; cnt[k]++; v[k, cnt[k]] = $3 / $4; n[$1] = $4; next }
  { chk[$1 " " $2] = $3 }
  END {
    nw = split(workloads, W, " "); nc = split(configs, C, " ")
    for (i = 1; i <= nw; i++) for (j = 1; j <= nc; j++) {
      k = W[i] " " C[j]; m = cnt[k]
      if (!m) continue
      for (a = 1; a <= m; a++) s[a] = v[k, a]
      for (a = 2; a <= m; a++) for (b = a; b > 1 && s[b - 1] > s[b]; b--) {
        t = s[b]; s[b] = s[b - 1]; s[b - 1] = t }
      med[k] = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
      lo[k] = s[1]
    }
    for (i = 1; i <= nw; i++) for (j = 1; j <= nc; j++) {
      w = W[i]; c = C[j]; k = w " " c
      x = med[k]
      rb = (c ~ /^direct/) ? ratio(x, med[w " bt"]) : "-"
      printf "%-9s %-13s %10s %10s %10s | %8s %9s %8s | %s\n", w, c, (n[w] == "" ? "-" : n[w]),
        fmt(x), fmt(lo[k]), ratio(x, med[w " native"]), rb, ratio(x, med[w " qemu"]),
        (k in chk ? chk[k] : (x == "" ? "failed" : "-"))
    }
  }' "$tmp/samples" "$tmp/check"

if [ -s "$tmp/boots" ]; then
  printf '\nboot to the prompt, median (s):'
  for c in $configs; do
    awk -v c="$c" '$1 == c { print $2 }' "$tmp/boots" | sort -g |
      awk -v c="$c" '{ v[NR] = $1 } END { if (NR) printf "  %s %.2f", c,
        (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
  done
  echo
fi

if [ -s "$tmp/micro" ]; then
  echo
  echo "direct transport round trip (btvm_bench BM_DirectSyscall; a guest syscall in the child"
  echo "to the monitor and back), median over $reps run(s):"
  for t in $(awk '{ print $1 }' "$tmp/micro" | sort -u); do
    for f in 2 3; do
      awk -v t="$t" -v f="$f" '$1 == t { print $f }' "$tmp/micro" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
    done | paste -sd' ' | awk -v t="$t" '{ printf "  %-8s %8.2f us wall %8.2f us cpu\n", t, $1, $2 }'
  done
fi

[ "$failures" -eq 0 ] || echo "workloads.sh: $failures run(s) failed (see above)" >&2
[ "$mismatches" -eq 0 ] || echo "workloads.sh: $mismatches result mismatch(es) (see above)" >&2
[ "$failures" -eq 0 ] && [ "$mismatches" -eq 0 ]
