#!/usr/bin/env python3
"""Checks what `btvm bench` wrote (results.json, report.html) and, with
--screenshot, that a browser's rendering of the report shows its charts:
the bars of every configuration that ran, in their colours.

  check_report.py DIR --ran native,bt [--not-run kvm] --workloads a,b
                  [--screenshot PNG]

Every configuration that did not run must say why, in the results and the
report.
"""
import argparse
import json
import struct
import sys
import zlib

# runtime/bench/results.cpp's Color().
COLORS = {"native": (0x6b, 0x72, 0x80), "bt": (0x25, 0x63, 0xeb), "direct": (0x16, 0xa3, 0x4a),
          "kvm": (0x93, 0x33, 0xea), "qemu-tcg": (0xea, 0x58, 0x0c), "qemu-kvm": (0xa1, 0x62, 0x07)}


def read_png(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 8 or ctype not in (2, 6):
                raise ValueError("PNG colour type %d depth %d" % (ctype, depth))
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, rows, bpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ran", default="")
    ap.add_argument("--not-run", default="")
    ap.add_argument("--workloads", default="")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    ran = [c for c in args.ran.split(",") if c]
    not_run = [c for c in args.not_run.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    failures = []

    results = json.load(open(args.dir + "/results.json"))
    configs = {c["name"]: c for c in results["configurations"]}
    for name in ran:
        if not configs.get(name, {}).get("ran"):
            failures.append("%s did not run: %s" % (name, configs.get(name, {}).get("why")))
    for name in not_run:
        c = configs.get(name)
        if not c or c["ran"] or not c["why"]:
            failures.append("%s: expected 'did not run' with a reason, got %r" % (name, c))
    for c in results["configurations"]:
        if not c["ran"] and not c["why"]:
            failures.append("%s did not run and the results do not say why" % c["name"])
    for w in workloads:
        for name in ran:
            if name == "native" and w == "boot":
                continue
            n = [s for s in results["samples"] if s["workload"] == w and s["config"] == name]
            if len(n) != results["reps"] or any(s["ns"] <= 0 for s in n):
                failures.append("%s on %s: %d samples, %d repetitions" % (w, name, len(n),
                                                                          results["reps"]))
    if results["problems"]:
        failures.append("problems: %s" % results["problems"])
    for key in ("cpu", "kernel"):
        if not results["host"][key]:
            failures.append("no host %s" % key)

    html = open(args.dir + "/report.html").read()
    if html.count("<svg") != len(workloads):
        failures.append("%d charts in the report for %d workloads" % (html.count("<svg"),
                                                                       len(workloads)))
    for c in results["configurations"]:
        why = c["why"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if not c["ran"] and why.replace('"', "&quot;") not in html:
            failures.append("the report does not say why %s did not run" % c["name"])

    if args.screenshot:
        width, height, rows, bpp = read_png(args.screenshot)
        for name in ran:
            want = COLORS[name]
            n = sum(1 for row in rows for x in range(0, width * bpp, bpp)
                    if tuple(row[x:x + 3]) == want)
            # A bar is at least 16 px high and a few wide, one a workload.
            if n < 100 * max(1, len(workloads)):
                failures.append("the screenshot shows %d pixels of %s's colour" % (n, name))
            else:
                print("PASS: %s's bars: %d pixels" % (name, n))

    for f in failures:
        print("FAIL: " + f)
    if not failures:
        print("PASS: %s" % args.dir)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
