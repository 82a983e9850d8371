#!/usr/bin/env python3
"""A scripted session on a Linux guest, as a person at the console would
have it: boot, wait for the shell prompt, run each command and wait for the
prompt again, then end the run with a command that powers off or reboots.

  session.py [--timeout S] [--log FILE] [--expect-status N] [--forbid RE]...
             [--date-after S] [--step 'COMMAND' 'REGEX']... -- GUEST-COMMAND...

Each --step's REGEX must match the output of COMMAND (up to the next
prompt). The last step's command is expected to end the guest (no prompt
follows); the run must then end with --expect-status. --forbid REGEXes must
not appear anywhere in the console output (the boot log included). Prints
the time from launch to the first prompt ("boot: N.NN s to the prompt").
--date-after S: once the prompt is there, waits until the guest has been up
S seconds (by its /proc/uptime), then checks that its clock agrees with the
host's within a second: busybox's date prints whole seconds only, so the
guest prints it right after its second has ticked over.
Exit status 0 when everything holds.
"""
import argparse
import os
import re
import select
import subprocess
import sys
import time

PROMPT = b"btvm# "
# Lines a clean Linux boot does not print (the boot issue's acceptance).
LINUX_ERRORS = ["Kernel panic", "Oops", "BUG:", "WARNING:", "Call Trace", "Unable to calibrate",
                "Marking TSC unstable", "soft lockup"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--log")
    ap.add_argument("--expect-status", type=int, default=0)
    ap.add_argument("--forbid", action="append", default=[])
    ap.add_argument("--forbid-linux-errors", action="store_true",
                    help="forbid what a clean Linux boot never prints: " + ", ".join(LINUX_ERRORS))
    ap.add_argument("--date-after", type=float, default=0)
    ap.add_argument("--step", nargs=2, action="append", default=[], metavar=("COMMAND", "REGEX"))
    ap.add_argument("command", nargs="+")
    args = ap.parse_args()

    start = time.monotonic()
    deadline = start + args.timeout
    proc = subprocess.Popen(args.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = bytearray()
    failures = []

    def read_until(pattern, limit):
        """Reads output until `pattern` (bytes) appears after len(out) at call
        time; returns the text before it, or None at EOF or timeout."""
        begin = len(out)
        while True:
            i = out.find(pattern, begin)
            if i >= 0:
                return bytes(out[begin:i])
            left = min(limit, deadline) - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([proc.stdout], [], [], left)
            if not r:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            out.extend(chunk)

    first = read_until(PROMPT, deadline)
    if first is None:
        failures.append("no shell prompt")
    else:
        print("boot: %.2f s to the prompt" % (time.monotonic() - start), flush=True)
        if args.date_after:
            cmd = ("read up idle < /proc/uptime; sleep $(( %d - ${up%%.*} )); "
                   "t=$(date +%%s); while [ $(date +%%s) = $t ]; do :; done; "
                   "cat /proc/uptime; date +%%s\n" % int(args.date_after + 1))
            proc.stdin.write(cmd.encode())
            proc.stdin.flush()
            text = read_until(PROMPT, deadline)
            host = time.time()
            m = re.findall(r"^(\d+\.\d+) \d+\.\d+\s*$\s*^(\d+)\s*$",
                           (text or b"").decode(errors="replace"), re.M)
            if not m:
                failures.append("no uptime and date from the guest: %r" % text)
            else:
                uptime, guest = float(m[-1][0]), float(m[-1][1])
                skew = guest - host
                line = "date after %.1f s of uptime: guest %.3f, host %.3f, %+.3f s" % (
                    uptime, guest, host, skew)
                if uptime < args.date_after or abs(skew) > 1.0:
                    failures.append(line)
                else:
                    print("PASS: " + line, flush=True)
        for n, (command, regex) in enumerate(args.step):
            last = n == len(args.step) - 1
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()
            if last:
                break
            text = read_until(PROMPT, deadline)
            if text is None:
                failures.append("no prompt after %r" % command)
                break
            shown = text.decode(errors="replace")
            if not re.search(regex, shown, re.M):
                failures.append("%r: output does not match /%s/:\n%s" % (command, regex, shown))
            else:
                print("PASS: %s" % command, flush=True)
    # The end: the guest powers off or reboots; btvm exits.
    try:
        left = max(1.0, deadline - time.monotonic())
        while True:
            r, _, _ = select.select([proc.stdout], [], [], left)
            if not r:
                raise subprocess.TimeoutExpired(args.command, left)
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out.extend(chunk)
        status = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = None
        failures.append("the run did not end")
    if status is not None and status != args.expect_status:
        failures.append("exit status %s, expected %d" % (status, args.expect_status))
    text = out.decode(errors="replace")
    if args.forbid_linux_errors:
        args.forbid += [re.escape(e) for e in LINUX_ERRORS]
    for regex in args.forbid:
        for m in re.finditer(regex, text, re.M):
            line = text[text.rfind("\n", 0, m.start()) + 1:text.find("\n", m.end())]
            failures.append("forbidden /%s/ in: %s" % (regex, line.strip()))
    if args.log:
        with open(args.log, "w") as f:
            f.write(text)
    for f in failures:
        print("FAIL: " + f)
    if failures and not args.log:
        sys.stdout.write(text[-4000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
