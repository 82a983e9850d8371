#!/bin/sh
# btvm's set-up: installs what is missing (Debian 12, as root), builds, and
# builds the Linux guest image (Debian's kernels and a busybox initramfs,
# fetched with apt-get download), then either boots it (`run`) or runs the
# whole test suite (`test`). Idempotent: a second run installs nothing and
# rebuilds only what changed.
#
#   scripts/setup.sh run     install, build, boot the Linux guest to a shell
#   scripts/setup.sh test    install, build, run every test (ctest)
set -eu

mode=${1:-}
case "$mode" in
  run|test) ;;
  *) echo "usage: scripts/setup.sh run|test" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BTVM_BUILD_DIR:-$root/build}

# Every dependency is a Debian package.
packages="g++ cmake ninja-build binutils libzydis-dev libasmjit-dev libboost-dev
          libgtest-dev libbenchmark-dev zlib1g-dev liblzma-dev liblz4-dev libzstd-dev
          qemu-system-x86 cpio python3"
# The tests also render `btvm bench`'s report in a headless browser and
# drive the GDB stub with gdb.
[ "$mode" = test ] && packages="$packages chromium gdb"
missing=
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "btvm setup: installing$missing"
  if [ "$(id -u)" -ne 0 ]; then
    echo "btvm setup: run as root to install packages (or install:$missing)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build"
cmake --build "$build" --target guest-image

if [ "$mode" = run ]; then
  exec "$build/runtime/btvm" run
fi
cd "$build"
exec ctest --output-on-failure -j2 --timeout 300
