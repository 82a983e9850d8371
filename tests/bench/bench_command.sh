#!/bin/sh
# `btvm bench` in small (one repetition, two workloads, counts scaled down):
# the table, results.json and report.html are there and say what ran, and
# for what did not (kvm where the host's KVM cannot boot the guest), why;
# with a browser, its rendering shows every bar.
#
#   bench_command.sh BTVM IMAGE_DIR OUT_DIR [BROWSER]
#
# Exit status 77 (skipped) when the guest image has not been built.
set -u
btvm=$1 image=$2 out=$3 browser=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$image/vmlinuz-cloud" ] || [ ! -f "$image/initramfs.cpio.gz" ]; then
  echo "SKIP: no guest image in $image (cmake --build <build> --target guest-image)"
  exit 77
fi
rm -rf "$out"
configs=native,bt,direct,kvm
ran=native,bt,direct
if command -v qemu-system-x86_64 >/dev/null; then
  configs=$configs,qemu-tcg
  ran=$ran,qemu-tcg
fi
"$btvm" bench --reps 1 --workloads compute,syscall --configs "$configs" --scale 0.05 \
  --no-progress --out "$out" >"$out.table" 2>"$out.progress"
status=$?
cat "$out.table" "$out.progress"
[ "$status" -eq 0 ] || { echo "FAIL: btvm bench exited with $status"; exit 1; }
grep -q '^compute    bt ' "$out.table" || { echo "FAIL: no compute row for bt in the table"; exit 1; }
grep -q '^  kvm       \|^compute    kvm ' "$out.table" ||
  { echo "FAIL: the table says nothing of kvm"; exit 1; }
shot=
if [ -n "$browser" ]; then
  shot=$out/report.png
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$shot" --window-size=900,1400 "file://$(cd "$out" && pwd)/report.html" \
    >/dev/null 2>&1 || { echo "FAIL: $browser could not render the report"; exit 1; }
fi
exec python3 "$here/check_report.py" "$out" --ran "$ran" \
  --workloads compute,syscall ${shot:+--screenshot "$shot"}
