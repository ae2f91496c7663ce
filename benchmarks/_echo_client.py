"""The far end of the echo benchmark: a separate process, so the producer the
IOThread waits for holds no part of the benchmark process's GIL.

``python -m benchmarks._echo_client FD WARMUP SAMPLES``: sends one byte on the
inherited socket FD, waits for the echo, and times each round trip; prints a
JSON object with the samples (ns) and its CPU time over them (ns).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> None:
    fd, warmup, samples = (int(a) for a in sys.argv[1:4])
    sock = socket.socket(fileno=fd)
    clock = time.perf_counter_ns
    out = []
    cpu0 = 0
    for i in range(warmup + samples):
        if i == warmup:
            cpu0 = time.process_time_ns()
        t0 = clock()
        sock.send(b"x")
        if sock.recv(1) != b"x":
            raise SystemExit("echo lost")
        if i >= warmup:
            out.append(clock() - t0)
    print(json.dumps({"samples_ns": out, "cpu_ns": time.process_time_ns() - cpu0}))


if __name__ == "__main__":
    main()
