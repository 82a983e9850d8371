#!/bin/sh
# Bad command lines and bad kernel files: each must give exactly one line on
# stderr, "btvm: error: ...", and a non-zero status that is not a crash
# (a signal would show as 128+N).
set -u
btvm=$1
good=$2     # a good guest kernel to corrupt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
passes=0

expect_error() {
  name=$1; shift
  "$btvm" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
  status=$?
  lines=$(wc -l <"$tmp/err")
  if [ "$status" -ne 0 ] && [ "$status" -lt 128 ] && [ "$lines" -eq 1 ] &&
     grep -q '^btvm: error: ' "$tmp/err"; then
    passes=$((passes + 1))
    echo "PASS: $name ($(cat "$tmp/err"))"
  else
    failures=$((failures + 1))
    echo "FAIL: $name: status $status, $lines stderr lines:"
    cat "$tmp/err"
  fi
}

echo "just some text, not an ELF" >"$tmp/text"
head -c 100 "$good" >"$tmp/truncated"
head -c 600 "$good" >"$tmp/truncated2"
cp "$good" "$tmp/outside"
# First program header's p_paddr (e_phoff 64 + 24) := 1 GiB, past 128 MiB of RAM.
printf '\000\000\000\100\000\000\000\000' |
  dd of="$tmp/outside" bs=1 seek=88 conv=notrunc 2>/dev/null
: >"$tmp/empty"

expect_error "text file as kernel" run --kernel "$tmp/text"
expect_error "truncated ELF header" run --kernel "$tmp/truncated"
expect_error "truncated ELF body" run --kernel "$tmp/truncated2"
expect_error "empty kernel" run --kernel "$tmp/empty"
expect_error "missing kernel" run --kernel "$tmp/does-not-exist"
expect_error "directory as kernel" run --kernel "$tmp"
expect_error "segments outside RAM" run --memory 128M --kernel "$tmp/outside"
expect_error "memory 0" run --memory 0
expect_error "memory 1T" run --memory 1T
expect_error "memory garbage" run --memory lots
expect_error "memory unaligned" run --memory 3K
expect_error "memory overflow" run --memory 99999999999999999999999G
expect_error "code cache too small" run --code-cache 4K
expect_error "trace: an unknown kind" run --trace blocks,jumps
expect_error "trace: cpl 2" run --trace blocks --trace-cpl 2
expect_error "trace: an empty range" run --trace blocks --trace-range 0x2000-0x1000
expect_error "trace: a file without --trace" run --trace-file "$tmp/trace"
expect_error "trace: on kvm" run --trace blocks --engine kvm
expect_error "trace: an unwritable file" run --trace blocks --trace-file "$tmp/no/such/dir"
expect_error "gdb: not tcp" run --gdb /dev/ttyS0
expect_error "gdb: a bad port" run --gdb tcp::99999
expect_error "gdb: a bad host" run --gdb tcp:not-an-address:1234
expect_error "gdb: --gdb-wait alone" run --gdb-wait
expect_error "gdb: on kvm" run --gdb tcp::0 --engine kvm
expect_error "bench: zero repetitions" bench --reps 0
expect_error "bench: unknown configuration" bench --configs bt,vmware
expect_error "bench: unknown workload" bench --workloads spin,,nothing
expect_error "bench: no value" bench --scale
expect_error "bench: unknown flag" bench --fast
expect_error "bench: output directory not makeable" bench --out /proc/btvm-bench-results
expect_error "code cache too large" run --code-cache 2G
expect_error "code cache garbage" run --code-cache big
expect_error "unknown engine" run --engine qemu
expect_error "bad --direct-transport" run --engine direct --direct-transport pipe
expect_error "bad --direct-policy" run --engine direct --direct-policy sometimes
expect_error "missing --direct-policy value" run --engine direct --direct-policy
expect_error "missing value" run --kernel
expect_error "unknown flag" run --frobnicate
expect_error "unknown command" fly
# Linux kernels: a file with the bzImage signature and nothing else, a
# bzImage whose protected-mode part is cut off, flags that need one.
head -c 1024 /dev/zero >"$tmp/hdrs"
printf 'HdrS' | dd of="$tmp/hdrs" bs=1 seek=514 conv=notrunc 2>/dev/null
expect_error "bzImage with a bare header" run --kernel "$tmp/hdrs"
expect_error "initrd for an ELF kernel" run --kernel "$good" --initrd "$good"
expect_error "append for an ELF kernel" run --kernel "$good" --append "console=ttyS0"
expect_error "initrd without a kernel" run --demo --initrd "$good"
expect_error "missing initrd" run --kernel "$tmp/hdrs" --initrd "$tmp/does-not-exist"
expect_error "bad --decompress" run --decompress maybe
expect_error "--demo with --kernel" run --demo --kernel "$good"

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
