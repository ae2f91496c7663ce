"""IOThread: a dedicated thread running one event loop, as QEMU's ``iothread.c``.

An ``IOThread`` owns a thread named ``IO <id>``, the event loop inside it,
that loop's ``AioContext`` and worker pool, and, once asked for, a GLib-like
context the thread serves beside the loop.  This module is its lifecycle
(start, the thread's body, the stop that gives every pending piece of work
its outcome) and its cross-thread API (``call_soon_threadsafe``, ``run``,
``submit``, ``run_sync``); the call protocol behind ``run`` and ``submit`` is
``_call``'s, the properties are ``EventLoopBase``'s.

Locks and owners: ``EventLoopBase._lock`` guards the property values and the
lifecycle fields (``_thread``, ``_aio``, ``_loop``...); everything an
IOThread does to its loop runs in its own thread.

Why one module above 600 lines: the lifecycle, the thread's body and the
cross-thread API read and write the same lifecycle fields under that one
lock (a call refused once the stop began, the hot path opened and closed
with the loop); split apart, each part would reach into another's private
state.  What is not that state's has a module of its own (the call
protocol, the stop, the properties, the platform's calls), and a third of
the lines here are the public API's docstrings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Self, TypeVar, overload

from . import _fork, glib
from ._aio import AioContext
from ._call import CallSet, FutureCall, LoopCall, check_runnable, close_unstarted
from ._errors import IOThreadStopped
from ._event_loop_base import EventLoopBase, Int64Property
from ._platform import check_cpu_affinity, check_fd_headroom, set_os_thread_name
from ._pool import ThreadPool
from ._props import IOTHREAD_DEFAULTS
from ._registry import USER_OBJECTS
from ._runs_in import ANY, ThreadRole, runs_in
from ._shutdown import shut_down
from .glib._driver import AsyncioDriver

__all__ = ["IOThread", "current_iothread", "in_iothread"]

_logger = logging.getLogger(__name__)

#: The IOThread's own thread (from its first instruction to its last).
IOTHREAD: Final = ThreadRole(
    "the IOThread's own thread", lambda io: threading.current_thread() is io._thread
)

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# -- which IOThread runs this thread -------------------------------------------

_current = threading.local()


def current_iothread() -> IOThread | None:
    """The IOThread whose thread is calling, or None."""
    io: IOThread | None = getattr(_current, "iothread", None)
    return io


def in_iothread() -> bool:
    """True when called on an IOThread's own thread."""
    return current_iothread() is not None


@runs_in(_fork.FORK_CHILD)
def _forget_current_after_fork() -> None:
    # A fork from an IOThread's thread: in the child, that thread is no
    # IOThread's (the loop it was running belongs to the parent).
    _current.iothread = None


os.register_at_fork(after_in_child=_forget_current_after_fork)


# -- IOThread -------------------------------------------------------------------

_POLL_PROPS: Final = frozenset({"poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch"})

#: File descriptors an IOThread's loop must be able to open before a uvloop
#: loop is made.  libuv aborts the process (SIGABRT) when its one-time global
#: initialisation, in the first loop of a process, cannot create its signal
#: pipe; the stdlib loop raises OSError instead.  Counted with uvloop 0.23
#: (libuv 1.48): the first loop opens 7 (an epoll, an io_uring, the global
#: and the loop's signal pipes, an eventfd), later ones 5; the AioContext's
#: wake-up channel is one more (docs/design.md, "Descriptors and uvloop").
_UVLOOP_FDS: Final = 8


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

    poll_max_ns = Int64Property()
    poll_grow = Int64Property()
    poll_shrink = Int64Property()

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
        self._cpu_affinity = check_cpu_affinity(cpu_affinity)
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
        # The IOThread's own: its calls still running, and its GLib-like
        # context's driver once one was asked for (QEMU's run_gcontext);
        # until then no GLib machinery runs here at all.  Only the IOThread
        # sets the driver, under _lock: a stop() in any thread closes its
        # context to new sources.
        self._calls = CallSet(f"IOThread {id!r}")
        self._gdriver: AsyncioDriver | None = None
        # In a forked child: the parent's pid, if this IOThread had started
        # there (it is stopped here; _after_fork_in_child).
        self._forked_from: int | None = None
        # The IOThread's own: its loop serves work until stop() ends this.
        self._serving = False

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
        cpus = check_cpu_affinity(value)
        with self._lock:
            self._cpu_affinity = cpus
            aio = self._aio
            if aio is not None:
                try:
                    aio.call_soon_threadsafe(self._apply_cpu_affinity, aio)
                except IOThreadStopped:
                    pass  # stopping: nothing runs that could be placed

    @runs_in(IOTHREAD)
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

    @runs_in(_fork.FORK_CHILD)
    def _after_fork_in_child(self) -> None:
        """In a forked child: stopped, unless it never started.

        Its thread does not exist here.  What it was running -- the loop, its
        AioContext (the wake-up channel, the native inbox), the GLib driver,
        the pool -- is kept, unused and never closed (see ``_fork``).  An
        IOThread that had not started yet can still be started here.
        """
        super()._after_fork_in_child()
        if not self._started_once:
            return
        _fork.keep(self._thread, self._loop, self._aio, self._gdriver, self._calls)
        self._forked_from = os.getppid()
        self._close_hot_path()
        self._thread = None
        self._loop = None
        self._aio = None
        self._gdriver = None
        self._pool = None
        self._thread_id = -1
        self._stop_requested = True
        self._calls = CallSet(f"IOThread {self._id!r}")

    # -- lifecycle -------------------------------------------------------------

    @runs_in(ANY)
    def start(self) -> None:
        """Start the thread and its loop; return once both run.

        Raises:
            RuntimeError: the IOThread was started before (in this
                process, or in the parent it was inherited from by fork).
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

    @runs_in(ANY)
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

    @runs_in(ANY)
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

    @runs_in(ANY)
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

    @runs_in(ANY)
    def _spawn(self) -> tuple[threading.Thread, concurrent.futures.Future[None]]:
        """Register, create the thread, start it."""
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

    @runs_in(ANY)
    def _request_stop(self) -> threading.Thread | None:
        """Queue the loop's stop once; return the thread to join, if any."""
        with self._lock:
            thread, aio, loop = self._thread, self._aio, self._loop
            if thread is None:
                return None
            self._refuse_own_threads_locked()
            if not self._stop_requested:
                self._refuse_work_locked()
                # Not published yet: the thread sees the flag before its loop
                # runs, and goes straight to its shutdown.
                if aio is not None and loop is not None:
                    aio.call_soon_threadsafe(self._end_serving, loop)
        return thread

    def _refuse_work_locked(self) -> None:
        """Stop has begun: refuse new calls, and new GLib sources.

        Sources attached from other threads faster than the loop dispatches
        them would otherwise hold the stop up for as long as they come.
        """
        self._stop_requested = True
        self._close_hot_path()
        if self._gdriver is not None:
            self._gdriver.context._refuse_attach(self._glib_refusal())

    def _glib_refusal(self) -> str:
        return f"belongs to IOThread {self._id!r}, whose stop() has begun"

    def _refuse_own_threads_locked(self) -> None:
        pool = self._pool
        if self._thread is threading.current_thread() or (
            pool is not None and pool.owns_current_thread()
        ):
            raise RuntimeError(
                f"IOThread {self._id!r} cannot be stopped from its own thread or "
                "its worker pool (stop waits for both); stop it from a thread of "
                "your own, or await io.aclose() from another loop"
            )

    @runs_in(ANY)
    def _delete(self) -> bool:
        """``object_del``: take the IOThread out of ``/objects``, then stop it.

        Of concurrent deletes exactly one takes it out and stops it; the
        others get False, as if it were gone already (QEMU removes an object
        from the tree at once).

        Raises:
            RuntimeError: called from the IOThread's own thread or pool,
                before anything changed (see :meth:`stop`).
        """
        with self._lock:
            self._refuse_own_threads_locked()
            if not USER_OBJECTS.remove(self):
                return False
        self.stop()
        return True

    @runs_in(ANY)
    def _forget_when_finished(self) -> None:
        """Forget the thread once it has finished, without joining it."""
        finished = self._finished
        assert finished is not None
        finished.add_done_callback(lambda _: self._forget())

    @runs_in(ANY)
    def _forget(self) -> None:
        """Drop the thread's state once it has exited."""
        with self._lock:
            self._close_hot_path()
            self._thread = None
            self._aio = None
            self._loop = None
            self._pool = None
            self._thread_id = -1
            USER_OBJECTS.remove(self)

    def _make_loop(self) -> asyncio.AbstractEventLoop:
        factory = self._loop_factory or self._default_loop_factory()
        # Once uvloop is imported, the factory may make a uvloop loop: check
        # first, so that running out of descriptors raises instead of
        # aborting the process in libuv.
        if "uvloop" in sys.modules:
            check_fd_headroom(_UVLOOP_FDS, f"the event loop of IOThread {self._id!r}")
        return factory()

    @staticmethod
    def _default_loop_factory() -> LoopFactory:
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
                return uvloop.new_event_loop
        return asyncio.SelectorEventLoop

    @runs_in(IOTHREAD)
    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        finished = self._finished
        assert finished is not None
        try:
            set_os_thread_name(f"IO {self._id}")
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
                # commit); others are spawned on demand.  Created last: only
                # the loop can still refuse it, and then its threads go.
                pool = self._new_pool(f"IO {self._id} worker", params)
                try:
                    loop.set_default_executor(pool)
                except BaseException:
                    pool.shutdown()
                    raise
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
            if not stop_early:
                self._open_hot_path(aio)
            self._catch_up_locked(params, aio)
        _current.iothread = self
        ready.set_result(None)
        try:
            try:
                if not stop_early:
                    self._serving = True
                    self._serve(loop)
            finally:
                # Also when the loop ended unexpectedly (a bug of ours):
                # refuse new work, and give what is pending its outcome.
                self._serving = False
                with self._lock:
                    self._refuse_work_locked()
                self._shut_down(loop, aio, pool)
        except BaseException:
            _logger.exception("IOThread %r ended unexpectedly; it takes no more work", self._id)
        finally:
            # Each step runs even if the one before raised: whoever waits in
            # stop() or aclose() must be released, and nothing may leak.
            try:
                try:
                    self._detach_g_main_context()
                finally:
                    aio.close()
            finally:
                try:
                    loop.close()
                finally:
                    asyncio.set_event_loop(None)
                    _current.iothread = None
                    # Stopped: every state reader says so from here on, also
                    # when nobody has called stop() (the thread ended on its own).
                    with self._lock:
                        self._thread_id = -1
                        self._aio = None
                        self._loop = None
                    # Empty already, unless the shutdown was cut short (a bug
                    # of ours): nothing will run their tasks now.
                    self._calls.abandon()
                    del aio, loop
                    finished.set_result(None)

    @runs_in(IOTHREAD)
    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the loop until stop() ends it, through what user code lets out.

        asyncio lets a SystemExit or KeyboardInterrupt out of the loop (a
        task keeps it as its outcome too).  In an IOThread nothing but user
        code raises them (signals go to the main thread), and the IOThread
        goes on serving: the outcome of a call reaches its caller; anything
        else is reported to the loop's exception handler (docs/design.md,
        "BaseException in an IOThread").  Anything else out of the loop is
        a bug of ours, and ends the IOThread.
        """
        while self._serving:
            try:
                loop.run_forever()
            except (KeyboardInterrupt, SystemExit) as exc:
                self._escaped(loop, exc)

    @runs_in(IOTHREAD)
    def _escaped(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        """Report *exc*, let out of the loop, unless it is a call's outcome."""
        if not self._calls.outcome_of_a_call(exc):
            loop.call_exception_handler(
                {
                    "message": f"{type(exc).__name__} raised in IOThread {self._id!r}, "
                    "which goes on serving",
                    "exception": exc,
                }
            )

    @runs_in(IOTHREAD)
    def _end_serving(self, loop: asyncio.AbstractEventLoop) -> None:
        """stop()'s request, run on the loop: leave _serve().

        A flag, not just loop.stop(): a stop that ran in the loop iteration
        a SystemExit was let out of is forgotten by the loop (run_forever
        resets it), and once the shutdown runs the loop, stopping it would
        cut the shutdown short.
        """
        if self._serving:
            self._serving = False
            loop.stop()

    @runs_in(IOTHREAD)
    def _shut_down(
        self, loop: asyncio.AbstractEventLoop, aio: AioContext, pool: ThreadPool
    ) -> None:
        """Run the shutdown to its end, through what user code lets out of it
        (a task's clean-up raising SystemExit), as _serve() does."""
        # asyncio's own Task, not the loop's create_task(): a task factory
        # set on the loop is user code, which must not keep it from stopping.
        stopping = asyncio.Task(shut_down(self._id, aio, self._calls, pool), loop=loop)
        while True:
            try:
                loop.run_until_complete(stopping)
                return
            except (KeyboardInterrupt, SystemExit) as exc:
                if stopping.done():
                    raise  # ours: the shutdown itself failed
                self._escaped(loop, exc)

    @runs_in(IOTHREAD)
    def _catch_up_locked(self, params: Mapping[str, int], aio: AioContext) -> None:
        """Push what was written while the loop was being built.

        The AioContext and the pool were made from the snapshot *params*; a
        write since then committed its value but found nothing running to
        push it to (``_aio`` and ``_pool`` were still None).
        """
        changed = {name for name, value in params.items() if self._props[name] != value}
        if changed:
            self._apply(changed)
        if self._cpu_affinity != aio.cpu_affinity:
            aio.call_soon_threadsafe(self._apply_cpu_affinity, aio)

    @runs_in(ANY)
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
        if self._forked_from is not None:
            return IOThreadStopped(
                _fork.forked_message(f"IOThread {self._id!r}", self._forked_from)
            )
        if not self._started_once:
            return IOThreadStopped(f"IOThread {self._id!r} is not running; start() it first")
        return IOThreadStopped(f"IOThread {self._id!r} is stopped; it takes no more work")

    @runs_in(ANY)
    def get_g_main_context(self) -> glib.MainContext:
        """The IOThread's GLib-like context (QEMU's iothread_get_g_main_context).

        The first call creates it, makes it the thread-default context inside
        the IOThread, and has the IOThread's thread serve it from then on
        alongside its asyncio loop; later calls return the same context.
        ``stop()`` destroys and finalises its sources.

        Raises:
            IOThreadStopped: the IOThread is not running.
        """
        self._running_context()
        if current_iothread() is self:
            return self._attach_g_main_context()
        return self.run_sync(self._attach_g_main_context)

    @runs_in(IOTHREAD)
    def _attach_g_main_context(self) -> glib.MainContext:
        """Create and attach the GLib-like context on the first call.

        From then on the loop dispatches the context's sources too, and the
        context is this thread's thread-default context.
        """
        if self._gdriver is None:
            context = glib.MainContext()
            context._serve_through_base_exceptions()  # the IOThread goes on
            driver = AsyncioDriver(context, asyncio.get_running_loop())
            driver.start()  # also makes the context this thread's default
            with self._lock:
                self._gdriver = driver
                if self._stop_requested:  # asked for by a call the stop drains
                    driver.context._refuse_attach(self._glib_refusal())
        return self._gdriver.context

    @runs_in(IOTHREAD)
    def _detach_g_main_context(self) -> None:
        """Destroy and finalise the GLib-like context's sources, if it was attached."""
        with self._lock:
            driver, self._gdriver = self._gdriver, None
        if driver is None:
            return
        # Also takes the context off this thread's thread-default stack, even
        # if code on this thread left it unbalanced: stop must finish.
        driver.close()

    # -- the cross-thread API ----------------------------------------------------

    # While the IOThread runs, io.call_soon_threadsafe is its inbox's own
    # submit, a C method where the native core is built: an instance attribute
    # of that name shadows the method below, so a hand-off runs no Python
    # code of ours at all.  Before start and from the moment stop() begins,
    # the method below answers, refusing.  Both under _lock.

    def _open_hot_path(self, aio: AioContext) -> None:
        vars(self)["call_soon_threadsafe"] = aio.call_soon_threadsafe

    def _close_hot_path(self) -> None:
        vars(self).pop("call_soon_threadsafe", None)

    @runs_in(ANY)
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
        # Reached only while the IOThread does not run (see _open_hot_path),
        # or by a caller that looked it up on the class.
        aio = self._running_context()
        return aio.call_soon_threadsafe(callback, *args, context=context)

    @overload
    async def run(
        self, func: Coroutine[Any, Any, T], /, *, abandon_on_cancel: bool = False
    ) -> T: ...
    @overload
    async def run(
        self,
        func: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        abandon_on_cancel: bool = False,
    ) -> T: ...
    @overload
    async def run(
        self, func: Callable[..., T], /, *args: Any, abandon_on_cancel: bool = False
    ) -> T: ...
    @runs_in(ANY)
    async def run(self, func: Any, /, *args: Any, abandon_on_cancel: bool = False) -> Any:
        """Run *func* on the IOThread and await its outcome from any loop.

        A coroutine function (or a coroutine object) runs as a task on the
        IOThread's loop, from Python 3.12 started eagerly (its first step
        runs as the call starts) unless that loop has a task factory; a plain
        function is called on the IOThread's thread.  The caller's
        contextvars are copied in.  Awaited from the IOThread's own loop, it
        runs inline, without a hop.

        Cancelling the awaiting task (``asyncio.wait_for``, a task group...)
        cancels the inner work **and waits for it to finish** before the
        caller sees ``CancelledError``: work not started yet never starts, a
        task is cancelled and awaited, and a plain function already running
        cannot be interrupted, so the caller waits for its end.  With
        ``abandon_on_cancel=True`` (anyio's ``to_thread.run_sync`` option) a
        cancelled caller sees ``CancelledError`` at once: work not started
        never starts, a task is cancelled, and a plain function already
        running completes in the IOThread, its outcome dropped.

        Raises:
            IOThreadStopped: the IOThread is not running, or stopped before
                the work completed.
            TypeError: *abandon_on_cancel* is not a bool.
            BaseException: whatever *func* raised, with its traceback.
        """
        caller = asyncio.get_running_loop()
        try:
            if not isinstance(abandon_on_cancel, bool):
                raise TypeError(f"abandon_on_cancel must be a bool, not {abandon_on_cancel!r}")
            aio = self._running_context()
            if caller is aio.loop:
                check_runnable(func, args)
            else:
                call = LoopCall(self._calls, aio, func, args, caller, abandon_on_cancel)
                aio.call_soon_threadsafe(call.start)
        except BaseException:
            close_unstarted(func)  # refused: it will never run
            raise
        if caller is aio.loop:
            result = func if inspect.iscoroutine(func) else func(*args)
            if inspect.isawaitable(result):
                return await result
            return result
        return await call.result()

    # As run(): the future's result is the coroutine's, not the coroutine.
    @overload
    def submit(self, func: Coroutine[Any, Any, T], /) -> concurrent.futures.Future[T]: ...
    @overload
    def submit(
        self, func: Callable[..., Coroutine[Any, Any, T]], /, *args: Any
    ) -> concurrent.futures.Future[T]: ...
    @overload
    def submit(self, func: Callable[..., T], /, *args: Any) -> concurrent.futures.Future[T]: ...
    @runs_in(ANY)
    def submit(self, func: Any, /, *args: Any) -> concurrent.futures.Future[Any]:
        """Run *func* on the IOThread; return a ``concurrent.futures.Future``.

        For plain threads; *func* is taken as :meth:`run` takes it.  The
        future follows ``concurrent.futures``: ``cancel()`` succeeds while
        the call is queued, and then *func* never runs.  For a plain function
        the future is running from the moment its call begins, and
        ``cancel()`` returns False, as ``ThreadPoolExecutor``'s does.  For a
        coroutine function or object (as ``run_coroutine_threadsafe``) the
        future stays pending while the task runs, and ``cancel()`` cancels
        the task.

        Raises:
            IOThreadStopped: the IOThread is not running.
            TypeError: *func* is neither callable nor a coroutine object.
        """
        return self._submit(func, args).future

    @runs_in(ANY)
    def _submit(self, func: Any, args: tuple[Any, ...]) -> FutureCall:
        try:
            aio = self._running_context()
            call = FutureCall(self._calls, aio, func, args)
            aio.call_soon_threadsafe(call.start)
        except BaseException:
            close_unstarted(func)  # refused: it will never run
            raise
        return call

    @overload
    def run_sync(self, func: Coroutine[Any, Any, T], /, *, timeout: float | None = None) -> T: ...
    @overload
    def run_sync(
        self,
        func: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        timeout: float | None = None,
    ) -> T: ...
    @overload
    def run_sync(
        self, func: Callable[..., T], /, *args: Any, timeout: float | None = None
    ) -> T: ...
    @runs_in(ANY)
    def run_sync(self, func: Any, /, *args: Any, timeout: float | None = None) -> Any:
        """Block a plain thread until ``func(*args)`` has run on the IOThread.

        After *timeout* seconds it gives up, and says what became of the work:
        not started yet, it never runs; a plain function already running
        cannot be interrupted and runs to its end; a task is cancelled.  Work
        that completed meanwhile gives its outcome instead.

        Raises:
            RuntimeError: called from the IOThread's own thread (it would
                deadlock); ``await io.run(...)`` there instead.
            TimeoutError: *timeout* seconds passed; its message says whether
                the work was cancelled before it started, is still running
                and will complete, or had its task cancelled.
            IOThreadStopped: the IOThread is not running.
            BaseException: whatever *func* raised.
        """
        if current_iothread() is self:
            raise RuntimeError(
                f"run_sync() called from IOThread {self._id!r}'s own thread would deadlock; "
                "await io.run(...) or call the function directly there"
            )
        call = self._submit(func, args)
        future = call.future
        try:
            return future.result(timeout)
        except TimeoutError:
            if not future.cancel():
                if future.done():
                    return future.result()
                raise TimeoutError(
                    f"{func!r} still running on IOThread {self._id!r} after {timeout} s; "
                    "it cannot be interrupted and will run to completion, its outcome "
                    "dropped; submit() it and keep the future to learn its outcome"
                ) from None
            if call.plain:
                raise TimeoutError(
                    f"{func!r} did not start on IOThread {self._id!r} within {timeout} s; "
                    "it was cancelled before it started and will not run"
                ) from None
            raise TimeoutError(
                f"{func!r} did not complete on IOThread {self._id!r} within {timeout} s; "
                "its task was cancelled (or will not start)"
            ) from None
