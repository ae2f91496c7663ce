"""The load of the scaling benchmark's server case: a separate process, so
the server's loops share none of their interpreter with the load.

``python -m benchmarks._load_client PORT REQUEST WARMUP_S DURATION_S
[CONNECTIONS DEPTH]``: opens CONNECTIONS connections to 127.0.0.1:PORT and
keeps DEPTH copies of the line REQUEST in flight on each (a closed loop:
each reply sends the next request).  After WARMUP_S seconds it counts
replies and times each request, from its write to its reply, for DURATION_S
seconds; then it stops sending and waits for what is in flight.  Prints a
JSON object: ``requests`` and ``duration_s`` of the measured stretch, the
latency ``samples_ns``, its CPU time over its whole life (``cpu_ns``) and
the replies it saw in all (``replies``).  A reply that is an error, or a
connection the server closes, fails it (exit status 1).

Many connections spread over the server's listening sockets (the kernel
hashes each connection to one); with several requests in flight each, a
loop with any connection at all always has work, however unevenly they fall.
The client does little per reply (it counts newlines and writes the
prepared request back), so that its CPU takes little from the server's.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from typing import cast

#: The defaults: connections over the server's loops, and requests in flight on each.
CONNECTIONS = 16
DEPTH = 4


class _Load:
    """What the connections share: the phase, and the measured figures."""

    def __init__(self) -> None:
        self.measuring = False
        self.sending = True
        self.samples_ns: list[int] = []
        self.replies = 0
        self.in_flight = 0
        self.drained = asyncio.Event()
        self.failure: str | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, load: _Load, request: bytes, depth: int) -> None:
        self.load = load
        self.request = request
        self.depth = depth
        self.sent_at: collections.deque[int] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._send(self.depth)

    def _send(self, n: int) -> None:
        assert self.transport is not None
        now = time.perf_counter_ns()
        self.sent_at.extend([now] * n)
        self.load.in_flight += n
        self.transport.write(self.request * n)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        load = self.load
        if b'"error"' in data:
            load.failure = f"the server answered with an error: {data[:200]!r}"
        n = data.count(b"\n")
        load.replies += n
        load.in_flight -= n
        for _ in range(n):
            sent = self.sent_at.popleft()
            if load.measuring:
                load.samples_ns.append(now - sent)
        if load.sending:
            self._send(n)
        elif load.in_flight == 0:
            load.drained.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.sending or self.sent_at:
            self.load.failure = f"the server closed a connection ({exc or 'EOF'})"
            self.load.drained.set()


async def run(
    port: int, request: bytes, warmup_s: float, duration_s: float, connections: int, depth: int
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    load = _Load()
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(
            lambda: _Connection(load, request, depth), "127.0.0.1", port
        )
        transports.append(transport)
    await asyncio.sleep(warmup_s)
    load.measuring = True
    count0, t0 = load.replies, time.perf_counter()
    await asyncio.sleep(duration_s)
    load.measuring = False
    count1, t1 = load.replies, time.perf_counter()
    load.sending = False
    if load.in_flight:
        await asyncio.wait_for(load.drained.wait(), 30)
    for transport in transports:
        transport.close()
    if load.failure:
        raise SystemExit(load.failure)
    return {
        "requests": count1 - count0,
        "duration_s": t1 - t0,
        "samples_ns": load.samples_ns,
        "replies": load.replies,
    }


def main() -> None:
    port, request = int(sys.argv[1]), sys.argv[2].encode() + b"\n"
    warmup_s, duration_s = float(sys.argv[3]), float(sys.argv[4])
    connections = int(sys.argv[5]) if len(sys.argv) > 5 else CONNECTIONS
    depth = int(sys.argv[6]) if len(sys.argv) > 6 else DEPTH
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        figures = runner.run(run(port, request, warmup_s, duration_s, connections, depth))
    figures["cpu_ns"] = time.process_time_ns()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
