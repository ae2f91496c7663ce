"""Helpers shared by several test modules (fixtures live in conftest.py files).

Test modules import from here, never from each other or from a conftest.

One section per area; each is kept by the tests of that area.
"""

from __future__ import annotations

import abc
import ast
import asyncio
import contextlib
import fcntl
import inspect
import json
import math
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, Protocol, TypeVar

import pytest
from qemu.qmp import ExecuteError, QMPClient

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency where it installs
    uvloop = None  # type: ignore[assignment]

import iothreads
from iothreads import IOThread, glib
from iothreads._aio import _inbox
from iothreads._aio._wakeup import WakeupChannel
from iothreads._pool import ThreadPool
from iothreads._props import THREAD_POOL_LIMIT
from iothreads._runs_in import DEBUG
from iothreads.glib import MainContext, MainLoop, Source
from iothreads.glib._context import _thread_defaults
from iothreads.glib._driver import AsyncioDriver

# -- Basics: the bound on every wait, the loop kinds -------------------------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The bound on every wait in the tests: a hang fails the test instead of
#: blocking CI.
WAIT = 10.0
#: The bound on a child Python's whole run: its start alone (the interpreter,
#: uvloop, iothreads) takes tens of seconds on a machine loaded several
#: times over.
CHILD_WAIT = 120.0

LOOP_FACTORIES: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def gate_loop(io: IOThread) -> threading.Event:
    """Hold *io*'s loop in a callback until the returned event is set (to
    queue work behind it, or keep a pass from starting)."""
    entered = threading.Event()
    gate = threading.Event()

    def hold() -> None:
        entered.set()
        assert gate.wait(WAIT)

    io.call_soon_threadsafe(hold)
    assert entered.wait(WAIT)
    return gate


def wait_until(
    predicate: Callable[[], object], what: str = "the condition", *, within: float = WAIT
) -> None:
    """Wait, bounded by *within* seconds, for a state another thread reaches
    with no event to signal it; fail the test if it never comes."""
    # Short pauses first (most states come within microseconds), doubling up
    # to a thousandth of the bound.  A pause is a sleep in the kernel: a
    # never-set threading.Event's timed wait would be one too, but on the
    # free-threaded build it first spins on sched_yield(), a time slice a
    # yield beside busy processes (see ParkingEvent).
    interval, deadline = 50e-6, time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, within / 1000)


def open_fds() -> set[int]:
    return (
        {int(fd) for fd in os.listdir("/proc/self/fd")} if os.path.isdir("/proc/self/fd") else set()
    )


def refuse_thread_start(
    monkeypatch: pytest.MonkeyPatch, name: str, *, after: threading.Event | None = None
) -> None:
    """Make ``Thread.start()`` of the thread called *name* raise RuntimeError
    "can't start new thread", as when the system has no thread to give; with
    *after*, once that event is set (the start waits for it, bounded)."""
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name == name:
            if after is not None:
                assert after.wait(WAIT)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)


def task_of_a_closed_loop(
    loop_factory: LoopFactory, coroutine: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """Run *coroutine* as a task of a new loop up to its first wait, then
    close the loop under it, as an application that closes its loop with
    work pending does: whatever the task waits for has nobody to tell."""
    loop = loop_factory()
    task = loop.create_task(coroutine)
    loop.run_until_complete(asyncio.sleep(0))  # the task's first step runs before
    loop.close()
    # Pending on purpose: no "Task was destroyed but it is pending!" report
    # when it is collected.
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    return task


def refusing_executors(loop_factory: LoopFactory) -> LoopFactory:
    """A factory of loops of *loop_factory*'s kind whose
    ``set_default_executor`` raises TypeError: they keep their own."""
    probe = loop_factory()
    probe.close()

    class Refusing(type(probe)):  # type: ignore[misc]
        def set_default_executor(self, executor: object) -> None:
            raise TypeError("this loop keeps its own executor")

    return Refusing


def loop_errors(io: IOThread) -> list[dict[str, Any]]:
    """What reaches *io*'s loop exception handler from now on (an error in
    a callback, which no caller would see)."""
    errors: list[dict[str, Any]] = []
    assert io.loop is not None
    io.run_sync(io.loop.set_exception_handler, lambda loop, context: errors.append(context))
    return errors


class SlowToCancel:
    """A coroutine function for an IOThread that, once cancelled, ends only
    when the test sets ``release``.  Cancelled by the IOThread's stop, it
    holds the stop up in its clean-up (``cancelled`` is set), after the
    IOThread's inbox has closed."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.release: Future[None] = Future()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await asyncio.wrap_future(self.release)
            self.finished.set()
            raise


# -- Deterministic thread interleavings --------------------------------------------------

_PACKAGE = os.path.dirname(iothreads.__file__) + os.sep

#: A line of code: (file name, line number), or a native test point (see native()).
Line = tuple[str, int | str]


def line_of(func: Callable[..., Any], text: str, *, offset: int = 0) -> Line:
    """The line of *func* that contains *text*, or the one *offset* lines from it."""
    func = inspect.unwrap(func)
    lines, first = inspect.getsourcelines(func)
    index = next(i for i, line in enumerate(lines) if text in line)
    return inspect.getsourcefile(func) or "", first + index + offset


def _lines_under_lock(cls: type) -> frozenset[Line]:
    """The lines of *cls*'s ``with self._..._lock:`` blocks, the with lines included."""
    path = inspect.getsourcefile(cls) or ""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    first = inspect.getsourcelines(cls)[1]
    lines: set[Line] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            re.fullmatch(r"self\._\w*lock", ast.unparse(item.context_expr)) for item in node.items
        ):
            # The with line too: Python reports it again as the block exits,
            # before __exit__ releases the lock.
            end = node.end_lineno or node.lineno
            lines.update((path, first - 1 + n) for n in range(node.lineno, end + 1))
    return frozenset(lines)


#: Lines a Gate never stops a thread at: they hold a lock, and the other
#: thread would only stall on it.  The interleavings that matter fall at the
#: edges of those critical sections, where the Gate does stop.
_LOCKED = _lines_under_lock(WakeupChannel)


def native(point: str) -> Line:
    """A test point of the native core, as a Gate sees it."""
    return ("<native>", point)


#: The Gate of each thread that has one installed, for the native core's hook.
_GATES: dict[int, Gate] = {}
_GATES_LOCK = threading.Lock()


def _native_point(point: str) -> None:
    gate = _GATES.get(threading.get_ident())
    if gate is not None:
        gate._line(native(point))


class EventLike(Protocol):
    """What a :class:`Gate` needs of an event: ``threading.Event``'s methods."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float) -> bool: ...


class ParkingEvent:
    """``threading.Event``'s ``set``, ``clear``, ``is_set`` and ``wait`` on an
    eventfd, whose waiter parks in the kernel at once; ``close()`` frees it.

    On free-threaded CPython 3.13 a thread that finds a lock taken spins up
    to 40 times on ``sched_yield()`` before it parks, and every blocking
    primitive of ``threading`` (an ``Event`` is a lock in a ``Condition``)
    does.  Beside busy processes each yield gives a time slice away, so a
    hand-off through ``threading.Event`` costs tens of milliseconds there
    (docs/design.md, "Measurements"); the interleaving trials make a dozen
    hand-offs each, thousands of times.
    """

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        os.eventfd_write(self._fd, 1)

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)

    def is_set(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: float) -> bool:
        """True once set; False when *timeout* seconds passed first."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(math.ceil(timeout * 1000)))

    def close(self) -> None:
        os.close(self._fd)


class Gate:
    """A tracer (``sys.settrace``) that counts a thread's lines of iothreads
    code and stops the thread at chosen points, as trio's thread tests do.

    *stops* are taken in order: a number stops the thread before its n-th
    traced line (counting from 0), a ``Line`` before it runs that line.  At
    each stop ``stopped`` is set and the thread waits for ``resume`` (which
    is cleared again for the next stop).  ``stopped`` is also set when the
    thread reaches a line of *marks*.  ``lines`` records every line seen.
    *event* makes those two events (``threading.Event``, or a
    ``ParkingEvent`` where the hand-offs are many); ``reset()`` readies the
    gate for another run.

    A stop that falls inside a critical section of one of *locks* is put off
    to the thread's first line outside it: stopped there, the thread would
    block every other thread that needs the lock, an interleaving mutual
    exclusion rules out anyway.  The wake-up channel's sections are known by
    their lines (``_LOCKED``); a lock whose sections run code that also runs
    unlocked (the locked inbox calls ``PyInbox``'s methods under its lock)
    is known only by who holds it, hence an ``OwnedLock``.
    """

    def __init__(
        self,
        *stops: int | Line,
        marks: Collection[Line] = (),
        locks: Collection[OwnedLock] = (),
        event: Callable[[], EventLike] = threading.Event,
    ) -> None:
        self.marks = frozenset(marks)
        self.locks = tuple(locks)
        self.stopped = event()
        self.resume = event()
        self._outer: Any = None
        # Which installation a frame's tracer belongs to: under an outer
        # tracer (coverage's), frames entered while the gate was installed
        # keep calling it after uninstall(), and a reset gate must not take
        # their lines for its own.
        self._installation = 0
        self.reset(*stops)

    def reset(self, *stops: int | Line) -> None:
        """Start afresh with *stops*, for a thread that no longer runs through it."""
        self._stops = list(stops)
        self._put_off = False  # the next stop is due, outside a critical section
        self.lines: list[Line] = []
        self.stopped.clear()
        self.resume.clear()

    def install(self) -> None:
        """Trace the calling thread from now on, beside the tracer it already
        has (coverage's, say), which goes on seeing every event; the native
        core's test points it reaches count as lines ``native(point)``."""
        self._outer = sys.gettrace()
        self._installation += 1
        sys.settrace(self._trace)
        with _GATES_LOCK:
            _GATES[threading.get_ident()] = self
            if _inbox.native_core is not None:
                _inbox.native_core._set_test_hook(_native_point)

    def uninstall(self) -> None:
        """Stop tracing the calling thread; its former tracer stays."""
        self._installation += 1
        sys.settrace(self._outer)
        with _GATES_LOCK:
            _GATES.pop(threading.get_ident(), None)
            if not _GATES and _inbox.native_core is not None:
                _inbox.native_core._set_test_hook(None)

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        outer = self._outer(frame, event, arg) if self._outer is not None else None
        if not frame.f_code.co_filename.startswith(_PACKAGE):
            return outer  # not our code: no line events from it for us
        installation = self._installation

        def local(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal outer
            if outer is not None:
                outer = outer(frame, event, arg)
            if event == "line" and installation == self._installation:
                self._line((frame.f_code.co_filename, frame.f_lineno))
            return local

        return local

    def _line(self, line: Line) -> None:
        if self._stops and self._stops[0] == len(self.lines) and line in _LOCKED:
            self._stops[0] += 1  # not inside a critical section: the next line
        due = self._put_off or (bool(self._stops) and self._stops[0] in (len(self.lines), line))
        self._put_off = due and any(lock.held_here() for lock in self.locks)
        if due and not self._put_off:
            self._stops.pop(0)
            self.stopped.set()
            if not self.resume.wait(WAIT):
                raise TimeoutError("a stopped thread was never resumed")
            self.resume.clear()
        self.lines.append(line)
        if line in self.marks:
            self.stopped.set()

    def go_on(self) -> None:
        """Resume the thread from its stop, ready to see it stop again."""
        self.stopped.clear()
        self.resume.set()


class OwnedLock:
    """A ``threading.Lock`` (as a context manager) that knows which thread
    holds it, for a :class:`Gate` to keep its stops out of the lock's
    critical sections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __enter__(self) -> bool:
        self._lock.acquire()
        self._owner = threading.get_ident()
        return True

    def __exit__(self, *exc_info: object) -> None:
        self._owner = None
        self._lock.release()

    def held_here(self) -> bool:
        return self._owner == threading.get_ident()


@contextlib.contextmanager
def stdin_closed() -> Iterator[None]:
    """Descriptor 0 free, as in a daemon that closed its stdin: the next
    descriptor opened takes it.  (Descriptor 0 is a descriptor like any
    other: code that takes a negative one for "none" must not take 0 so.)"""
    saved = os.dup(0)
    os.close(0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


class FakeClock:
    """A clock (ns) that moves *step_ns* (1 us) per reading: a spin lasts a
    fixed number of steps."""

    def __init__(self, step_ns: int = 1000) -> None:
        self.now = 0
        self.step_ns = step_ns

    def __call__(self) -> int:
        self.now += self.step_ns
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


def _not_json(token: str) -> Any:
    raise AssertionError(f"the monitor sent {token}, which is not JSON")


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
        """The next message, which must be strict JSON (no NaN or Infinity)."""
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        assert line, "the monitor hung up"
        return json.loads(line, parse_constant=_not_json)

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
    except (BrokenPipeError, ConnectionResetError):
        # The monitor hung up first: an idle timeout shorter than this
        # thread's way from connect() to send() (a test's 1 ms, on a busy
        # machine) closes the hog before it sent anything; closed all the same.
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


class _WatchedWanted(threading.Condition):
    """The spawner's condition, noting (under the pool lock, like every use
    of it) how many notifications it got and how many the spawner had seen
    when it last went to sleep."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.notified = 0
        self.seen = -1  # none yet: the spawner has not slept
        self.sleeping = False

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)

    def wait(self, timeout: float | None = None) -> bool:
        self.seen, self.sleeping = self.notified, True
        try:
            return super().wait(timeout)
        finally:
            self.sleeping = False


def watch_spawner(pool: ThreadPool) -> Callable[[], bool]:
    """A predicate for ``wait_until``: *pool*'s spawner has caught up, that is,
    it sleeps with no notification it has not looked at (everything the
    limits or the submitters asked of it so far is done).  Call it before the
    pool has a spawner thread: one already asleep would miss notifications."""
    spawner = pool._spawner
    assert spawner._thread is None, "the pool has a spawner already"
    wanted = _WatchedWanted(pool._lock)
    spawner._wanted = wanted

    def caught_up() -> bool:
        with pool._lock:
            return wanted.sleeping and wanted.seen == wanted.notified

    return caught_up


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


# -- GLib contexts and their drivers: tests/test_glib_*.py --------------------------------

T = TypeVar("T")


#: WAIT in milliseconds, for GLib timeouts that must never fire in a test.
WAIT_MS = int(WAIT * 1000)


def in_thread(fn: Callable[[], T]) -> T:
    """Run *fn* in a new thread, wait for it, return its result."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(WAIT)


def run_elsewhere(
    schedule: Callable[[Callable[[], None]], object], fn: Callable[..., T], *args: Any
) -> T:
    """Run ``fn(*args)`` through *schedule*, which runs a callable in another
    thread, and wait for its result (or its exception)."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)

    schedule(run)
    return future.result(WAIT)


def not_owner_error(message: str) -> str:
    """What a call from a thread that does not own the context raises:
    *message* from the method's own check, or in asyncio's debug mode that of
    its ``@runs_in(OWNER)`` marker, which comes first."""
    return "must run in the thread that owns the context" if DEBUG else message


def keep_calling(fn: Callable[..., object], *args: object) -> Callable[..., bool]:
    """A source callback running ``fn(*args, *callback_args)`` that keeps its source."""

    def callback(*callback_args: object) -> bool:
        fn(*args, *callback_args)
        return glib.SOURCE_CONTINUE

    return callback


def record_thread(into: list[int], done: threading.Event) -> bool:
    """A source callback: note the thread it runs in, signal, remove the source."""
    into.append(threading.get_ident())
    done.set()
    return glib.SOURCE_REMOVE


class Probe(Source):
    """A source that is never ready; ``prepared`` is set by the first prepare
    (the first step of an iteration) that finds *condition* true.
    """

    def __init__(self, condition: Callable[[], bool] = lambda: True) -> None:
        super().__init__()
        self.condition = condition
        self.prepared = threading.Event()

    def prepare(self) -> tuple[bool, int]:
        if self.condition():
            self.prepared.set()
        return False, -1


class Rounds(Probe):
    """A never-ready source at PRIORITY_HIGH counting the context's prepares.

    Every iteration starts with a prepare (a driver's round ends with one),
    and a prepare always reaches the most urgent source first, so ``count``
    read by a callback names the iteration it is dispatched in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.set_priority(glib.PRIORITY_HIGH)

    def prepare(self) -> tuple[bool, int]:
        self.count += 1
        return super().prepare()


class Finalized(Source):
    """A source that records the threads its finalize() ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.finalized_in: list[int] = []

    def finalize(self) -> None:
        self.finalized_in.append(threading.get_ident())


def thread_defaults() -> tuple[MainContext | None, list[MainContext]]:
    """The calling thread's default context and its pushed stack."""
    return MainContext.get_thread_default(), list(_thread_defaults.stack)


@contextlib.contextmanager
def new_context() -> Iterator[MainContext]:
    """A fresh context; on exit its sources are destroyed and its pipe closed."""
    context = MainContext()
    try:
        yield context
    finally:
        context._destroy_all()
        context._close_waker()


def iterate_until(context: MainContext, predicate: Callable[[], bool]) -> None:
    """Run blocking iterations of *context* until *predicate*; a watchdog bounds them."""
    expired: list[bool] = []
    watchdog = glib.Timeout(WAIT_MS, glib.PRIORITY_HIGH)
    watchdog.set_callback(expired.append, True)
    watchdog.attach(context)
    try:
        while not predicate() and not expired:
            context.iteration(True)
    finally:
        watchdog.destroy()
    assert predicate(), "watchdog expired"


@contextlib.contextmanager
def loop_in_thread(
    context: MainContext, started: Callable[[MainLoop], object] | None = None
) -> Iterator[tuple[MainLoop, threading.Thread]]:
    """A MainLoop running *context* in a plain thread, quit and joined on exit.

    Entered once ``started(loop)`` is true (``MainLoop.is_running``: run()
    began, and may be waiting for the context); by default, once the loop
    has dispatched an idle source.
    """
    loop = MainLoop(context)
    dispatched = threading.Event()
    if started is None:
        glib.idle_add(dispatched.set, context=context)  # returns None: runs once
    thread = threading.Thread(target=loop.run, name="glib-loop")
    thread.start()
    try:
        if started is None:
            assert dispatched.wait(WAIT)
        else:
            wait_until(lambda: started(loop), "the MainLoop to start")
        yield loop, thread
    finally:
        loop.quit()
        thread.join(WAIT)
    assert not thread.is_alive()


class LoopThread:
    """An asyncio loop of one kind (a LOOP_FACTORIES key) running in a plain thread."""

    def __init__(self, kind: str) -> None:
        self.loop = LOOP_FACTORIES[kind]()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncio-loop")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the loop's thread and return its result."""
        return run_elsewhere(self.loop.call_soon_threadsafe, fn, *args)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.loop.close()


class Driver(abc.ABC):
    """A context run by a thread of its own, as a test sees it.

    ``context`` is the context, ``ident`` the driving thread, ``loop`` its
    asyncio loop (``None`` for a MainLoop).  ``call(fn, *args)`` runs
    ``fn(*args)`` on the driving thread and returns its result: for a
    MainLoop, from a PRIORITY_HIGH idle source; for the others, from an
    asyncio callback, outside any round of the context.
    """

    context: MainContext
    ident: int
    loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the driving thread and return its result."""

    def flush(self) -> None:
        """Return once the driving thread has finished what it runs now (a
        dispatch, a round of the context) and what was queued before."""
        self.call(lambda: None)


class MainLoopDriver(Driver):
    """A ``glib.MainLoop`` running a fresh context in a plain thread."""

    def __init__(self, context: MainContext, thread: threading.Thread) -> None:
        self.context = context
        assert thread.ident is not None
        self.ident = thread.ident

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return run_elsewhere(
            lambda run: self.context.invoke(run, priority=glib.PRIORITY_HIGH), fn, *args
        )


class AsyncioLoopDriver(Driver):
    """Something that drives the context from an asyncio loop."""

    loop: asyncio.AbstractEventLoop

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` on the loop, from another thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def run_coroutine(self, coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``coroutine()`` as a task on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine(), self.loop).result(WAIT)


class StandaloneAsyncioDriver(AsyncioLoopDriver):
    """An ``AsyncioDriver`` serving a fresh context on a loop in a thread."""

    def __init__(self, loop_thread: LoopThread, context: MainContext) -> None:
        self.loop_thread = loop_thread
        self.context = context
        self.loop = loop_thread.loop
        assert loop_thread.thread.ident is not None
        self.ident = loop_thread.thread.ident

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.loop_thread.call(fn, *args)


class IOThreadDriver(AsyncioLoopDriver):
    """An IOThread serving its own context (``get_g_main_context()``)."""

    def __init__(self, io: IOThread) -> None:
        self.io = io
        self.context = io.get_g_main_context()
        assert io.loop is not None
        self.loop = io.loop
        self.ident = io.run_sync(threading.get_ident)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.io.run_sync(fn, *args)

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        self.io.call_soon_threadsafe(fn, *args)

    def run_coroutine(self, coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return self.io.submit(coroutine).result(WAIT)


#: Every driver of a context, as fixture ids: a MainLoop in a plain thread,
#: an AsyncioDriver on a loop in a thread, an IOThread; one of each of the
#: last two per loop kind.
ASYNCIO_DRIVERS = [
    f"{driver}-{kind}" for driver in ("driver", "iothread") for kind in LOOP_FACTORIES
]
DRIVERS = ["mainloop", *ASYNCIO_DRIVERS]


@contextlib.contextmanager
def running_driver(name: str) -> Iterator[Driver]:
    """The driver *name* (one of DRIVERS) running a context; on exit it is
    stopped, and the context's remaining sources destroyed and finalised."""
    if name == "mainloop":
        with new_context() as context, loop_in_thread(context) as (_, thread):
            yield MainLoopDriver(context, thread)
        return
    kind, loop_kind = name.split("-")
    if kind == "iothread":
        with IOThread("g0", loop_factory=LOOP_FACTORIES[loop_kind]) as io:
            yield IOThreadDriver(io)
        return
    with new_context() as context, LoopThread(loop_kind) as loop_thread:
        driver = loop_thread.call(AsyncioDriver, context, loop_thread.loop)
        loop_thread.call(driver.start)
        try:
            yield StandaloneAsyncioDriver(loop_thread, context)
        finally:
            loop_thread.call(driver.close)


def run_python(
    code: str,
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """*code* run to its end by a child Python of this venv (bounded by
    CHILD_WAIT), its output captured as text; the caller checks the exit."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=CHILD_WAIT,
        cwd=cwd,
        env=env,
        check=False,
    )


@contextlib.contextmanager
def child_process(
    argv: list[str], cwd: str | os.PathLike[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with piped, unbuffered output, killed if still running at the end."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: select() sees every line
        cwd=cwd,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def first_line(proc: subprocess.Popen[bytes], who: str) -> bytes:
    """The next line *proc* prints (bounded wait: a child's first may come
    only once it has started); *who* names it in failures."""
    assert proc.stdout is not None
    deadline = time.monotonic() + CHILD_WAIT
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
        assert readable, f"{who} printed no ready line in time"
        byte = proc.stdout.read(1)
        assert byte, f"{who} exited before it was ready: {proc.wait(WAIT)}"
        line += byte
    return line


# -- Thread-pool limits: tests/test_pool_limits.py, tests/qmp/test_pool_limits.py -----------

#: A pool limit QEMU accepts (INT_MAX) and no process can honour.
HUGE = 2**31 - 1


def above_limit(name: str, value: int) -> str:
    """The text of the refusal of *value* for the property *name*."""
    return (
        f"{name} value {value} is above {THREAD_POOL_LIMIT}, the most worker threads "
        f"a pool may have; use a value in [0, {THREAD_POOL_LIMIT}]"
    )


def hold_thread_starts(monkeypatch: pytest.MonkeyPatch, prefix: str) -> threading.Event:
    """Make every ``Thread.start()`` of a worker named *prefix* and a number
    wait for the returned event (bounded); the test sets it, also when it
    fails.  The spawner starts those: it is held, not the writer."""
    real_start = threading.Thread.start
    may_start = threading.Event()

    def held_start(thread: threading.Thread) -> None:
        if re.fullmatch(re.escape(prefix) + r"\d+", thread.name):
            assert may_start.wait(BOUND)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", held_start)
    return may_start


# -- Forked children: tests/test_fork.py, tests/qmp/test_fork.py -------------------------

#: What a forked child saw, as JSON.
Report = dict[str, Any]


def report_from_child(write_fd: int, inspect: Callable[[], Report]) -> None:
    """In the child: write *inspect*'s report to *write_fd* and exit, never
    returning to the caller (pytest's frames, or the parent's loop)."""
    try:
        data = json.dumps(inspect()).encode()
    except BaseException as exc:
        data = json.dumps({"child failed": repr(exc)}).encode()
    try:
        os.write(write_fd, data)
    finally:
        os._exit(0)


def fork_and_inspect(inspect: Callable[[], Report], fork: Callable[[], int] = os.fork) -> Report:
    """Fork (with *fork*, in the caller's thread); return the child's report."""
    read_fd, write_fd = os.pipe()
    try:
        pid = fork()
        if pid == 0:
            report_from_child(write_fd, inspect)
        os.close(write_fd)
        write_fd = -1
        data = b""
        while True:
            readable, _, _ = select.select([read_fd], [], [], WAIT)
            if not readable:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child did not report in time")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
        # Its pipe closed: the child is exiting; the wait is short.
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report: Report = json.loads(data)
        return report
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
