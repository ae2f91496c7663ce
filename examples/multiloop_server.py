"""A multi-loop TCP server: one IOThread per CPU, all accepting on one port.

    python examples/multiloop_server.py --port 8765
    PYTHON_GIL=0 python3.13t examples/multiloop_server.py --port 8765

Each IOThread runs its own event loop, and on it an asyncio server bound to
the same port with ``SO_REUSEPORT``: the kernel spreads incoming connections
over the listening sockets, and a connection is served from start to end by
the loop that accepted it, with no hand-off between threads on the request
path.  On free-threaded CPython the loops run Python code in parallel, so
requests per second grow with the loops; under the GIL they take turns, and
N loops serve about what one does.  ``--loops 1`` is the single-loop server
to compare with (``python -m benchmarks --only scaling`` does, with load from
another process).

The protocol: one JSON object per line, answered by one line, in order::

    -> {"id": 7, "values": [3, 1, 4], "rounds": 100}
    <- {"id": 7, "result": 52683434}
    <- {"id": null, "error": "..."}      (a request it cannot serve)

``result`` is ``checksum(values, rounds)``: plain Python arithmetic standing
for the work an application does per request.  A line that is not such a
request gets an error naming what is wrong, and the connection goes on.

SIGINT or SIGTERM stops it: the servers stop listening, each loop closes
its connections once their replies are sent, the IOThreads stop, and the
program prints how many requests each loop served, then exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import sysconfig
from collections.abc import Callable, Sequence
from typing import Any

from iothreads import IOThread

#: Bounds on one request's work and size, so that no single line can make a
#: loop busy for long: a server shares each loop among all its connections.
MAX_ROUNDS = 10_000
MAX_VALUES = 1_000
#: The longest request line read (asyncio's default stream limit).
MAX_LINE = 64 * 1024
#: How long a stopping server waits for a client to take its last replies.
CLOSE_S = 5.0


class BadRequest(ValueError):
    """A request line the server cannot serve; the message says why."""


def checksum(values: Sequence[int], rounds: int) -> int:
    """The per-request work: a polynomial hash of *values* modulo 10^9 + 7,
    *rounds* times over."""
    acc = 0
    for _ in range(rounds):
        for v in values:
            acc = acc * 31 + v
        # Reduced once a round, not once a value: the same hash, and far fewer
        # uses of the modulus.  On free-threaded 3.13 a constant that is not
        # immortal (an int outside -5..256 in an imported module) is one
        # reference count that every thread running this loop updates, and
        # per value it held two threads to 1.5x one thread's throughput.
        acc %= 1_000_000_007
    return acc


def handle(line: bytes) -> bytes:
    """One request line in, one reply line out (runs in the loop that read it)."""
    request_id: Any = None
    try:
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise BadRequest(f"not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise BadRequest(f"a request is a JSON object, not {json.dumps(request)}")
        request_id = request.get("id")
        values = request.get("values")
        rounds = request.get("rounds", 1)
        if not isinstance(values, list) or len(values) > MAX_VALUES:
            raise BadRequest(f"'values' must be a list of at most {MAX_VALUES} integers")
        for v in values:
            if not _is_int(v):
                raise BadRequest(f"'values' must hold integers only, not {json.dumps(v)}")
        if not _is_int(rounds) or not 0 <= rounds <= MAX_ROUNDS:
            raise BadRequest(
                f"'rounds' must be an integer in [0, {MAX_ROUNDS}], not {json.dumps(rounds)}"
            )
        reply = {"id": request_id, "result": checksum(values, rounds)}
    except BadRequest as exc:
        reply = {"id": request_id, "error": str(exc)}
    return json.dumps(reply).encode() + b"\n"


def _is_int(value: object) -> bool:
    # JSON's true and false arrive as bool, which is an int subclass: not a number here.
    return isinstance(value, int) and not isinstance(value, bool)


class Loop:
    """One IOThread and the server on its loop; the fields are that loop's alone."""

    def __init__(self, index: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None):
        self.io = IOThread(f"server{index}", loop_factory=loop_factory)
        self.server: asyncio.AbstractServer | None = None
        self.connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.served = 0

    # runs in the IOThread
    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        try:
            while line := await reader.readline():
                writer.write(handle(line))
                self.served += 1
                await writer.drain()
        except ValueError:
            # A line past MAX_LINE: the stream cannot be resynchronised.
            writer.write(b'{"id": null, "error": "request line too long"}\n')
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            del self.connections[task]
            writer.close()

    # runs in the IOThread
    async def listen(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(
            self.serve_client, host, port, reuse_port=True, limit=MAX_LINE
        )
        return int(self.server.sockets[0].getsockname()[1])

    # runs in the IOThread
    async def shut_down(self) -> None:
        """Stop listening, then close every connection once its replies are sent.

        Closing a connection ends its handler (its read sees the end of the
        stream), so the IOThread's stop finds no handler left to cancel.
        A client that reads nothing for CLOSE_S keeps its replies unsent: its
        connection is aborted.
        """
        if self.server is not None:
            # Not wait_closed(): since Python 3.12 it also waits for every
            # connection to end, which is what the lines below do.
            self.server.close()
        await asyncio.sleep(0)  # connections accepted just before start their handlers
        while self.connections:
            for writer in self.connections.values():
                writer.close()
            _, stuck = await asyncio.wait(set(self.connections), timeout=CLOSE_S)
            for task in stuck:
                self.connections[task].transport.abort()
            if stuck:
                await asyncio.wait(stuck)


async def serve(host: str, port: int, loops: int, loop_kind: str | None) -> int:
    """Serve on *loops* IOThreads until SIGINT or SIGTERM (runs in the main thread)."""
    factory = _loop_factory(loop_kind)
    stop = asyncio.Event()
    main_loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        main_loop.add_signal_handler(sig, stop.set)
    # The IOThreads are left unpinned: the scheduler places them, and a client
    # on the same machine can share their CPUs.  IOThread(cpu_affinity=...)
    # pins one where the machine is the server's alone.
    servers = [Loop(i, factory) for i in range(loops)]
    started: list[Loop] = []
    try:
        for loop in servers:
            await loop.io.astart()
            started.append(loop)
            # The first binds (port 0 picks a free one); the others join its port.
            port = await loop.io.run(loop.listen, host, port)
        print(
            f"multiloop_server: listening on {host}:{port}, {loops} loop(s), {_build()}",
            flush=True,
        )
        await stop.wait()
    finally:
        for loop in started:
            await loop.io.run(loop.shut_down)
        for loop in started:
            await loop.io.aclose()
    served = ", ".join(str(loop.served) for loop in servers)
    print(f"multiloop_server: stopped; requests served per loop: {served}", flush=True)
    return 0


def _loop_factory(kind: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The IOThreads' loop: uvloop, the stdlib's, or None for iothreads' default choice."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    return None


def _build() -> str:
    """Which CPython runs this, and whether the loops can run Python in parallel."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    build = "free-threaded build" if free_threaded else "GIL build"
    return f"{build}, GIL {'enabled' if gil_enabled else 'disabled'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free)")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parser.add_argument(
        "--loops",
        type=int,
        default=cpus or 1,
        help="IOThreads, each with its own loop and listening socket (default: one per CPU)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help="the IOThreads' event loop (default: uvloop where installed)",
    )
    args = parser.parse_args(argv)
    if args.loops < 1:
        parser.error(f"--loops must be at least 1, not {args.loops}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], not {args.port}")
    return asyncio.run(serve(args.host, args.port, args.loops, args.loop))


if __name__ == "__main__":
    sys.exit(main())
