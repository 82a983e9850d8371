#!/usr/bin/env python3
"""Regenerates the example output of docs/tour.md from the current build, or
with --check says whether the committed text still is what the build
prints (ctest docs.tour).

  docs/tour.py BUILD_DIR [--check]

The example is the real `--trace blocks,exits` output of the hello guest's
serial_putc, with what differs from run to run made stable: host
addresses inside a block are written as offsets from its start (B+0x..),
other host addresses (the shared code the annotations name) as S, and
times as "... ns".
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "tour.md")
BEGIN, END = "<!-- tour-trace:begin -->", "<!-- tour-trace:end -->"
RANGE = "0x101050-0x101065"  # serial_putc in build/guests/hello.elf
RUNTIME_LINES = 6


def normalize(lines):
    out, base, size, runtime = [], None, 0, 0
    hexnum = re.compile(r"0x([0-9a-fA-F]{12,16})\b")
    for line in lines:
        m = re.match(r"^block \d+ .*  host (0x[0-9a-f]+)  (\d+) bytes", line)
        if m:
            base, size = int(m.group(1), 16), int(m.group(2))
            line = line.replace(m.group(1), "B", 1)
        elif line.startswith("end block"):
            base = None
        elif line.startswith("runtime"):
            runtime += 1
            if runtime > RUNTIME_LINES:
                continue
            line = re.sub(r"  \d+ ns$", "  ... ns", line)

        def rel(m):
            v = int(m.group(1), 16)
            if not 1 << 40 <= v < 1 << 47:
                return m.group(0)  # not a host address: a guest one, an offset
            if base is not None and base <= v < base + size:
                return "B+0x%x" % (v - base)
            return "S"
        out.append(hexnum.sub(rel, line))
    return out


def generate(build):
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace")
        subprocess.run([os.path.join(build, "runtime", "btvm"), "run", "--kernel",
                        os.path.join(build, "guests", "hello.elf"), "--trace", "blocks,exits",
                        "--trace-range", RANGE, "--trace-file", trace],
                       stdout=subprocess.DEVNULL, check=False)
        lines = open(trace).read().splitlines()
    body = normalize(lines)
    if RUNTIME_LINES < sum(1 for l in lines if l.startswith("runtime")):
        body.append("... (one runtime line for every exit to the runtime)")
    return "\n".join(["```"] + body + ["```"])


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    build, check = sys.argv[1], "--check" in sys.argv[2:]
    doc = open(DOC).read()
    i, j = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    new = "\n" + generate(build) + "\n"
    if check:
        if doc[i:j] == new:
            print("PASS: docs/tour.md's trace is what this build prints")
            return 0
        old_lines, new_lines = doc[i:j].splitlines(), new.splitlines()
        import difflib
        for l in list(difflib.unified_diff(old_lines, new_lines, "tour.md", "this build",
                                           lineterm=""))[:60]:
            print(l)
        print("FAIL: docs/tour.md's trace is stale: run docs/tour.py BUILD_DIR to regenerate it")
        return 1
    open(DOC, "w").write(doc[:i] + new + doc[j:])
    print("docs/tour.md regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
