#!/usr/bin/env python3
"""Checks a `btvm run --trace KINDS` file against the run's --stats: every
translated block is there, whole (its guest instructions, each with how it
was translated and, unless it emitted no code, the host code it became);
every exit to the runtime, every event delivered and every trap of the
direct engine's child has its line; all in the documented line format
(runtime/trace.h).

  check_trace.py TRACE STATS [--kinds blocks,exits,faults] [--cpl N] [--range LO-HI]
"""
import re
import sys

ANNOTATIONS = ("ident", "nop: no host code", "stack sequence", "string: helper call",
               "sensitive, inline against CpuState", "branch:", "conditional branch:",
               "indirect branch:", "call:", "indirect call:", "ret:")
BLOCK = re.compile(r"^block (\d+)  guest (0x[0-9a-f]+)  cpl (\d)  (\d+) instructions, (\d+) bytes"
                   r"(, a loop|, alone)?  host (0x[0-9a-f]+)  (\d+) bytes \((\d+) main path, (\d+) slow "
                   r"paths and exit stubs\)$")
GUEST = re.compile(r"^  guest  (0x[0-9a-f]+)  ([0-9a-f]{2}(?: [0-9a-f]{2})*)  +(.+?)  +(\S.*)$")
HOST = re.compile(r"^    (host|slow)  (0x[0-9a-f]+)  (\S.*)$")
EXIT = re.compile(r"^  exit  guest (0x[0-9a-f]+)  jmp at host (0x[0-9a-f]+)  direct")
END = re.compile(r"^end block (\d+)$")
EMULATE = re.compile(r"^emulate  guest (0x[0-9a-f]+)  cpl (\d)  ")
RUNTIME = re.compile(r"^runtime  guest (0x[0-9a-f]+)  cpl (\d)  (\S.*\S)  (\d+) ns$")
EVENT = re.compile(r"^event  guest (0x[0-9a-f]+)  cpl (\d)  (exception|interrupt|software interrupt)"
                   r"  vector (\d+)(  error code 0x[0-9a-f]+)?(  cr2 0x[0-9a-f]+)?$")
TRAP = re.compile(r"^trap  guest (0x[0-9a-f]+)  cpl 3  (\S.*)$")


def stat(stats, text):
    m = re.search(re.escape(text) + r"[^\n]*?\s(\d+)\n", stats)
    return int(m.group(1)) if m else None


def main():
    args = sys.argv[1:]
    cpl = rng = None
    kinds = {"blocks"}
    if "--kinds" in args:
        i = args.index("--kinds")
        kinds = set(args[i + 1].split(","))
        del args[i:i + 2]
    if "--cpl" in args:
        i = args.index("--cpl")
        cpl = int(args[i + 1])
        del args[i:i + 2]
    if "--range" in args:
        i = args.index("--range")
        lo, hi = (int(x, 0) for x in args[i + 1].split("-"))
        rng = (lo, hi)
        del args[i:i + 2]
    trace = open(args[0]).read().splitlines()
    stats = open(args[1]).read()
    m = re.search(r"guest blocks translated\s+(\d+)", stats)
    translated = int(m.group(1)) if m else None
    failures = []
    blocks, guest_lines, host_lines = 0, 0, 0
    counts = {"runtime": 0, "event": 0, "trap": 0}
    cur = None  # (number, expected instructions, instructions seen, last guest had host code)
    pending_nop_ok = True
    for n, line in enumerate(trace, 1):
        def bad(why):
            failures.append("line %d: %s: %r" % (n, why, line))
        if (b := BLOCK.match(line)):
            if cur:
                bad("a block inside block %d" % cur[0])
            blocks += 1
            if int(b.group(1)) != blocks:
                bad("block number %s, expected %d" % (b.group(1), blocks))
            rip = int(b.group(2), 16)
            if cpl is not None and int(b.group(3)) != cpl:
                bad("cpl %s, traced with --trace-cpl %d" % (b.group(3), cpl))
            if rng and not (rng[0] <= rip <= rng[1]):
                bad("outside --trace-range")
            if int(b.group(8)) != int(b.group(9)) + int(b.group(10)):
                bad("host byte counts do not add up")
            cur = [blocks, int(b.group(4)), 0, None, rip]
        elif (g := GUEST.match(line)):
            if not cur:
                bad("a guest line outside a block")
                continue
            if cur[3] is False:
                bad("the previous guest instruction has no host code")
            guest_lines += 1
            cur[2] += 1
            if cur[2] == 1 and int(g.group(1), 16) != cur[4]:
                bad("the block's first instruction is not at its address")
            how = g.group(4)
            if not how.startswith(ANNOTATIONS):
                bad("no known annotation")
            cur[3] = True if how.startswith("nop") else False
        elif (h := HOST.match(line)):
            host_lines += 1
            if not cur:
                bad("a host line outside a block")
            elif h.group(1) == "host":
                cur[3] = True
        elif EXIT.match(line):
            if not cur:
                bad("an exit line outside a block")
        elif (e := END.match(line)):
            if not cur or int(e.group(1)) != cur[0]:
                bad("end of a block that is not open")
            elif cur[2] != cur[1]:
                bad("block %d: %d guest lines, its header says %d" % (cur[0], cur[2], cur[1]))
            elif cur[3] is False:
                bad("the last guest instruction has no host code")
            cur = None
        elif EMULATE.match(line):
            if cur:
                bad("an emulated instruction inside a block")
        elif RUNTIME.match(line) or EVENT.match(line) or TRAP.match(line):
            if cur:
                bad("a runtime line inside a block")
            kind = line.split(" ", 1)[0]
            counts[kind] += 1
            r = int(line.split()[2], 16)
            c = int(line.split()[4])
            if (cpl is not None and c != cpl) or (rng and not rng[0] <= r <= rng[1]):
                bad("outside what --trace-cpl or --trace-range select")
        else:
            bad("not a trace line")
    if cur:
        failures.append("the trace ends inside block %d" % cur[0])
    expected = {"blocks": ("guest blocks translated", blocks),
                "runtime": ("exits from translated code to the runtime", counts["runtime"]),
                "event": ("guest exceptions delivered", counts["event"]),
                "trap": ("user code runs in a child", counts["trap"])}
    wanted = {"blocks": "blocks" in kinds, "runtime": "exits" in kinds,
              "event": "faults" in kinds, "trap": "faults" in kinds}
    for key, (text, seen) in expected.items():
        if not wanted[key]:
            if seen:
                failures.append("%d %s lines, not asked for" % (seen, key))
            continue
        if cpl is None and rng is None:
            want = stat(stats, text)
            if key == "blocks" and want is not None:
                want += stat(stats, "one-instruction blocks") or 0
            if want is None and key == "trap":
                want = 0  # the bt engine has no child
            if want is None:
                failures.append("no '%s' in the stats" % text)
            elif want != seen:
                failures.append("%d %s lines, the stats say %s: %d" % (seen, key, text, want))
        elif key == "blocks" and seen == 0:
            failures.append("no block traced")
    for f in failures[:20]:
        print("FAIL: " + f)
    if not failures:
        print("PASS: %d blocks, %d guest instructions, %d host instructions; %d exits, %d events,"
              " %d traps" % (blocks, guest_lines, host_lines, counts["runtime"], counts["event"],
                             counts["trap"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
