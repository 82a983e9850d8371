#!/bin/sh
# Builds the Linux guest image from Debian packages:
#   OUT/vmlinuz-cloud     Debian's cloud kernel (linux-image-cloud-amd64)
#   OUT/vmlinuz-generic   Debian's generic kernel (linux-image-amd64)
#   OUT/initramfs.cpio.gz busybox-static, an /init that mounts proc, sys and
#                         dev and starts a shell on the console, and the
#                         guest workloads (/bin/btvm-bench, static)
# The kernel packages are downloaded with `apt-get download` and unpacked
# with dpkg-deb, never installed. Idempotent: what is already in OUT is not
# fetched or built again (remove OUT to start over).
#
#   scripts/build-guest-image.sh OUT
set -eu

if [ $# -ne 1 ]; then
  echo "usage: scripts/build-guest-image.sh OUT_DIR" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/work
mkdir -p "$work"

for tool in apt-get apt-cache dpkg-deb cpio gzip cc; do
  command -v "$tool" >/dev/null || {
    echo "build-guest-image: $tool is missing (scripts/setup.sh installs it)" >&2
    exit 1
  }
done

# The package a Debian metapackage (linux-image-amd64) depends on: the
# versioned kernel image.
kernel_package() {
  apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'
}

# fetch PACKAGE: downloads its .deb into $work (once) and prints its path.
fetch() {
  deb=$(ls "$work/$1"_*.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    (cd "$work" && apt-get download "$1" >/dev/null 2>&1) || {
      echo "build-guest-image: cannot download $1 (apt-get download $1)" >&2
      exit 1
    }
    deb=$(ls "$work/$1"_*.deb | head -n 1)
  fi
  echo "$deb"
}

# The kernels: boot/vmlinuz-* out of each image package.
for flavour in cloud generic; do
  [ -f "$out/vmlinuz-$flavour" ] && continue
  meta=linux-image-amd64
  [ "$flavour" = cloud ] && meta=linux-image-cloud-amd64
  pkg=$(kernel_package "$meta")
  if [ -z "$pkg" ]; then
    echo "build-guest-image: apt-cache knows no kernel for $meta (apt-get update?)" >&2
    exit 1
  fi
  deb=$(fetch "$pkg")
  rm -rf "$work/$flavour"
  dpkg-deb -x "$deb" "$work/$flavour"
  cp "$work/$flavour"/boot/vmlinuz-* "$out/vmlinuz-$flavour.tmp"
  mv "$out/vmlinuz-$flavour.tmp" "$out/vmlinuz-$flavour"
  echo "build-guest-image: $out/vmlinuz-$flavour from $pkg"
done

# The initramfs, rebuilt when its inputs are newer.
bench_src=$root/guest/linux/btvm-bench.c
if [ ! -f "$out/initramfs.cpio.gz" ] || [ "$bench_src" -nt "$out/initramfs.cpio.gz" ] ||
   [ "$0" -nt "$out/initramfs.cpio.gz" ]; then
  deb=$(fetch busybox-static)
  rm -rf "$work/busybox" "$work/rootfs"
  dpkg-deb -x "$deb" "$work/busybox"
  rootfs=$work/rootfs
  mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/proc" \
           "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp" "$rootfs/root" "$rootfs/etc"
  cp "$work/busybox/bin/busybox" "$rootfs/bin/busybox"
  # Every applet as a link, made now so that the image needs no set-up at boot.
  for applet in $("$rootfs/bin/busybox" --list-full); do
    [ -e "$rootfs/$applet" ] || ln -s /bin/busybox "$rootfs/$applet"
  done
  cc -O2 -static -o "$rootfs/bin/btvm-bench" "$bench_src"
  cat > "$rootfs/init" <<'EOF'
#!/bin/sh
# btvm guest init: mount the kernel's file systems, start a shell on the
# console, power off when it exits.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "btvm guest: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPU"
setsid cttyhack sh -l
poweroff -f
EOF
  chmod 755 "$rootfs/init"
  echo 'export PS1="btvm# "' > "$rootfs/etc/profile"
  (cd "$rootfs" && find . | sort | cpio -o -H newc --owner=0:0 --quiet) |
    gzip -9 > "$out/initramfs.cpio.gz.tmp"
  mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
  echo "build-guest-image: $out/initramfs.cpio.gz"
fi
