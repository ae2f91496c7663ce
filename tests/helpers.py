"""Helpers shared by several test modules (fixtures live in conftest.py files).

One section per area; each is kept by the tests of that area.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Future
from types import FrameType
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

import iothreads
from iothreads._pool import ThreadPool

from .conftest import WAIT, wait_until

# -- Deterministic thread interleavings --------------------------------------------------

_PACKAGE = os.path.dirname(iothreads.__file__) + os.sep

#: A line of code: (file name, line number).
Line = tuple[str, int]


def line_of(func: Callable[..., Any], text: str, *, offset: int = 0) -> Line:
    """The line of *func* that contains *text*, or the one *offset* lines from it."""
    func = inspect.unwrap(func)
    lines, first = inspect.getsourcelines(func)
    index = next(i for i, line in enumerate(lines) if text in line)
    return inspect.getsourcefile(func) or "", first + index + offset


class Gate:
    """A tracer (``sys.settrace``) that counts a thread's lines of iothreads
    code and stops the thread at chosen points, as trio's thread tests do.

    *stops* are taken in order: a number stops the thread before its n-th
    traced line (counting from 0), a ``Line`` before it runs that line.  At
    each stop ``stopped`` is set and the thread waits for ``resume`` (which
    is cleared again for the next stop).  ``stopped`` is also set when the
    thread reaches a line of *marks*.  ``lines`` records every line seen.
    """

    def __init__(self, *stops: int | Line, marks: Collection[Line] = ()) -> None:
        self._stops = list(stops)
        self.marks = frozenset(marks)
        self.lines: list[Line] = []
        self.stopped = threading.Event()
        self.resume = threading.Event()

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if not frame.f_code.co_filename.startswith(_PACKAGE):
            return None  # not our code: no line events from it
        return self._line

    def _line(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            line = (frame.f_code.co_filename, frame.f_lineno)
            if self._stops and self._stops[0] in (len(self.lines), line):
                self._stops.pop(0)
                self.stopped.set()
                if not self.resume.wait(WAIT):
                    raise TimeoutError("a stopped thread was never resumed")
                self.resume.clear()
            self.lines.append(line)
            if line in self.marks:
                self.stopped.set()
        return self._line

    def go_on(self) -> None:
        """Resume the thread from its stop, ready to see it stop again."""
        self.stopped.clear()
        self.resume.set()


class FakeClock:
    """A clock (ns) that moves 1 us per reading: a spin lasts a fixed number of steps."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


# -- QMP: the monitor and the command line ------------------------------------------------

INT64_MAX = 2**63 - 1

#: The properties of QEMU's event-loop-base type, the ones a main-loop has.
EVENT_LOOP_BASE_PROPS = ("aio-max-batch", "thread-pool-min", "thread-pool-max")
#: An iothread's properties in QEMU's schema order: its own, then its base type's.
IOTHREAD_PROPS = ("poll-max-ns", "poll-grow", "poll-shrink", *EVENT_LOOP_BASE_PROPS)


def qom_properties(names: tuple[str, ...]) -> list[dict[str, str]]:
    """What qom-list (of an object) and qom-list-properties answer for a type
    whose int properties are *names*: ``type`` first."""
    return [{"name": "type", "type": "string"}, *({"name": n, "type": "int"} for n in names)]


@contextlib.asynccontextmanager
async def qmp_client(
    address: str | tuple[str, int], *, negotiate: bool = True
) -> AsyncIterator[QMPClient]:
    """A ``qemu.qmp`` client connected to *address*, disconnected at the end."""
    client = QMPClient("test")
    client.negotiate = negotiate
    await client.connect(address)
    try:
        yield client
    finally:
        await client.disconnect()


async def qmp_error(
    client: QMPClient, cmd: str, args: dict[str, Any] | None = None
) -> tuple[str, str]:
    """(class, desc) of the error *cmd* must answer."""
    with pytest.raises(ExecuteError) as info:
        await client.execute(cmd, args)
    error = info.value.error.error
    return error.class_, error.desc


class RawClient:
    """A plain socket client, for what ``qemu.qmp`` would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str, *, negotiate: bool = True) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        assert "QMP" in await client.receive()
        if negotiate:
            assert await client.request({"execute": "qmp_capabilities"}) == {"return": {}}
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> Any:
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        assert line, "the monitor hung up"
        return json.loads(line)

    async def request(self, message: Any) -> Any:
        await self.send(json.dumps(message).encode() + b"\n")
        return await self.receive()

    async def at_eof(self) -> bool:
        """True if the monitor closed the connection (after any pending data)."""
        return await asyncio.wait_for(self.reader.read(), WAIT) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass  # the monitor closed first: closed all the same


def flood(hog: socket.socket) -> None:
    """Send, from the connected *hog* that will read nothing, what its socket
    takes at once of a negotiation and requests whose replies are ~15x larger."""
    hog.setblocking(False)
    try:
        hog.send(b'{"execute": "qmp_capabilities"}' + b'{"execute": "query-commands"}' * 4000)
    except BlockingIOError:
        pass


class StallWatch:
    """Tells when the monitor has stopped sending to a *hog* that reads nothing
    (its session is stuck on the full socket): the bytes waiting in the hog's
    socket stay the same, above zero, over three round trips of another client
    made between calls to :meth:`stalled`."""

    def __init__(self, hog: socket.socket) -> None:
        self._hog = hog
        self._deadline = time.monotonic() + WAIT
        self._pending = -1
        self._same = 0

    def stalled(self) -> bool:
        assert time.monotonic() < self._deadline, "the hog's session never filled its socket"
        now = struct.unpack("i", fcntl.ioctl(self._hog, termios.FIONREAD, b"\0" * 4))[0]
        self._same = self._same + 1 if now == self._pending and now > 0 else 0
        self._pending = now
        return self._same >= 3


async def add_iothread(client: QMPClient, id: str = "io0", **props: int) -> None:
    """object-add an iothread; *props* in attribute spelling (``poll_max_ns``)."""
    args = {"qom-type": "iothread", "id": id, **{k.replace("_", "-"): v for k, v in props.items()}}
    assert await client.execute("object-add", args) == {}


# -- Thread pools: tests/pool/ ------------------------------------------------------------

# Upper bound of every wait; far above anything a passing test needs.
BOUND = WAIT


class Pools:
    """Creates pools and gates; at teardown opens the gates, then shuts the pools down."""

    def __init__(self) -> None:
        self._pools: list[ThreadPool] = []
        self._gates: list[threading.Event] = []

    def new(self, *args: Any, **kwargs: Any) -> ThreadPool:
        pool = ThreadPool(*args, **kwargs)
        self._pools.append(pool)
        return pool

    def gate(self) -> threading.Event:
        gate = threading.Event()
        self._gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self._gates:
            gate.set()
        for pool in self._pools:
            pool.shutdown(wait=True)


def workers(name: str) -> list[str]:
    """Names of the live worker threads of the pool called *name*."""
    prefix = f"{name}-"
    return sorted(
        t.name
        for t in threading.enumerate()
        if t.name.startswith(prefix) and t.name[len(prefix) :].isdigit()
    )


def pool_threads(name: str) -> list[str]:
    """Names of every live thread of the pool called *name*, its spawner included."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(f"{name}-"))


def thread_name() -> str:
    return threading.current_thread().name


def blocker(gate: threading.Event, started: threading.Event | None = None) -> Callable[[], str]:
    """A function that signals *started*, waits (bounded) for *gate*, returns its thread."""

    def block() -> str:
        if started is not None:
            started.set()
        assert gate.wait(BOUND)
        return thread_name()

    return block


def occupy(pools: Pools, pool: ThreadPool, n: int) -> tuple[threading.Event, list[Future[str]]]:
    """Make *n* workers busy at once; returns the gate that frees them."""
    gate = pools.gate()
    futures = [pool.submit(blocker(gate)) for _ in range(n)]
    wait_until(lambda: pool.statistics().active == n)
    return gate, futures
