#!/bin/bash
# The GDB stub with the real gdb (`gdb -batch`): on the bt engine, break at
# a symbol of the hello guest, read general, control and x87 registers and
# memory, write a register, step one instruction, continue to the guest's
# exit; on the direct engine, the same
# at a user-mode function of the usermode guest (CPL 3 shows in CS); and
# Ctrl-C stops a running guest (gdb_interrupt.py). The expected values come
# from the guests' code (objdump) and output.
#
#   gdb.sh BTVM GUEST_DIR
#
# Exit status 77 (skipped) without gdb (scripts/setup.sh test installs it).
set -u
btvm=$1 guests=$2
command -v gdb >/dev/null || { echo "SKIP: no gdb"; exit 77; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
failures=0

# session NAME ENGINE GUEST GDB_COMMANDS... : runs the guest under --gdb
# tcp::0 --gdb-wait and gdb against it; leaves gdb's output in $tmp/gdb,
# the guest's in $tmp/out and btvm's status in $tmp/status.
session() {
  local name=$1 engine=$2 guest=$3
  shift 3
  rm -f "$tmp/err" "$tmp/status"
  ("$btvm" run --engine "$engine" --kernel "$guests/$guest.elf" --gdb tcp::0 --gdb-wait \
     >"$tmp/out" 2>"$tmp/err"; echo $? >"$tmp/status") &
  local port=
  for _ in $(seq 100); do
    port=$(sed -n 's/^btvm: waiting for gdb on port \([0-9]*\)$/\1/p' "$tmp/err" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "FAIL: $name: btvm did not wait for gdb"; cat "$tmp/err"; return 1; }
  local args=(-batch -nx -ex "file $guests/$guest.elf" -ex "target remote 127.0.0.1:$port")
  for c in "$@"; do args+=(-ex "$c"); done
  timeout 60 gdb "${args[@]}" >"$tmp/gdb" 2>&1
  wait
}

expect() {  # NAME FILE REGEX
  if grep -Eq "$3" "$2"; then
    echo "PASS: $1: /$3/"
  else
    echo "FAIL: $1: no /$3/ in:"
    sed 's/^/  | /' "$2"
    failures=$((failures + 1))
  fi
}

session bt bt hello 'break serial_putc' 'continue' 'info registers rip' 'stepi' \
  'info registers rip' 'x/3xb $rip' 'print/x $rdx' 'print ($cr0 & 0x80000001) == 0x80000001' \
  'print/x $efer & 0x500' 'print/x $fctrl' 'set var $rax = 0x1234' 'print/x $rax' 'delete' \
  'continue'
expect bt "$tmp/gdb" "^Breakpoint 1, serial_putc \(c=72 'H'\)"
expect bt "$tmp/gdb" '^rip +0x101050 '
expect bt "$tmp/gdb" '^rip +0x101055 '
expect bt "$tmp/gdb" '^0x101055 <serial_putc\+5>:\s+0x0f\s+0x1f\s+0x00$'
expect bt "$tmp/gdb" '^\$1 = 0x3fd$'
# Control registers (btvm's target description): paging and long mode on;
# the x87 control word as the guest left it (untouched: 0x37f); a register
# written from gdb reads back (RAX: serial_putc overwrites it before it
# reads it, so the guest's output stays whole).
expect bt "$tmp/gdb" '^\$2 = 1$'
expect bt "$tmp/gdb" '^\$3 = 0x500$'
expect bt "$tmp/gdb" '^\$4 = 0x37f$'
expect bt "$tmp/gdb" '^\$5 = 0x1234$'
expect bt "$tmp/gdb" 'exited with code 01\]'
expect bt "$tmp/status" '^1$'
expect bt "$tmp/out" '^Hello from the btvm guest kit!'

session direct direct usermode 'break user_cpl' 'continue' 'info registers rip cs' 'stepi' \
  'info registers rip' 'delete' 'continue'
expect direct "$tmp/gdb" '^Breakpoint 1, user_cpl \(arg=100\)'
expect direct "$tmp/gdb" '^cs +0x33 '
expect direct "$tmp/gdb" '^rip +0x104003 '
expect direct "$tmp/gdb" 'exited with code 01\]'
expect direct "$tmp/out" '^SUMMARY: 10 tests, 0 failures'
# Ctrl-C at the protocol level, on a loop of 3e9 rounds (~6 s unless stopped).
rm -f "$tmp/err" "$tmp/status"
(printf '\n3000000000\n' | "$btvm" run --kernel "$guests/bench_loop_reg.elf" --gdb tcp::0 \
   --gdb-wait >"$tmp/out" 2>"$tmp/err"; echo $? >"$tmp/status") &
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^btvm: waiting for gdb on port \([0-9]*\)$/\1/p' "$tmp/err" 2>/dev/null)
  [ -n "$port" ] && break
  sleep 0.05
done
if [ -z "$port" ] || ! python3 "$(dirname "$0")/gdb_interrupt.py" "$port"; then
  echo "FAIL: Ctrl-C"
  failures=$((failures + 1))
fi
wait
expect "Ctrl-C" "$tmp/err" '^btvm: error: the run was ended from gdb$'
[ "$failures" -eq 0 ]
