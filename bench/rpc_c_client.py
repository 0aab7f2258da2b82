#!/usr/bin/env python3
"""Anchor for `npm run bench:rpc`: libvirt's own C client (through python3-libvirt).

Prints one JSON object: calls/s for getLibVersion and listAllDomains, sequential
and with N threads sharing one connection (libvirt's C client lets threads keep
several calls in flight on one connection; python releases the GIL around them).
"""
import json
import sys
import threading
import time

import libvirt

uri, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
conn = libvirt.open(uri)

OPS = {
    "getLibVersion": lambda: conn.getLibVersion(),
    "listAllDomains": lambda: conn.listAllDomains(0),
}


def sequential(op):
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        op()
        n += 1
    return n / (time.perf_counter() - start)


def concurrent(op):
    counts = [0] * threads
    stop = threading.Event()

    def worker(i):
        while not stop.is_set():
            op()
            counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


out = {}
for name, op in OPS.items():
    op()  # warm up
    out[name] = {"sequential": sequential(op), "concurrent": concurrent(op)}
conn.close()
print(json.dumps(out))
