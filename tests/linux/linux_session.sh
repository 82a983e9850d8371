#!/bin/sh
# Runs one Linux console session (session.py) on btvm:
#   linux_session.sh PYTHON SESSION_PY BTVM BENCH_NATIVE IMAGE_DIR LOG_DIR KIND KERNEL [BTVM ARGS...]
# KIND: session (the scripted session), boot (to the prompt and
# reboot), date (the clock after 60 s), pages (70,000 fresh pages touched),
# policy (the direct engine's adaptive policy, with --stats). KERNEL: cloud, generic, or default
# (`btvm run` with no arguments, which boots the cloud kernel).
# Exit status 77 (skipped) when the guest image has not been built.
set -u
python=$1 session=$2 btvm=$3 bench=$4 image=$5 logs=$6 kind=$7 kernel=$8
shift 8
if [ ! -f "$image/vmlinuz-cloud" ] || [ ! -f "$image/vmlinuz-generic" ] ||
   [ ! -f "$image/initramfs.cpio.gz" ]; then
  echo "SKIP: no guest image in $image (cmake --build <build> --target guest-image)"
  exit 77
fi
mkdir -p "$logs"
log=$logs/$kind-$kernel.log
if [ "$kernel" = default ]; then
  run="$btvm run"
else
  run="$btvm run --kernel $image/vmlinuz-$kernel --initrd $image/initramfs.cpio.gz"
  run="$run --append console=ttyS0"
fi


release='6\.1\.0-[0-9]+-(cloud-)?amd64'
case $kind in
  session)
    # The compute workload's result natively, which the guest must print.
    expect=$("$bench" compute 2000 | sed -n 's/.*\(result 0x[0-9a-f]*\).*/\1/p')
    [ -n "$expect" ] || { echo "FAIL: btvm-bench did not run natively"; exit 1; }
    "$python" "$session" --forbid-linux-errors --timeout 280 --log "$log" \
      --step 'uname -a' "^Linux .* $release .*x86_64" \
      --step 'cat /proc/cpuinfo' '^model name' \
      --step 'ls /' 'proc' \
      --step 'dmesg | tail' '^\[ *[0-9]+\.[0-9]+\] ' \
      --step 'btvm-bench compute 2000' "^btvm-bench compute 2000: $expect," \
      --step 'btvm-bench forkexec 50' '^btvm-bench forkexec 50: result 0x32,' \
      --step 'btvm-bench compute 2000' "^btvm-bench compute 2000: $expect," \
      --step 'reboot -f' '' \
      -- $run "$@"
    ;;
  pages)
    # 70,000 fresh pages touched by one process: more than the direct
    # engine keeps mapped in its child at once (it starts afresh past
    # 16,384) and more than a host process may map (vm.max_map_count,
    # 65,530), with the result checked against the same program natively.
    expect=$("$bench" pagefault 70000 | sed -n 's/.*\(result 0x[0-9a-f]*\).*/\1/p')
    [ -n "$expect" ] || { echo "FAIL: btvm-bench did not run natively"; exit 1; }
    "$python" "$session" --forbid-linux-errors --timeout 280 --log "$log" \
      --step 'btvm-bench pagefault 70000' "^btvm-bench pagefault 70000: $expect," \
      --step 'reboot -f' '' -- $run "$@"
    ;;
  policy)
    # The direct engine's adaptive policy (run with --stats): a process
    # whose system calls come densely stays translated and rests its
    # timing; one that computes moves to the child.
    expect=$("$bench" compute 20000 | sed -n 's/.*\(result 0x[0-9a-f]*\).*/\1/p')
    [ -n "$expect" ] || { echo "FAIL: btvm-bench did not run natively"; exit 1; }
    "$python" "$session" --forbid-linux-errors --timeout 280 --log "$log" \
      --step 'btvm-bench syscall 300000' '^btvm-bench syscall 300000: result ' \
      --step 'btvm-bench compute 20000' "^btvm-bench compute 20000: $expect," \
      --step 'reboot -f' '' -- $run "$@" || { echo "(the console log: $log)"; exit 1; }
    stat() { sed -n "s/^ *adaptive: $1  *\([0-9][0-9]*\)\$/\1/p" "$log"; }
    moved=$(stat 'address spaces moved to the child')
    rests=$(stat 'dense windows, then untimed system calls')
    echo "policy: $moved address spaces moved to the child, $rests rests"
    [ "${moved:-0}" -ge 1 ] && [ "${rests:-0}" -ge 1 ] ||
      { echo "FAIL: the policy moved no computing process or rested no dense one (log: $log)"; exit 1; }
    exit 0
    ;;
  boot)
    "$python" "$session" --forbid-linux-errors --timeout 280 --log "$log" \
      --step 'uname -r' "^$release" --step 'reboot -f' '' -- $run "$@"
    ;;
  date)
    "$python" "$session" --forbid-linux-errors --timeout 280 --log "$log" --date-after 60 \
      --step 'reboot -f' '' -- $run "$@"
    ;;
  *) echo "linux_session.sh: unknown kind $kind" >&2; exit 2 ;;
esac
status=$?
[ "$status" -eq 0 ] || echo "(the console log: $log)"
exit $status
