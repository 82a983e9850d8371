#!/bin/sh
# `btvm run` boots the built-in default guest: it prints its banner and the
# checksum QEMU TCG computes for the same guest, and exits 0.
set -u
out=$("$1" run </dev/null)
status=$?
echo "$out"
[ "$status" -eq 0 ] || { echo "FAIL: exit status $status, expected 0"; exit 1; }
echo "$out" | grep -q '^btvm default guest: ' || { echo "FAIL: no banner"; exit 1; }
echo "$out" | grep -qx 'checksum: 0x93a421fe' || { echo "FAIL: wrong or missing checksum"; exit 1; }
echo "PASS: default guest"
