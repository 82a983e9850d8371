#!/bin/sh
# compare.sh on the kvm engine, where this host's KVM can run the guest:
#
#   kvm_compare.sh NAME compare.sh ARGS...
#
# Skipped (status 77) when the host's KVM cannot run a guest at all (btvm's
# probe fails: no /dev/kvm, no permission, no hardware virtualization), and
# on hosts whose /dev/kvm is KVM's PVM module for the guests PVM cannot run
# (it runs guest kernel code in its own emulator and guest user code under
# its shadow paging: README, "The kvm engine").
set -u
name=$1
shift
# The guest tests PVM runs as QEMU TCG does (the others, there: user-mode
# instruction fetches fault (#PF 0x15), its emulator gives up on an
# instruction (KVM internal error 1), IOPL and ring 1 differ).
pvm_runs=" hello paging strings stack apic calls swapgs "
if [ -d /sys/module/kvm_pvm ]; then
  case "$pvm_runs" in
    *" $name "*) ;;
    *) echo "SKIP: this host's /dev/kvm is KVM's PVM module, which cannot run $name"; exit 77 ;;
  esac
fi
out=$("$@" 2>&1)
status=$?
echo "$out"
if [ "$status" -ne 0 ] && echo "$out" |
   grep -q "btvm: error: kvm engine: \(cannot open /dev/kvm\|KVM_CREATE_VM\|/dev/kvm speaks\|this host's KVM did not run\)"; then
  echo "SKIP: this host's KVM cannot run a guest"
  exit 77
fi
exit "$status"
