"""EventLoopBase and IOThread: a dedicated thread running one event loop.

QEMU's ``iothread.c`` and ``event-loop-base.c`` in asyncio terms.  An
``IOThread`` owns a thread named ``IO <id>``, the event loop inside it and that
loop's ``AioContext``.  Work reaches it from any thread through the
AioContext's inbox; results go back to the caller's loop (``run``) or to a
``concurrent.futures.Future`` (``submit``).

Locks and owners:

* ``EventLoopBase._lock`` guards the property values (a write is validated,
  then committed under the lock, so readers never see half an update) and the
  lifecycle fields of ``IOThread`` (``_thread``, ``_aio``, ``_loop``...).
* ``_USER_OBJECTS._lock`` guards the ``/objects`` container.
* Everything an IOThread does to its loop runs in its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ctypes
import ctypes.util
import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar, overload

from . import glib
from ._aio import AioContext
from ._errors import InvalidParameterValue, IOThreadStopped, PropertyNotFound
from ._pool import ThreadPool
from ._props import (
    EVENT_LOOP_BASE_DEFAULTS,
    IOTHREAD_DEFAULTS,
    check_id,
    check_properties,
    wire_name,
)

__all__ = [
    "EventLoopBase",
    "IOThread",
    "MainLoop",
    "current_iothread",
    "in_iothread",
]

T = TypeVar("T")

_logger = logging.getLogger(__name__)

#: Seconds a stopping IOThread waits for its cancelled tasks, and then for
#: its pool's running calls, before it logs a warning naming what it waits
#: for.  It goes on waiting, as ``asyncio.run()`` does: abandoning a task
#: would skip its clean-up, and a thread cannot be interrupted.
_STOP_WARNING_DELAY = 5.0


class _StopWatch:
    """Warns once when a stop has taken _STOP_WARNING_DELAY s, naming what it waits for.

    One deadline for the whole stop, from its start: each wait alone may be
    short while together they hold the stop up (tasks that start successors
    when cancelled, then a slow pool call).  Runs in the stopping IOThread.
    """

    def __init__(self, iothread_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self._id = iothread_id
        self._loop = loop
        self._start = loop.time()
        self._warned = False

    async def wait(self, waited: asyncio.Future[Any], what: Callable[[], str | None]) -> None:
        """Await *waited*; past the deadline, warn (once) that the stop waits for what().

        what() returns None when there is nothing to name after all (what was
        waited for finished as the deadline came): no warning then.
        """
        if not self._warned:
            left = self._start + _STOP_WARNING_DELAY - self._loop.time()
            done, _ = await asyncio.wait([waited], timeout=max(0.0, left))
            description = None if done else what()
            if description is not None:
                self._warned = True
                _logger.warning(
                    "IOThread %r has been stopping for %.1f s; it waits for %s",
                    self._id,
                    self._loop.time() - self._start,
                    description,
                )
        await waited


LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# -- the /objects container ---------------------------------------------------


class _ObjectContainer:
    """The ``/objects`` container of user objects (QEMU's object_get_objects_root).

    Lives here, below the ``objects`` module, so that an IOThread can register
    itself when it starts without importing the layer above it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[str, EventLoopBase] = {}  # guarded by _lock

    def add(self, obj: EventLoopBase) -> None:
        """Raises: InvalidParameterValue: the id is taken (QEMU's wording)."""
        with self._lock:
            if obj.id in self._children:
                raise InvalidParameterValue(
                    f"attempt to add duplicate property '{obj.id}' to object (type 'container')"
                )
            self._children[obj.id] = obj

    def remove(self, obj: EventLoopBase) -> None:
        with self._lock:
            if self._children.get(obj.id) is obj:
                del self._children[obj.id]

    def get(self, id: str) -> EventLoopBase | None:
        with self._lock:
            return self._children.get(id)

    def snapshot(self) -> list[EventLoopBase]:
        """The children in the order they were added."""
        with self._lock:
            return list(self._children.values())


USER_OBJECTS: Final = _ObjectContainer()

# -- properties ---------------------------------------------------------------


class _Int64Property:
    """``obj.poll_max_ns`` <-> ``obj.get_property("poll-max-ns")``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._wire = wire_name(name)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: EventLoopBase, objtype: type | None = None) -> int: ...
    def __get__(self, obj: EventLoopBase | None, objtype: type | None = None) -> int | Self:
        if obj is None:
            return self
        return obj.get_property(self._wire)

    def __set__(self, obj: EventLoopBase, value: int) -> None:
        obj.set_property(self._wire, value)


class EventLoopBase:
    """What IOThread and MainLoop share (QEMU's event-loop-base).

    Properties: ``aio_max_batch``, ``thread_pool_min``, ``thread_pool_max``;
    each int64, validated as QEMU does, readable and writable at any time.
    """

    #: the QOM type name
    qom_type: ClassVar[str] = "event-loop-base"
    #: wire name -> default of every property this type has
    property_defaults: ClassVar[Mapping[str, int]] = EVENT_LOOP_BASE_DEFAULTS

    aio_max_batch = _Int64Property()
    thread_pool_min = _Int64Property()
    thread_pool_max = _Int64Property()

    def __init__(self, id: str, props: Mapping[str, object]) -> None:
        """Validate everything; raise before any state exists."""
        self._id = check_id(id)
        self._lock = threading.RLock()
        self._props = check_properties(self.property_defaults, self.property_defaults, props)
        # The worker pool sized by thread-pool-min/max; guarded by _lock.
        self._pool: ThreadPool | None = None

    @property
    def id(self) -> str:
        return self._id

    def get_property(self, name: str) -> int:
        """The value of the property *name* (wire spelling, e.g. ``poll-max-ns``).

        Raises:
            PropertyNotFound: the type has no such property.
        """
        self._check_property_name(name)
        with self._lock:
            return self._props[name]

    def set_property(self, name: str, value: object) -> None:
        """Set one property (wire spelling); see :meth:`update_params`."""
        self._check_property_name(name)
        self.update_params({name: value})

    def update_params(self, updates: Mapping[str, object]) -> None:
        """Validate *updates* (wire names) as a whole, then apply them atomically.

        Raises:
            InvalidParameterValue: a negative value, bad thread-pool limits, or
                a name the type does not have; nothing is changed.
            InvalidParameterType: a value that is not an int64; nothing is changed.
        """
        with self._lock:
            new = check_properties(self.property_defaults, self._props, updates)
            changed = {k for k, v in new.items() if self._props[k] != v}
            self._props = new
            if changed:
                self._apply(changed)

    def properties(self) -> dict[str, int]:
        """All property values, by wire name (a consistent snapshot)."""
        with self._lock:
            return dict(self._props)

    @property
    def thread_pool(self) -> ThreadPool | None:
        """The worker pool (the loop's default executor) while there is one."""
        return self._pool

    def _new_pool(self, name: str) -> ThreadPool:
        with self._lock:
            return ThreadPool(
                self._props["thread-pool-min"], self._props["thread-pool-max"], name=name
            )

    def _apply(self, changed: set[str]) -> None:
        """Push committed property changes to the running machinery (under _lock)."""
        pool = self._pool
        if pool is not None and changed & {"thread-pool-min", "thread-pool-max"}:
            # Validated as a pair already, with the same rules the pool has.
            pool.set_limits(self._props["thread-pool-min"], self._props["thread-pool-max"])

    def _check_property_name(self, name: str) -> None:
        if name not in self.property_defaults:
            raise PropertyNotFound(f"Property '{self.qom_type}.{name}' not found")


# -- MainLoop ---------------------------------------------------------------------


class MainLoop(EventLoopBase):
    """The ``main-loop`` object: the application's own loop, as QEMU's main loop.

    ``MainLoop(*, aio_max_batch=0, thread_pool_min=0, thread_pool_max=64)``.
    At most one exists at a time (as in QEMU).  :meth:`install` binds it to
    the application's loop and makes its worker pool that loop's default
    executor, so ``asyncio.to_thread`` and ``run_in_executor(None, ...)`` use
    a pool sized by thread-pool-min / thread-pool-max, tunable live.  It has
    no poll properties: the application's loop is not an IOThread's, so
    aio-max-batch is kept for QEMU compatibility and reported, nothing more.

    Raises:
        InvalidParameterValue: a main-loop exists already, or a bad value.
        InvalidParameterType: a value that is not an int64.
    """

    qom_type: ClassVar[str] = "main-loop"
    property_defaults: ClassVar[Mapping[str, int]] = EVENT_LOOP_BASE_DEFAULTS

    # The one instance; guarded by _INSTANCE_LOCK.
    _instance: ClassVar[MainLoop | None] = None
    _INSTANCE_LOCK: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        aio_max_batch: int = EVENT_LOOP_BASE_DEFAULTS["aio-max-batch"],
        thread_pool_min: int = EVENT_LOOP_BASE_DEFAULTS["thread-pool-min"],
        thread_pool_max: int = EVENT_LOOP_BASE_DEFAULTS["thread-pool-max"],
        id: str = "main-loop",
    ) -> None:
        values = {
            "aio-max-batch": aio_max_batch,
            "thread-pool-min": thread_pool_min,
            "thread-pool-max": thread_pool_max,
        }
        super().__init__(id, values)
        with MainLoop._INSTANCE_LOCK:
            if MainLoop._instance is not None:
                raise InvalidParameterValue("only one main-loop instance allowed")
            MainLoop._instance = self
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def instance(cls) -> MainLoop | None:
        """The main-loop object, if one exists."""
        return cls._instance

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop :meth:`install` bound it to, or None."""
        return self._loop

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind to *loop* (default: the running one); its pool becomes the
        loop's default executor.

        Raises:
            RuntimeError: no loop given and none running, or already installed.
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not None:
                raise RuntimeError(f"main-loop is already installed on {self._loop!r}")
            pool = self._new_pool("main-loop worker")
            try:
                loop.set_default_executor(pool)
            except BaseException:
                pool.shutdown()
                raise
            self._loop, self._pool = loop, pool

    def close(self) -> None:
        """Shut the pool down and let another main-loop be created.

        Idempotent.  Call it once the application's loop has finished with the
        pool (``asyncio.run`` shuts the default executor down itself; shutting
        it down twice is harmless).
        """
        with self._lock:
            pool, self._pool, self._loop = self._pool, None, None
        if pool is not None:
            pool.shutdown()
        with MainLoop._INSTANCE_LOCK:
            if MainLoop._instance is self:
                MainLoop._instance = None
        USER_OBJECTS.remove(self)


# -- which IOThread runs this thread -------------------------------------------

_current = threading.local()


def current_iothread() -> IOThread | None:
    """The IOThread whose thread is calling, or None."""
    io: IOThread | None = getattr(_current, "iothread", None)
    return io


def in_iothread() -> bool:
    """True when called on an IOThread's own thread."""
    return current_iothread() is not None


# -- IOThread -------------------------------------------------------------------

_POLL_PROPS: Final = frozenset({"poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch"})


class IOThread(EventLoopBase):
    """A dedicated thread running its own event loop, as QEMU's IOThread.

    ``IOThread(id, *, poll_max_ns=32768, poll_grow=0, poll_shrink=0,
    aio_max_batch=0, thread_pool_min=0, thread_pool_max=64, loop_factory=None)``
    validates everything and starts nothing; :meth:`start` (or ``with`` /
    ``async with``) starts the thread.

    Raises:
        InvalidParameterValue: a bad id, a negative value, bad pool limits.
        InvalidParameterType: a value that is not an int64 (``bool`` included).
    """

    qom_type: ClassVar[str] = "iothread"
    property_defaults: ClassVar[Mapping[str, int]] = IOTHREAD_DEFAULTS

    poll_max_ns = _Int64Property()
    poll_grow = _Int64Property()
    poll_shrink = _Int64Property()

    def __init__(
        self,
        id: str,
        *,
        poll_max_ns: int = IOTHREAD_DEFAULTS["poll-max-ns"],
        poll_grow: int = IOTHREAD_DEFAULTS["poll-grow"],
        poll_shrink: int = IOTHREAD_DEFAULTS["poll-shrink"],
        aio_max_batch: int = IOTHREAD_DEFAULTS["aio-max-batch"],
        thread_pool_min: int = IOTHREAD_DEFAULTS["thread-pool-min"],
        thread_pool_max: int = IOTHREAD_DEFAULTS["thread-pool-max"],
        loop_factory: LoopFactory | None = None,
        cpu_affinity: Iterable[int] | None = None,
    ) -> None:
        if loop_factory is not None and not callable(loop_factory):
            raise TypeError(f"loop_factory must be callable or None, not {loop_factory!r}")
        values = {
            "poll-max-ns": poll_max_ns,
            "poll-grow": poll_grow,
            "poll-shrink": poll_shrink,
            "aio-max-batch": aio_max_batch,
            "thread-pool-min": thread_pool_min,
            "thread-pool-max": thread_pool_max,
        }
        super().__init__(id, values)
        self._loop_factory = loop_factory
        # Guarded by _lock; applied by the IOThread itself (see cpu_affinity).
        self._cpu_affinity = _check_cpu_affinity(cpu_affinity)
        self._inherited_affinity: frozenset[int] | None = None  # IOThread only
        # Internal iothreads (iothread_create) stay out of /objects.
        self._user_object = True
        # Lifecycle, guarded by _lock.  _started_once: start() is one-shot.
        self._started_once = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aio: AioContext | None = None
        self._thread_id = -1
        self._stop_requested = False
        # Resolved by the thread when it has fully shut down (for aclose()).
        self._finished: concurrent.futures.Future[None] | None = None
        # IOThread only: the tasks of calls still running.  asyncio holds a
        # task only weakly, and a submit() whose future the caller dropped
        # holds it no more: without this, a task waiting on nothing else
        # would be garbage-collected mid-run, and the stop would never
        # cancel it (its clean-up would get GeneratorExit at collection).
        self._call_tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<IOThread {self._id!r} {state} thread_id={self._thread_id}>"

    # -- read-only state --------------------------------------------------------

    @property
    def thread_id(self) -> int:
        """The native thread id of the running thread, or -1 when not running."""
        return self._thread_id

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The IOThread's event loop while it runs, else None."""
        return self._loop

    @property
    def running(self) -> bool:
        """True from the end of start() until stop() begins."""
        return self._aio is not None and not self._stop_requested

    @property
    def cpu_affinity(self) -> frozenset[int] | None:
        """The CPUs the IOThread's thread may run on; None leaves it unpinned.

        Beyond QEMU, for latency-sensitive users: applied inside the thread
        (Linux ``sched_setaffinity``), at start and live on every write;
        setting None returns the thread to the CPUs it inherited.

        Raises (on write):
            ValueError: an empty set, or a CPU not allowed to this process.
            TypeError: not a set of int CPU ids, nor None.
        """
        return self._cpu_affinity

    @cpu_affinity.setter
    def cpu_affinity(self, value: Iterable[int] | None) -> None:
        cpus = _check_cpu_affinity(value)
        with self._lock:
            self._cpu_affinity = cpus
            aio = self._aio
            if aio is not None:
                try:
                    aio.call_soon_threadsafe(self._apply_cpu_affinity, aio)
                except IOThreadStopped:
                    pass  # stopping: nothing runs that could be placed

    # runs in the IOThread
    def _apply_cpu_affinity(self, aio: AioContext) -> None:
        with self._lock:
            cpus = self._cpu_affinity
        if self._inherited_affinity is None:
            self._inherited_affinity = frozenset(os.sched_getaffinity(0))
        if cpus is not None or aio.cpu_affinity is not None:
            os.sched_setaffinity(0, cpus if cpus is not None else self._inherited_affinity)
        aio.cpu_affinity = cpus

    @property
    def aio_context(self) -> AioContext:
        """The running loop's AioContext.

        Raises:
            IOThreadStopped: the IOThread is not running.
        """
        return self._running_context()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and its loop; return once both run.

        Raises:
            RuntimeError: the IOThread was started before.
            InvalidParameterValue: another user object has the same id.
            BaseException: whatever the loop factory or the thread's
                initialisation raised; no thread is left behind.
        """
        thread, ready = self._spawn()
        try:
            ready.result()
        except BaseException:
            thread.join()
            self._forget()
            raise

    async def astart(self) -> None:
        """Start without blocking the caller's loop; see :meth:`start`."""
        thread, ready = self._spawn()
        try:
            await asyncio.wrap_future(ready)
        except asyncio.CancelledError:
            # The caller gave up: the thread stops as soon as it can (before
            # its loop runs, if it is not running yet) and is forgotten once
            # done, all without blocking the caller's loop.
            self._request_stop()
            self._forget_when_finished()
            raise
        except BaseException:
            # The thread has set the error and is exiting: the join is short.
            thread.join()
            self._forget()
            raise

    def stop(self) -> None:
        """Stop the loop after the work already queued, then join the thread.

        Idempotent.  Queued callbacks run, remaining tasks are cancelled and
        awaited, async generators and the loop's executor are shut down and
        the loop is closed.  Later submissions raise :class:`IOThreadStopped`.
        A task that goes on after its cancellation, or a pool call that does
        not return, holds the stop up: after 5 s it logs a warning (logger
        ``iothreads``) naming them, and goes on waiting.

        Raises:
            RuntimeError: called from the IOThread's own thread (it would wait
                for itself forever); stop it from another thread, or
                ``await io.aclose()`` from another loop.
        """
        thread = self._request_stop()
        if thread is not None:
            thread.join()
            self._forget()

    async def aclose(self) -> None:
        """Stop without blocking the caller's loop; see :meth:`stop`."""
        thread = self._request_stop()
        if thread is None:
            return
        finished = self._finished
        assert finished is not None
        try:
            await asyncio.wrap_future(finished)
        except asyncio.CancelledError:
            self._forget_when_finished()  # the stop goes on without us
            raise
        thread.join()  # the thread has finished its work; this only reaps it
        self._forget()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _spawn(self) -> tuple[threading.Thread, concurrent.futures.Future[None]]:
        """Register, create the thread, start it (runs in the caller's thread)."""
        with self._lock:
            if self._started_once:
                raise RuntimeError(
                    f"IOThread {self._id!r} can only be started once; create a new IOThread"
                )
            if self._user_object:
                USER_OBJECTS.add(self)
            self._started_once = True
            # Both futures only ever resolve from the thread: marked running,
            # a waiter that gives up cannot cancel them under the thread's feet.
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            ready.set_running_or_notify_cancel()
            self._finished = concurrent.futures.Future()
            self._finished.set_running_or_notify_cancel()
            thread = threading.Thread(
                target=self._thread_main, args=(ready,), name=f"IO {self._id}", daemon=True
            )
            self._thread = thread
            try:
                thread.start()
            except BaseException:
                self._thread = None
                USER_OBJECTS.remove(self)
                raise
        return thread, ready

    def _request_stop(self) -> threading.Thread | None:
        """Queue the loop's stop once; return the thread to join, if any."""
        with self._lock:
            thread, aio, loop = self._thread, self._aio, self._loop
            if thread is None:
                return None
            pool = self._pool
            if thread is threading.current_thread() or (
                pool is not None and pool.owns_current_thread()
            ):
                raise RuntimeError(
                    f"IOThread {self._id!r} cannot be stopped from its own thread or "
                    "its worker pool (stop waits for both); stop it from a thread of "
                    "your own, or await io.aclose() from another loop"
                )
            if not self._stop_requested:
                self._stop_requested = True
                # Not published yet: the thread sees the flag before its loop
                # runs, and goes straight to its shutdown.
                if aio is not None and loop is not None:
                    aio.call_soon_threadsafe(loop.stop)
        return thread

    def _forget_when_finished(self) -> None:
        """Forget the thread once it has finished (any thread; no join)."""
        finished = self._finished
        assert finished is not None
        finished.add_done_callback(lambda _: self._forget())

    def _forget(self) -> None:
        """Drop the thread's state once it has exited (caller's thread)."""
        with self._lock:
            self._thread = None
            self._aio = None
            self._loop = None
            self._pool = None
            self._thread_id = -1
            USER_OBJECTS.remove(self)

    def _make_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_factory is not None:
            return self._loop_factory()
        choice = os.environ.get("IOTHREADS_LOOP", "")
        if choice not in ("", "asyncio", "uvloop"):
            raise ValueError(f"IOTHREADS_LOOP must be 'asyncio' or 'uvloop', not {choice!r}")
        if choice != "asyncio":
            try:
                import uvloop
            except ImportError:
                if choice == "uvloop":
                    raise
            else:
                return uvloop.new_event_loop()
        return asyncio.SelectorEventLoop()

    # runs in the IOThread
    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        finished = self._finished
        assert finished is not None
        try:
            _set_os_thread_name(f"IO {self._id}")
            loop = self._make_loop()
            aio: AioContext | None = None
            try:
                asyncio.set_event_loop(loop)
                params = self.properties()
                aio = AioContext(
                    loop,
                    poll_max_ns=params["poll-max-ns"],
                    poll_grow=params["poll-grow"],
                    poll_shrink=params["poll-shrink"],
                    aio_max_batch=params["aio-max-batch"],
                    owner=f"IOThread {self._id!r}",
                )
                if self._cpu_affinity is not None:
                    self._apply_cpu_affinity(aio)
                # The pool starts no thread unless thread-pool-min asks for
                # some: those exist before the first request (QEMU's seed
                # commit); others are spawned on demand.  Created last, so
                # nothing after it can fail and leave its threads behind.
                pool = self._new_pool(f"IO {self._id} worker")
                loop.set_default_executor(pool)
            except BaseException:
                if aio is not None:
                    aio.close()
                asyncio.set_event_loop(None)
                loop.close()
                raise
        except BaseException as exc:
            ready.set_exception(exc)
            finished.set_result(None)
            return
        with self._lock:
            self._loop = loop
            self._aio = aio
            self._pool = pool
            self._thread_id = threading.get_native_id()
            stop_early = self._stop_requested  # stop() came before the loop ran
        _current.iothread = self
        ready.set_result(None)
        try:
            try:
                if not stop_early:
                    loop.run_forever()
            finally:
                # Also when run_forever() raised (a SystemExit out of a task):
                # refuse new work, and give what is pending its outcome.
                with self._lock:
                    self._stop_requested = True
                loop.run_until_complete(self._shutdown(aio))
        finally:
            # Each step runs even if the one before raised: whoever waits in
            # stop() or aclose() must be released, and nothing may leak.
            try:
                aio.close()
            finally:
                try:
                    loop.close()
                finally:
                    asyncio.set_event_loop(None)
                    _current.iothread = None
                    # Empty already, unless the shutdown was cut short (a
                    # SystemExit out of a clean-up): nothing runs them now.
                    self._call_tasks.clear()
                    del aio, loop
                    finished.set_result(None)

    # runs in the IOThread
    async def _shutdown(self, aio: AioContext) -> None:
        """Give every pending piece of work its outcome, then release the loop."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        watch = _StopWatch(self._id, loop)

        def others() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks(loop) if t is not me]

        def still_running() -> str | None:
            # All of them, not only those of the round: a task may have
            # started a successor as it was cancelled.  None when they have
            # all just finished.
            running = others()
            return f"task(s) that went on after being cancelled: {running}" if running else None

        aio.close_inbox()
        while True:
            # Queued callbacks run; they may start tasks, which are cancelled.
            aio.drain()
            tasks = others()
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            await watch.wait(asyncio.gather(*tasks, return_exceptions=True), still_running)
        await loop.shutdown_asyncgens()
        await watch.wait(
            asyncio.ensure_future(loop.shutdown_default_executor()),
            lambda: f"its pool's running calls: {self._pool!r}",
        )

    def _apply(self, changed: set[str]) -> None:
        # Runs under _lock in the writer's thread; the loop applies it itself.
        super()._apply(changed)
        aio = self._aio
        if aio is not None and changed & _POLL_PROPS:
            params = dict(self._props)
            try:
                aio.call_soon_threadsafe(aio.set_params, params)
            except IOThreadStopped:
                pass  # stopping: the values are stored, nothing runs to use them

    def _running_context(self) -> AioContext:
        aio = self._aio
        if aio is None or self._stop_requested:
            raise self._stopped_error()
        return aio

    def _stopped_error(self) -> IOThreadStopped:
        if not self._started_once:
            return IOThreadStopped(f"IOThread {self._id!r} is not running; start() it first")
        return IOThreadStopped(f"IOThread {self._id!r} is stopped; it takes no more work")

    def get_g_main_context(self) -> glib.MainContext:
        """The IOThread's GLib-like context (QEMU's iothread_get_g_main_context).

        The first call creates it, makes it the thread-default context inside
        the IOThread, and has the IOThread's thread serve it from then on
        alongside its asyncio loop; later calls return the same context.
        ``stop()`` destroys and finalises its sources.

        Raises:
            IOThreadStopped: the IOThread is not running.
        """
        aio = self._running_context()
        if current_iothread() is self:
            return aio.get_g_main_context()
        return self.run_sync(aio.get_g_main_context)

    # -- the cross-thread API ----------------------------------------------------

    def call_soon_threadsafe(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """Schedule ``callback(*args)`` on the IOThread's loop, from any thread.

        The returned handle can be cancelled from any thread; once cancelled,
        the callback never runs (unless it has already started).

        Raises:
            IOThreadStopped: the IOThread is not running.
        """
        # _running_context(), inlined: the hot path of every hand-off.
        aio = self._aio
        if aio is None or self._stop_requested:
            raise self._stopped_error()
        return aio.call_soon_threadsafe(callback, *args, context=context)

    @overload
    async def run(self, func: Coroutine[Any, Any, T], /) -> T: ...
    @overload
    async def run(self, func: Callable[..., Coroutine[Any, Any, T]], /, *args: Any) -> T: ...
    @overload
    async def run(self, func: Callable[..., T], /, *args: Any) -> T: ...
    async def run(self, func: Any, /, *args: Any) -> Any:
        """Run *func* on the IOThread and await its outcome from any loop.

        A coroutine function (or a coroutine object) runs as a task on the
        IOThread's loop; a plain function is called on the IOThread's thread.
        The caller's contextvars are copied in.  Cancelling the awaiting task
        cancels the inner work **and waits for it to finish** before the
        caller sees ``CancelledError``.  Awaited from the IOThread's own loop,
        it runs inline, without a hop.

        Raises:
            IOThreadStopped: the IOThread is not running, or stopped before
                the work completed.
            BaseException: whatever *func* raised, with its traceback.
        """
        caller = asyncio.get_running_loop()
        aio = self._running_context()
        if caller is aio.loop:
            _check_runnable(func, args)
            result = func if inspect.iscoroutine(func) else func(*args)
            if inspect.isawaitable(result):
                return await result
            return result
        call = _Call(self, func, args, caller)
        aio.call_soon_threadsafe(call.start)
        try:
            return await call.outcome
        except asyncio.CancelledError:
            if call.delivered:
                raise  # the inner work itself ended cancelled
            # The caller was cancelled: cancel the inner work, wait for it.
            # If the call has not started yet, it never will.
            call.abandoned = True
            call.finished = caller.create_future()
            try:
                aio.call_soon_threadsafe(call.cancel)
            except IOThreadStopped:
                pass  # the loop's shutdown cancels it and delivers
            while not call.finished.done():
                try:
                    await asyncio.shield(call.finished)
                except asyncio.CancelledError:
                    continue  # cancelled again: keep waiting, then re-raise
            raise

    def submit(self, func: Callable[..., Any], /, *args: Any) -> concurrent.futures.Future[Any]:
        """Run *func* on the IOThread; return a ``concurrent.futures.Future``.

        For plain threads.  Same rules as :meth:`run`; cancelling the future
        cancels the inner task (or keeps queued work from ever running).

        Raises:
            IOThreadStopped: the IOThread is not running.
        """
        aio = self._running_context()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call = _Call(self, func, args, future)
        aio.call_soon_threadsafe(call.start)
        return future

    def run_sync(self, func: Callable[..., T], /, *args: Any, timeout: float | None = None) -> T:
        """Block a plain thread until ``func(*args)`` has run on the IOThread.

        Raises:
            RuntimeError: called from the IOThread's own thread (it would
                deadlock); ``await io.run(...)`` there instead.
            TimeoutError: *timeout* seconds passed; the work is cancelled.
            IOThreadStopped: the IOThread is not running.
            BaseException: whatever *func* raised.
        """
        if current_iothread() is self:
            raise RuntimeError(
                f"run_sync() called from IOThread {self._id!r}'s own thread would deadlock; "
                "await io.run(...) or call the function directly there"
            )
        future = self.submit(func, *args)
        try:
            return future.result(timeout)  # type: ignore[no-any-return]
        except TimeoutError:
            future.cancel()
            raise


class _Call:
    """One cross-thread call: started and cancelled in the IOThread, its
    outcome delivered to the caller's loop (``run``) or to a
    ``concurrent.futures.Future`` (``submit``)."""

    __slots__ = (
        "abandoned",
        "args",
        "caller",
        "cancel_requested",
        "context",
        "delivered",
        "finished",
        "func",
        "io",
        "outcome",
        "task",
    )

    def __init__(
        self,
        io: IOThread,
        func: Any,
        args: tuple[Any, ...],
        caller: asyncio.AbstractEventLoop | concurrent.futures.Future[Any],
    ) -> None:
        """Runs in the caller's thread.

        Raises:
            TypeError: *func* is neither callable nor a coroutine object, or
                is a coroutine object given arguments.
        """
        _check_runnable(func, args)
        self.io = io
        self.func = func
        self.args = args
        self.context = contextvars.copy_context()
        self.caller = caller
        self.task: asyncio.Task[Any] | None = None
        self.cancel_requested = False  # IOThread only
        # Set by a cancelled caller (run): start() then does nothing.
        self.abandoned = False
        # Caller's loop only (run): set when the outcome arrived, and the
        # future a cancelled caller waits on for the inner work to finish.
        self.delivered = False
        self.finished: asyncio.Future[None] | None = None
        if isinstance(caller, concurrent.futures.Future):
            self.outcome: asyncio.Future[Any] = None  # type: ignore[assignment]
            caller.add_done_callback(self._on_future_done)
        else:
            self.outcome = caller.create_future()

    # runs in the IOThread
    def start(self) -> None:
        caller = self.caller
        if isinstance(caller, concurrent.futures.Future) and caller.cancelled():
            return  # cancelled while queued: it never runs, and has its outcome
        if self.cancel_requested or self.abandoned:
            self.cancel_requested = True
            self._finish(None, None, cancelled=True)
            return
        try:
            func = self.func
            result = func if inspect.iscoroutine(func) else self.context.run(func, *self.args)
        except BaseException as exc:
            self._finish(None, exc)
            return
        if inspect.iscoroutine(result):
            self.task = task = asyncio.get_running_loop().create_task(result, context=self.context)
            self.io._call_tasks.add(task)
            task.add_done_callback(self._task_done)
        else:
            self._finish(result, None)

    # runs in the IOThread
    def cancel(self) -> None:
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()

    # runs in the IOThread
    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.io._call_tasks.discard(task)
        if task.cancelled():
            self._finish(None, None, cancelled=True)
        else:
            exc = task.exception()
            self._finish(None if exc is not None else task.result(), exc)

    # runs in the IOThread
    def _finish(self, result: Any, exc: BaseException | None, cancelled: bool = False) -> None:
        if cancelled and not self.cancel_requested and self.io._stop_requested:
            # Nobody asked for this cancel: the IOThread's stop did it.
            exc = IOThreadStopped(f"IOThread {self.io.id!r} stopped before the call completed")
            cancelled = False
        caller = self.caller
        if isinstance(caller, concurrent.futures.Future):
            try:
                if cancelled:
                    caller.cancel()
                elif exc is not None:
                    caller.set_exception(exc)
                else:
                    caller.set_result(result)
            except concurrent.futures.InvalidStateError:
                pass  # cancelled meanwhile by its owner: that is its outcome
            return
        try:
            caller.call_soon_threadsafe(self._deliver, result, exc, cancelled)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is left to tell

    # runs in the caller's loop
    def _deliver(self, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        self.delivered = True
        outcome = self.outcome
        if not outcome.done():
            if cancelled:
                outcome.cancel()
            elif exc is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(result)
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    # runs in the thread that completed or cancelled the future
    def _on_future_done(self, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled() and not self.cancel_requested:
            aio = self.io._aio
            if aio is not None:
                try:
                    aio.call_soon_threadsafe(self.cancel)
                except IOThreadStopped:
                    pass  # the loop's shutdown cancels the task itself


def _check_runnable(func: Any, args: tuple[Any, ...]) -> None:
    """What run() and submit() accept: a callable, or a coroutine object alone.

    Raises:
        TypeError: anything else, or a coroutine object given arguments.
    """
    if inspect.iscoroutine(func):
        if args:
            raise TypeError(
                f"a coroutine object takes no arguments, got {len(args)}: pass the "
                "coroutine function and its arguments instead"
            )
    elif not callable(func):
        raise TypeError(f"expected a callable or a coroutine object, not {func!r}")


def _check_cpu_affinity(value: Iterable[int] | None) -> frozenset[int] | None:
    """Validate a cpu_affinity value; see IOThread.cpu_affinity."""
    if value is None:
        return None
    try:
        cpus = frozenset(value)
    except TypeError:
        cpus = frozenset({value})  # type: ignore[arg-type]  # reported just below
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("cpu_affinity is not supported on this platform; pass None")
    if any(isinstance(c, bool) or not isinstance(c, int) for c in cpus):
        raise TypeError(f"cpu_affinity must be a set of CPU ids or None, not {value!r}")
    if not cpus:
        raise ValueError("cpu_affinity must not be empty; pass None to leave the thread unpinned")
    allowed = _process_cpus()
    for cpu in sorted(cpus):
        if cpu not in allowed:
            raise ValueError(
                f"CPU {cpu} is not allowed to this process (allowed: {sorted(allowed)})"
            )
    return cpus


@functools.cache
def _process_cpus() -> frozenset[int]:
    """The CPUs any thread of this process may be pinned to.

    Not the calling thread's own mask: a thread may be pinned narrower than
    the process (benchmarks pin the caller), and pinning another thread
    elsewhere is still allowed.  The limit is the cgroup's cpuset where one is
    set (cgroup v2), else every CPU the system has.
    """
    try:
        with open("/sys/fs/cgroup/cpuset.cpus.effective") as f:
            text = f.read().strip()
    except OSError:
        text = ""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus) or frozenset(range(os.cpu_count() or 1))


def _set_os_thread_name(name: str) -> None:
    """Name the OS thread too, where the platform allows (shows in top, gdb).

    Python < 3.14 only names the Python-level thread.  On Linux,
    prctl(PR_SET_NAME) names the calling thread; the kernel keeps 15 bytes
    plus NUL (TASK_COMM_LEN 16) and truncates the rest itself.
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_NAME, name.encode(), 0, 0, 0)


_PR_SET_NAME: Final = 15  # <linux/prctl.h>


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    path = ctypes.util.find_library("c")
    return ctypes.CDLL(path) if path else None
