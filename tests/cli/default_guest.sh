#!/bin/sh
# `btvm run --demo` boots the built-in demo guest: it prints its banner, the
# checksum QEMU TCG computes for the same guest, what its user-mode program
# computed (the values QEMU prints too) and its two timings, and exits 0.
set -u
out=$("$1" run --demo </dev/null)
status=$?
echo "$out"
fail() { echo "FAIL: $1"; exit 1; }
[ "$status" -eq 0 ] || fail "exit status $status, expected 0"
echo "$out" | grep -q '^btvm default guest: ' || fail "no banner"
echo "$out" | grep -qx 'checksum: 0x93a421fe' || fail "wrong or missing checksum"
echo "$out" | grep -qx 'user mode: syscalls returned 500500 in all' ||
  fail "wrong or missing syscall results"
echo "$out" | grep -qx 'user mode: 23000 primes below 262144, 32 pages faulted in' ||
  fail "wrong or missing user-mode computation"
echo "$out" | grep -Eqx 'measured: [0-9]+ cycles per syscall round trip' ||
  fail "no syscall timing"
echo "$out" | grep -Eqx 'measured: [0-9]+ cycles per page fault' || fail "no page-fault timing"
echo "$out" | grep -qx 'btvm default guest: done, resetting' || fail "no closing line"
echo "PASS: default guest"

# Without a guest image next to its build, plain `btvm run` is the demo too.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/runtime"
cp "$1" "$tmp/runtime/btvm"
out=$("$tmp/runtime/btvm" run </dev/null)
status=$?
[ "$status" -eq 0 ] || fail "btvm run without a guest image: exit status $status"
echo "$out" | grep -qx 'checksum: 0x93a421fe' || fail "btvm run without a guest image: not the demo"
echo "PASS: btvm run without a guest image runs the demo"
