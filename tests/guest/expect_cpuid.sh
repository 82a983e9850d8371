#!/bin/sh
# What user-mode cpuid shows on btvm's direct engine with user code always
# in the child process (--direct-policy child), as runtime/direct/README.md
# says: btvm's virtual CPU where the host has CPUID faulting (the guest
# usercpuid then passes), else the host's CPU: its vendor and signature
# (family, model, stepping) as the host's /proc/cpuinfo shows them, and the
# guest's checks that user mode sees the kernel's values fail.
#
#   expect_cpuid.sh BTVM usercpuid.elf
set -u

if [ $# -ne 2 ]; then
  echo "usage: expect_cpuid.sh BTVM usercpuid.elf" >&2
  exit 2
fi
btvm=$1
kernel=$2
out=$(timeout --kill-after=5 60 "$btvm" run --engine direct --direct-policy child \
  --kernel "$kernel" </dev/null)
status=$?
printf '%s\n' "$out"

# arch_prctl(ARCH_SET_CPUID, 1) succeeds only where the host has CPUID faulting.
if python3 -c 'import ctypes, sys; sys.exit(0 if ctypes.CDLL(None).syscall(158, 0x1012, 1) == 0 else 1)'; then
  if [ "$status" -ne 1 ] || printf '%s\n' "$out" | grep -q '^FAIL:'; then
    echo "expect_cpuid.sh: the host has CPUID faulting, yet user mode did not see the kernel's cpuid" >&2
    exit 1
  fi
  echo "expect_cpuid.sh: CPUID faulting: user mode sees btvm's virtual CPU"
  exit 0
fi

line=$(printf '%s\n' "$out" | sed -n 's/^measured: user-mode cpuid: vendor \([^,]*\), signature \(0x[0-9a-f]*\)$/\1 \2/p')
[ -n "$line" ] || { echo "expect_cpuid.sh: no user-mode cpuid line" >&2; exit 1; }
vendor=${line% *}
sig=$((${line#* }))
family=$(( (sig >> 8) & 0xf ))
model=$(( (sig >> 4) & 0xf ))
if [ "$family" -eq 15 ]; then family=$(( family + ((sig >> 20) & 0xff) )); fi
if [ "$family" -ge 6 ]; then model=$(( model | (((sig >> 16) & 0xf) << 4) )); fi
stepping=$(( sig & 0xf ))
host() { sed -n "s/^$1[[:space:]]*: //p" /proc/cpuinfo | head -n 1; }
want="$(host vendor_id) $(host 'cpu family') $(host model) $(host stepping)"
got="$vendor $family $model $stepping"
if [ "$got" != "$want" ]; then
  echo "expect_cpuid.sh: user mode saw '$got', the host is '$want'" >&2
  exit 1
fi
if ! printf '%s\n' "$out" | grep -q '^FAIL: user-mode cpuid leaf 0'; then
  # The host's vendor and leaf 0 may equal btvm's (both say the same
  # vendor and highest leaf); leaf 1's features always differ.
  printf '%s\n' "$out" | grep -q '^FAIL: leaf 1' || {
    echo "expect_cpuid.sh: user mode saw the host's CPU, yet every leaf matched the kernel's" >&2
    exit 1
  }
fi
echo "expect_cpuid.sh: no CPUID faulting: user mode in the child sees the host's CPU ($got)"
exit 0
