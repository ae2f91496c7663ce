"""EventLoopBase and MainLoop: the properties every event-loop object has.

QEMU's ``event-loop-base.c``: aio-max-batch, thread-pool-min and
thread-pool-max, int64 each, validated as QEMU does and writable live
(docs/design.md, "Properties and validation").  ``MainLoop`` is the
``main-loop`` object, bound to the application's own loop; ``IOThread``
(``_iothread``) is the other kind.

Locks: ``EventLoopBase._lock`` guards the property values (a write is
validated, then committed under the lock, so readers never see half an
update) and whatever state a subclass puts in its charge.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from typing import ClassVar, Self, overload

from . import _fork
from ._aio import AioContext
from ._errors import InvalidParameterValue, PropertyNotFound
from ._pool import ThreadPool
from ._props import EVENT_LOOP_BASE_DEFAULTS, check_id, check_int64, check_properties, wire_name
from ._registry import USER_OBJECTS
from ._runs_in import ANY, runs_in

__all__ = ["EventLoopBase", "MainLoop"]


class Int64Property:
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
    each int64, validated as QEMU does, readable and writable at any time
    from any thread.
    """

    #: the QOM type name
    qom_type: ClassVar[str] = "event-loop-base"
    #: wire name -> default of every property this type has
    property_defaults: ClassVar[Mapping[str, int]] = EVENT_LOOP_BASE_DEFAULTS

    aio_max_batch = Int64Property()
    thread_pool_min = Int64Property()
    thread_pool_max = Int64Property()

    def __init__(self, id: str, props: Mapping[str, object]) -> None:
        """Validate everything; raise before any state exists."""
        self._id = check_id(id)
        self._lock = threading.RLock()
        self._props = check_properties(self.property_defaults, self.property_defaults, props)
        # The worker pool sized by thread-pool-min/max; guarded by _lock.
        self._pool: ThreadPool | None = None
        _fork.track(self)

    @runs_in(_fork.FORK_CHILD)
    def _after_fork_in_child(self) -> None:
        """In a forked child: a new lock (the old one may be held forever).

        The pool resets itself (``ThreadPool._after_fork_in_child``); it is
        kept, stopped, where a loop may still have it as its executor.
        """
        self._lock = threading.RLock()

    @property
    def id(self) -> str:
        return self._id

    @runs_in(ANY)
    def get_property(self, name: str) -> int:
        """The value of the property *name* (wire spelling, e.g. ``poll-max-ns``).

        Raises:
            PropertyNotFound: the type has no such property.
        """
        self._check_property_name(name)
        with self._lock:
            return self._props[name]

    @runs_in(ANY)
    def set_property(self, name: str, value: object) -> None:
        """Set one property (wire spelling); see :meth:`update_params`."""
        self._check_property_name(name)
        self.update_params({name: value})

    @runs_in(ANY)
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

    @runs_in(ANY)
    def properties(self) -> dict[str, int]:
        """All property values, by wire name (a consistent snapshot)."""
        with self._lock:
            return dict(self._props)

    @property
    def thread_pool(self) -> ThreadPool | None:
        """The worker pool (the loop's default executor) while there is one."""
        return self._pool

    @staticmethod
    def _new_pool(name: str, params: Mapping[str, int]) -> ThreadPool:
        """A pool with the limits of *params* (a snapshot of the properties)."""
        return ThreadPool(params["thread-pool-min"], params["thread-pool-max"], name=name)

    def _apply(self, changed: set[str]) -> None:
        """Push committed property changes to the running machinery (under _lock)."""
        pool = self._pool
        if pool is not None and changed & {"thread-pool-min", "thread-pool-max"}:
            # Validated as a pair already, with the same rules the pool has.
            pool.set_limits(self._props["thread-pool-min"], self._props["thread-pool-max"])

    def _check_property_name(self, name: str) -> None:
        if name not in self.property_defaults:
            raise PropertyNotFound(f"Property '{self.qom_type}.{name}' not found")


class MainLoop(EventLoopBase):
    """The ``main-loop`` object: the application's own loop, as QEMU's main loop.

    ``MainLoop(*, aio_max_batch=0, thread_pool_min=0, thread_pool_max=64)``.
    At most one exists at a time (as in QEMU).  :meth:`install` binds it to
    the application's loop and makes its worker pool that loop's default
    executor, so ``asyncio.to_thread`` and ``run_in_executor(None, ...)`` use
    a pool sized by thread-pool-min / thread-pool-max, tunable live.  Like
    QEMU's, it has no poll properties, and its loop does not poll unless
    :meth:`install` is given a window: then an AioContext serves the loop
    too, the replies of ``io.run`` calls awaited there come through its
    inbox, and aio-max-batch caps that inbox's passes as an IOThread's.

    Raises:
        InvalidParameterValue: a main-loop exists already, or a bad value.
        InvalidParameterType: a value that is not an int64.
    """

    qom_type: ClassVar[str] = "main-loop"
    property_defaults: ClassVar[Mapping[str, int]] = EVENT_LOOP_BASE_DEFAULTS

    # The one instance; guarded by _INSTANCE_LOCK.  A forked child starts
    # with none (_reset_after_fork): the parent's is not in its object tree.
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
        # Set before the instance is published: another thread may read it
        # through instance() at once.
        self._loop: asyncio.AbstractEventLoop | None = None
        # The context that makes the loop poll, while installed with a
        # window; guarded by _lock.
        self._aio: AioContext | None = None
        with MainLoop._INSTANCE_LOCK:
            if MainLoop._instance is not None:
                raise InvalidParameterValue("only one main-loop instance allowed")
            MainLoop._instance = self

    @classmethod
    def instance(cls) -> MainLoop | None:
        """The main-loop object, if one exists."""
        return cls._instance

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop :meth:`install` bound it to, or None."""
        return self._loop

    @property
    def aio_context(self) -> AioContext | None:
        """The context that makes the loop poll, while installed with a window."""
        return self._aio

    @runs_in(ANY)
    def install(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        poll_max_ns: int = 0,
        poll_grow: int = 0,
        poll_shrink: int = 0,
    ) -> None:
        """Bind to *loop* (default: the running one); its pool becomes the
        loop's default executor.

        With *poll_max_ns* above 0 the loop polls as an IOThread's does, with
        the same window arithmetic (*poll_grow*, *poll_shrink*: QEMU's
        meaning): before it sleeps, it spins up to the window, so the reply
        of a call it awaits on an IOThread, and anything else that wakes it,
        is caught without a cross-CPU wake-up.  That pays where the loop's
        thread has a CPU of its own; the spin's guard gives the CPU up where
        it does not (docs/design.md, "The polling window").  The window is
        chosen here, not a property: QEMU's main-loop has none.  A loop that
        polls must be installed on from its own thread (a coroutine on it),
        or before it runs.

        Raises:
            RuntimeError: no loop given and none running; already installed;
                a window for a loop running in another thread, or for a loop
                that has an AioContext already (an IOThread's).
            InvalidParameterValue: a negative window value; nothing is changed.
            InvalidParameterType: a window value that is not an int64.
        """
        if loop is None:
            loop = asyncio.get_running_loop()
        window = {
            name: check_int64(name, value)
            for name, value in (
                ("poll-max-ns", poll_max_ns),
                ("poll-grow", poll_grow),
                ("poll-shrink", poll_shrink),
            )
        }
        polls = window["poll-max-ns"] > 0
        if polls and _running_elsewhere(loop):
            raise RuntimeError(
                f"{loop!r} runs in another thread: install a main-loop that polls from "
                "a coroutine on that loop, or before the loop runs"
            )
        with self._lock:
            if self._loop is not None:
                raise RuntimeError(f"main-loop is already installed on {self._loop!r}")
            aio = None
            if polls:
                aio = AioContext(
                    loop,
                    poll_max_ns=window["poll-max-ns"],
                    poll_grow=window["poll-grow"],
                    poll_shrink=window["poll-shrink"],
                    aio_max_batch=self._props["aio-max-batch"],
                    owner="the main-loop",
                )
            pool = None
            try:
                pool = self._new_pool("main-loop worker", self._props)
                loop.set_default_executor(pool)
            except BaseException:
                if pool is not None:
                    pool.shutdown()
                if aio is not None:
                    aio.close()  # a reply routed to it meanwhile runs first
                raise
            self._loop, self._pool, self._aio = loop, pool, aio

    def _apply(self, changed: set[str]) -> None:
        super()._apply(changed)
        aio = self._aio
        if aio is not None and "aio-max-batch" in changed:
            # Its inbox is open: close() takes it from _aio, under _lock, first.
            params = {"aio-max-batch": self._props["aio-max-batch"]}
            aio.call_soon_threadsafe(aio.set_params, params)

    @runs_in(ANY)
    def close(self) -> None:
        """Shut the pool down and let another main-loop be created.

        Idempotent.  Call it once the application's loop has finished with the
        pool (``asyncio.run`` shuts the default executor down itself; shutting
        it down twice is harmless).  A loop installed with a window stops
        polling and gets its own way of sleeping back, in its own thread: from
        another thread, close() waits until the loop has done that (or has
        stopped running).
        """
        with self._lock:
            pool, self._pool, self._loop = self._pool, None, None
            aio, self._aio = self._aio, None
        if aio is not None:
            _detach(aio)
        if pool is not None:
            pool.shutdown()
        with MainLoop._INSTANCE_LOCK:
            if MainLoop._instance is self:
                MainLoop._instance = None
        USER_OBJECTS.remove(self)

    @staticmethod
    @runs_in(_fork.FORK_CHILD)
    def _reset_after_fork() -> None:
        # In a forked child: no main-loop yet, and a lock no thread holds.
        MainLoop._INSTANCE_LOCK = threading.Lock()
        MainLoop._instance = None


@runs_in(ANY)
def _running_elsewhere(loop: asyncio.AbstractEventLoop) -> bool:
    """True when *loop* runs in a thread other than the caller's: what attaches
    a context to it or detaches one must then happen there."""
    return loop.is_running() and asyncio._get_running_loop() is not loop


#: How often a close() from another thread looks whether the loop it waits
#: for has stopped (and so will not run the detach it queued).
_DETACH_POLL_S = 0.01


@runs_in(ANY)
def _detach(aio: AioContext) -> None:
    """Detach *aio* from its loop, which goes on without it (``AioContext.close``),
    and return once it is done.

    In the loop's thread while the loop runs in another: the detach is queued
    there and waited for, and run here if the loop stops first (a loop
    stopping runs no callback queued after its last iteration began).  At once
    otherwise: nothing runs the loop meanwhile.
    """
    loop = aio.loop
    if _running_elsewhere(loop):
        detached = threading.Event()

        def detach() -> None:
            try:
                aio.close()
            finally:
                detached.set()

        try:
            loop.call_soon_threadsafe(detach)
        except RuntimeError:
            pass  # closed meanwhile
        else:
            while not detached.wait(_DETACH_POLL_S):
                if not loop.is_running():
                    break  # it stopped first: the detach will not run there
            else:
                return  # the loop ran it
    aio.close()


os.register_at_fork(after_in_child=MainLoop._reset_after_fork)
