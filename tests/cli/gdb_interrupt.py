#!/usr/bin/env python3
"""Ctrl-C through the GDB stub, at the protocol level (gdb -batch cannot
type it): the guest runs a long loop; the interrupt byte stops it with a
stop reply within a second, the registers can be read, it runs on and
stops again, and vKill ends the run.

  gdb_interrupt.py PORT
"""
import socket
import sys
import time


def main():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.settimeout(10)
    buf = b""

    def send(payload):
        s.sendall(b"$" + payload + b"#%02x" % (sum(payload) & 0xff))

    def reply():
        nonlocal buf
        while True:
            i = buf.find(b"$")
            j = buf.find(b"#", i + 1) if i >= 0 else -1
            if i >= 0 and j >= 0 and len(buf) >= j + 3:
                packet, buf = buf[i + 1:j], buf[j + 3:]
                s.sendall(b"+")
                return packet
            buf += s.recv(4096)

    failures = 0

    def check(what, got, ok):
        nonlocal failures
        print("%s: %s: %r" % ("PASS" if ok else "FAIL", what, got))
        failures += not ok

    send(b"?")
    check("stopped at attach", reply(), True)
    for n in (1, 2):
        send(b"c")
        time.sleep(0.5)
        start = time.time()
        s.sendall(b"\x03")
        got = reply()
        took = time.time() - start
        check("Ctrl-C %d stops the guest (%.3f s)" % (n, took), got, got == b"S05" and took < 1)
        send(b"p10")
        rip = reply()
        check("RIP readable after it", rip, len(rip) == 16)
    send(b"vKill;1")
    check("vKill", reply(), True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
