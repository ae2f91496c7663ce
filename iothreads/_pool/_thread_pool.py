"""``ThreadPool``: its limits, dispatch, shutdown and statistics (the package
docstring tells the rules it follows).

Why one module above 600 lines: the pool's lock-guarded state (the queue,
the idle stack, ``_waking`` and the counts) and every transition that keeps
its invariants belong together.  Submitters, workers, the spawner, limit
changes, failed thread starts and shutdown all move the same fields under the
same lock; split over modules, each invariant would be.  What is not that
state's -- a request, a worker's loop, the spawner thread -- has a module of
its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeVar, TypeVarTuple

from .._errors import InvalidParameterType, InvalidParameterValue
from .._fork import FORK_CHILD, forked_message, keep, track
from .._props import check_int64, check_thread_pool_limits
from .._runs_in import ANY, ThreadRole, runs_in
from ._requests import FutureRequest, LoopRequest, Request, RequestState
from ._spawner import Spawner
from ._worker import POOL_WORKER, Worker, current_worker

__all__ = ["ThreadPool", "ThreadPoolStatistics"]

#: A limit left as it is (the setter of the other one).
_KEEP: Final = object()

_logger = logging.getLogger(__name__)

#: The spawner thread of the ``ThreadPool`` whose method is called.
POOL_SPAWNER: Final = ThreadRole(
    "this pool's spawner thread", lambda pool: pool._spawner.owns_current_thread()
)

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: Seconds an idle worker above ``min_threads`` waits before it exits.  QEMU's
#: thread pool, trio and anyio all use 10 s (docs/design.md, "The thread pool").
DEFAULT_IDLE_TIMEOUT: Final = 10.0

#: QEMU's THREAD_POOL_MAX_THREADS_DEFAULT (docs/design.md, "The thread pool").
DEFAULT_MAX_THREADS: Final = 64


@dataclass(frozen=True)
class ThreadPoolStatistics:
    """A consistent snapshot of a ``ThreadPool`` (taken under its lock).

    ``threads`` counts the workers that exist or are being started and have not
    been told to exit; ``spawned`` and ``exited`` count them since the pool was
    created (``threads == spawned - exited``).  ``completed`` counts requests
    whose function ran to its end (returned or raised) for a caller that still
    wanted the result; ``cancelled`` counts requests withdrawn by their caller,
    whether they never ran or their result was discarded.  ``queued`` may
    include ``submit()`` futures cancelled by their caller that no worker has
    discarded yet.  A worker woken for the queue that has not reached it yet,
    or running a ``submit()`` future's done-callbacks, counts as neither
    ``idle`` nor ``active``.  ``start_failures`` counts the thread starts
    the system refused (a worker's or the spawner's ``Thread.start()``
    raised); each is also logged as a warning.
    """

    threads: int
    idle: int
    active: int
    queued: int
    min: int
    max: int
    peak: int
    spawned: int
    exited: int
    completed: int
    cancelled: int
    start_failures: int


def _check_idle_timeout(value: object) -> float:
    """Return *value* as a float if it is a usable idle timeout.

    Raises:
        InvalidParameterType: *value* is not an int or a float (a bool is not).
        InvalidParameterValue: *value* is not positive, or is beyond what a
            lock can wait for (``threading.TIMEOUT_MAX``; this also refuses
            infinity and NaN).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameterType("idle_timeout must be a number of seconds")
    if not (0 < value <= threading.TIMEOUT_MAX) or math.isnan(value):
        raise InvalidParameterValue(
            f"idle_timeout must be in range (0, {threading.TIMEOUT_MAX}] seconds"
        )
    return float(value)


class ThreadPool(ThreadPoolExecutor):
    """A pool of worker threads sized between ``min_threads`` and ``max_threads``.

    It subclasses ``ThreadPoolExecutor`` only because the stdlib loop's
    ``set_default_executor()`` refuses anything else (Python 3.11+); none of
    that class's machinery is used: its ``__init__`` is not called and every
    public method is implemented here.

    Workers are daemon threads, so a pool that is never shut down does not
    hang interpreter exit (its min workers never exit by themselves); shut the
    pool down (or use it as a context manager) to wait for its work.  Workers
    keep their pool alive until it is shut down.

    A ``submit()`` future's done-callbacks run in its worker before the
    worker takes other work, as in ``ThreadPoolExecutor``: they may submit
    and wait (a new worker is spawned for that, below ``max_threads``).
    ``run()`` outcomes are handed to the awaiting loop.

    When the system refuses a new thread (``Thread.start()`` raises, as a
    ``RuntimeError`` "can't start new thread") and no worker is left, the
    queued requests fail with that error, as ``ThreadPoolExecutor.submit()``
    raises it; the pool itself recovers with the next request.  Their
    done-callbacks run in the thread that met the failure (usually the
    spawner, which hands its role over first, so they may use the pool).
    """

    def __init__(
        self,
        min_threads: int = 0,
        max_threads: int = DEFAULT_MAX_THREADS,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        name: str = "worker",
    ) -> None:
        """Create the pool and its *min_threads* workers.

        A pool with ``min_threads=0`` starts no thread until a worker is needed.

        Workers are named ``f"{name}-{n}"``, n counting from 1.

        Raises:
            InvalidParameterType: a limit that is not an int64 (a bool is not),
                an idle_timeout that is not a number, a name that is not a str.
            InvalidParameterValue: a negative limit, ``min > max``,
                ``max == 0``, or an idle_timeout that is not positive.
        """
        min_threads = check_int64("thread-pool-min", min_threads)
        max_threads = check_int64("thread-pool-max", max_threads)
        check_thread_pool_limits(min_threads, max_threads)
        if not isinstance(name, str):
            raise InvalidParameterType("name must be a str")
        self._name = name
        self._idle_timeout = _check_idle_timeout(idle_timeout)

        self._lock = threading.Lock()
        # Every field below is guarded by self._lock.
        self._min = min_threads
        self._max = max_threads
        self._closed = False  # shutdown() was called
        self._queue: collections.deque[Request] = collections.deque()
        self._idle: list[Worker] = []  # a stack: the most recently idle on top
        # Workers taken off the idle stack to drain the queue that have not
        # reached it yet.  Invariant, whenever the lock is free: a non-empty
        # queue with idle workers has one on its way (_waking > 0), which
        # wakes the next idle one if it leaves requests behind (_kick_locked).
        self._waking = 0
        # Workers started to drain the queue (not idle) that have not reached
        # it yet.  They count for the queue from their record on: a thread may
        # run long after its Thread.start() returned, and the spawner, looking
        # at the queue again meanwhile, would make another for the same request.
        self._starting = 0
        self._workers: set[threading.Thread] = set()  # to join at shutdown (and retired spawners)
        # Pool threads inside shutdown(wait=True): no other pool thread in
        # shutdown joins them (they would wait for each other).
        self._shutting_down: set[threading.Thread] = set()
        self._nthreads = 0  # workers that exist or are being started, not told to exit
        self._active = 0
        self._peak = 0
        self._spawned = 0
        self._exited = 0
        self._completed = 0
        self._cancelled = 0
        self._start_failures = 0
        # A refused thread start stops the spawner's top-up (_top_up_locked)
        # until the limits are written again: the system would refuse the
        # next one as well, and retrying at once would only spin.
        self._top_up_held = False
        # Constructor workers whose thread has not reached its first wait yet.
        self._booting = min_threads
        self._booted = threading.Condition(self._lock)

        # The spawner thread starts the workers off the submitters' path; it
        # is made on the pool's first need (see _spawner.py).  A pool with
        # min_threads > 0 starts it here instead: its constructor pays for
        # thread starts anyway, and a pool configured for latency keeps even
        # that one off its requests' path.
        #
        # The min workers are started here, by the constructor, which returns
        # once each has reached its first wait: the seed commit's point is no
        # thread creation once requests flow, and a burst right after this
        # must not compete for the GIL with threads still booting.  Their
        # records exist before the spawner runs, so it finds nothing to top up.
        self._spawner = Spawner(self)
        # In a forked child: the parent's pid (the pool is shut down there).
        self._forked_from: int | None = None
        track(self)
        with self._lock:
            initial = [self._new_worker_locked(idle=True) for _ in range(min_threads)]
            if min_threads:
                self._spawner.make_thread_locked()
        if min_threads:
            self._spawner.start()
        for worker in initial:
            self._start_worker(worker)
        with self._lock:
            while self._booting:
                self._booted.wait()

    @runs_in(FORK_CHILD)
    def _after_fork_in_child(self) -> None:
        """In a forked child: shut down, with a new lock.

        Its workers and spawner were the parent's threads: they count as
        exited.  Its queued requests are the parent's and get their outcome
        there; here nobody delivers them (their futures' locks may be held
        forever, their callbacks are the parent's program's).
        """
        keep(self._queue)
        self._lock = threading.Lock()
        self._booted = threading.Condition(self._lock)
        self._spawner.after_fork_in_child(self._lock)
        self._forked_from = os.getppid()
        self._closed = True
        self._queue = collections.deque()
        self._idle = []
        self._workers = set()
        self._shutting_down = set()
        self._exited += self._nthreads
        self._nthreads = self._active = self._waking = self._starting = self._booting = 0

    # ------------------------------------------------------------------ limits

    @property
    def name(self) -> str:
        """The prefix of the worker thread names."""
        return self._name

    @property
    def idle_timeout(self) -> float:
        """Seconds an idle worker above ``min_threads`` waits before it exits."""
        return self._idle_timeout

    @property
    def min_threads(self) -> int:
        """Workers kept alive regardless of demand (``thread-pool-min``)."""
        with self._lock:
            return self._min

    @min_threads.setter
    def min_threads(self, value: int) -> None:
        self._update_limits(value, _KEEP)

    @property
    def max_threads(self) -> int:
        """Workers at most (``thread-pool-max``)."""
        with self._lock:
            return self._max

    @max_threads.setter
    def max_threads(self, value: int) -> None:
        self._update_limits(_KEEP, value)

    @runs_in(ANY)
    def set_limits(self, min_threads: int, max_threads: int) -> None:
        """Change both limits at once, live.

        Returns without waiting for any thread: raising min has the spawner
        start the missing workers, one at a time, as does raising max for
        queued requests; lowering max retires excess idle workers at once and
        busy ones when they finish.  Lowering min lets the surplus idle
        workers time out.  After shutdown the limits are recorded but no
        worker is started.  When the system refuses a thread, the spawner
        stops there (``statistics().start_failures``, and a logged warning)
        until the limits are written again.

        Raises:
            InvalidParameterType: a limit that is not an int64 (a bool is not).
            InvalidParameterValue: a negative limit, a limit above
                ``THREAD_POOL_LIMIT``, ``min > max`` or ``max == 0``; the pool
                is left exactly as it was.
        """
        self._update_limits(min_threads, max_threads)

    def _update_limits(self, min_threads: object, max_threads: object) -> None:
        # _KEEP keeps a limit as it is, read under the lock with the other.
        with self._lock:
            start_spawner = self._set_limits_locked(
                self._min if min_threads is _KEEP else min_threads,
                self._max if max_threads is _KEEP else max_threads,
            )
        if start_spawner:
            self._spawner.start()

    @runs_in(ANY)
    def _set_limits_locked(self, min_threads: object, max_threads: object) -> bool:
        # With self._lock held.  Validates everything before changing anything
        # (QEMU stores a bad max before rejecting it).  Returns True when the
        # caller must start the spawner once it has released the lock.
        new_min = check_int64("thread-pool-min", min_threads)
        new_max = check_int64("thread-pool-max", max_threads)
        check_thread_pool_limits(new_min, new_max)
        self._min, self._max = new_min, new_max
        self._top_up_held = False  # a new request: try again
        if self._closed:
            return False
        # Lowering max: the coldest idle workers go first; busy and starting
        # ones check the limit whenever they look for work.  (Bounded by the
        # threads that exist, not by the value.)
        while self._nthreads > new_max and self._idle:
            self._retire_locked(self._idle.pop(0))
        self._kick_locked()
        # Raising min, or max with requests waiting: the spawner makes and
        # starts the missing workers, one at a time, so this caller (and
        # whoever waits for this lock) does no work in proportion to the new
        # value (docs/design.md, "The thread pool").
        return self._top_up_wanted_locked() and self._spawner.wake_locked()

    def _top_up_wanted_locked(self) -> bool:
        # With self._lock held: the limits ask for a worker more -- fewer
        # than min exist, or requests wait that no worker will come for (being
        # started, idle or on its way to the queue) and fewer than max exist.
        if self._closed or self._top_up_held:
            return False
        return self._nthreads < self._min or (
            self._nthreads < self._max and len(self._queue) > self._coming_locked()
        )

    @runs_in(POOL_SPAWNER)
    def _top_up_locked(self) -> Worker | None:
        # With self._lock held, by the spawner thread: the next worker the
        # limits ask for, counted at once; the spawner starts it.
        if not self._top_up_wanted_locked():
            return None
        return self._new_worker_locked(idle=not self._queue)

    # ------------------------------------------------------------- submission

    @runs_in(ANY)
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` in a worker, in a copy of the caller's context.

        Never waits for a worker thread to be created.  The one exception, once
        in a pool's life: the first spawn of a pool created with
        ``min_threads=0`` starts the pool's spawner thread in the caller.

        Raises:
            RuntimeError: the pool was shut down, or inherited by fork.
        """
        request = FutureRequest(fn, args, kwargs)
        self._dispatch(request)
        return request.future

    @runs_in(ANY)
    async def run(self, func: Callable[[*_Ts], _T], /, *args: *_Ts) -> _T:
        """Await ``func(*args)`` run in a worker, from any running loop.

        The worker resolves one future of the awaiting loop (one
        ``call_soon_threadsafe``), and runs the call in a copy of the caller's
        context.  Cancelling the awaiting task withdraws the request if it is
        still queued (it never runs); a running call completes and its result
        is discarded.  Exceptions reach the caller with their traceback.

        Raises:
            RuntimeError: the pool was shut down, or inherited by fork.
            asyncio.CancelledError: the task was cancelled, or the request was
                dropped by ``shutdown(cancel_futures=True)``.
        """
        request = LoopRequest(asyncio.get_running_loop(), func, args)
        self._dispatch(request)
        try:
            return await request.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    @runs_in(ANY)
    def _dispatch(self, request: Request) -> None:
        # In the submitting thread.  Queue the request; wake the most recently
        # idle worker unless one is already on its way to the queue (it takes
        # this request, or wakes the next idle worker for it).  When the queue
        # holds more requests than workers will come for them (idle, on their
        # way, or being started), below max, have the spawner start one more:
        # QEMU spawns one per request that finds no idle worker, and an idle
        # worker already counted for an earlier request of a burst is not idle
        # for this one.  Meanwhile the busy workers take the request if they
        # finish first.
        with self._lock:
            if self._closed:
                if self._forked_from is not None:
                    what = f"thread pool {self._name!r}"
                    raise RuntimeError(forked_message(what, self._forked_from))
                raise RuntimeError(f"cannot submit to thread pool {self._name!r}: it is shut down")
            self._queue.append(request)
            if self._idle and not self._waking:
                self._summon_locked()
            if len(self._queue) <= self._coming_locked() or self._nthreads >= self._max:
                return
            if not self._spawn_locked(idle=False):
                return
        self._spawner.start()  # the first spawn of the pool's life (see _spawner.py)

    @runs_in(ANY)
    def _withdraw(self, request: LoopRequest) -> None:
        # The task awaiting *request* was cancelled (on its loop).
        with self._lock:
            if request.state is RequestState.QUEUED:
                request.state = RequestState.CANCELLED
                self._queue.remove(request)
            elif request.state is RequestState.RUNNING:
                request.state = RequestState.DISCARDED
            else:
                return  # done (or cancelled by shutdown), already counted
            self._cancelled += 1

    # ---------------------------------------------------------------- workers

    @runs_in(ANY)
    def _new_worker_locked(self, *, idle: bool) -> Worker:
        # With self._lock held; the caller starts the thread.  The worker is
        # counted at once (like QEMU's cur_threads) so that concurrent
        # submitters do not over-spawn.  An *idle* one goes on the idle stack
        # before its thread runs, so it can be woken at once; it goes at the
        # bottom, the coldest place, so that workers already running are
        # preferred.  A non-idle one drains the queue when it starts, and
        # counts as starting until it gets there.
        self._spawned += 1
        self._nthreads += 1
        self._peak = max(self._peak, self._nthreads)
        worker = Worker(self, f"{self._name}-{self._spawned}", starts_idle=idle)
        if idle:
            worker.idle = True
            self._idle.insert(0, worker)
        else:
            worker.starting = True
            self._starting += 1
        return worker

    def _coming_locked(self) -> int:
        # With self._lock held: how many workers will come for queued requests
        # -- idle ones, ones woken and on their way, and ones started (or
        # waiting for the spawner) to drain the queue.  A worker started idle
        # is counted on the idle stack (or as woken, once summoned).
        return len(self._idle) + self._waking + self._starting

    def _spawn_locked(self, *, idle: bool) -> bool:
        # With self._lock held: one more worker, started by the spawner
        # thread.  Returns True when there was no spawner yet: the caller must
        # then call self._spawner.start() once it has released the lock.
        return self._spawner.request_locked(self._new_worker_locked(idle=idle))

    @runs_in(ANY)
    def _start_worker(self, worker: Worker) -> None:
        # Without the lock.  Called by the spawner thread, or by the
        # constructor for the min workers.
        try:
            worker.thread.start()
        except Exception as exc:  # "can't start new thread" (RuntimeError), MemoryError...
            self._start_failed(worker, exc, refused=True)
            return
        with self._lock:
            # Forget the workers that have exited (joining them is moot).
            self._workers = {t for t in self._workers if t.is_alive()}
            self._workers.add(worker.thread)

    @runs_in(ANY)
    def _start_refused(self, thread: threading.Thread, exc: Exception) -> None:
        # Without the lock, in the thread whose Thread.start() of *thread*
        # (the spawner's) raised.
        with self._lock:
            figures = self._refused_locked()
        self._log_refusal(thread, exc, figures)

    def _refused_locked(self) -> tuple[int, int, int]:
        # With self._lock held: count a refused thread start and hold the
        # top-up; returns the figures the log line gives.
        self._start_failures += 1
        self._top_up_held = True
        return self._nthreads, self._min, self._max

    def _log_refusal(
        self, thread: threading.Thread, exc: Exception, figures: tuple[int, int, int]
    ) -> None:
        # Without the lock (logging is I/O).
        threads, low, high = figures
        _logger.warning(
            "thread pool %r: the system refused to start thread %r (%s: %s); "
            "%d workers (thread-pool-min %d, thread-pool-max %d); it goes on with "
            "the workers it has and tries again when the limits are next written",
            self._name,
            thread.name,
            type(exc).__name__,
            exc,
            threads,
            low,
            high,
        )

    @runs_in(ANY)
    def _start_failed(self, worker: Worker, exc: Exception, *, refused: bool = False) -> None:
        # Without the lock, in the thread that met the failure: the spawner
        # thread, the constructor, or a submitter whose spawner could not
        # start.  The worker never existed: undo it, and count the refusal of
        # its thread (*refused*) at the same time, so that no snapshot shows
        # one without the other.  When no worker is left, the queue fails
        # with *exc* (as ThreadPoolExecutor.submit() raises it) instead of
        # hanging; otherwise, if the worker had been woken for the queue, the
        # next idle one is.
        #
        # The failures are delivered here, so their done-callbacks run in this
        # thread.  The spawner first retires: a callback may submit again and
        # wait, and that retry's worker must be started by a new spawner, not
        # wait for the very thread that runs the callback.
        orphans: list[Request] = []
        with self._lock:
            self._booted_locked()
            self._arrived_locked(worker)
            if not worker.retired:
                self._exit_locked(worker)
            figures = self._refused_locked() if refused else None
            if self._nthreads == 0:
                orphans = self._fail_all_locked()
            else:
                self._kick_locked()
            if orphans and self._spawner.owns_current_thread():
                # It stops being the spawner, and is joined at shutdown like
                # a worker.
                self._workers.add(threading.current_thread())
                self._spawner.retire_locked()
        if figures is not None:
            self._log_refusal(worker.thread, exc, figures)
        for request in orphans:
            request.deliver(None, exc)

    @runs_in(ANY)
    def _booted_locked(self) -> None:
        # With self._lock held, by a new worker's thread (or the thread that
        # could not start it).  While the constructor waits, every worker is
        # one of its min workers: count it as ready.
        if self._booting:
            self._booting -= 1
            if not self._booting:
                self._booted.notify()

    @runs_in(POOL_WORKER)
    def _take_locked(self, worker: Worker) -> Request | None:
        # With self._lock held, by *worker* itself.  Returns the next queued
        # request (started); or None after either putting the worker on top of
        # the idle stack (the queue is empty), or deciding that it exits
        # (retired).  Whoever leaves requests behind in the queue makes sure
        # an idle worker, if any, is on its way to them.  (The hot path:
        # _arrived_locked and _kick_locked are inlined.)
        if worker.summoned:
            worker.summoned = False
            self._waking -= 1
        elif worker.starting:
            worker.starting = False
            self._starting -= 1
        queue = self._queue
        while True:
            if self._nthreads > self._max or (self._closed and not queue):
                self._exit_locked(worker)
                self._kick_locked()
                return None
            if not queue:
                worker.idle = True
                self._idle.append(worker)
                return None
            request = queue.popleft()
            if request.begin():
                self._active += 1
                if queue and self._idle and not self._waking:
                    self._summon_locked()
                return request
            self._cancelled += 1

    @runs_in(POOL_WORKER)
    def _expire_locked(self, worker: Worker) -> bool:
        # With self._lock held, by *worker* itself: it is still on the idle
        # stack after an idle timeout.  It exits while more than min workers
        # exist.
        if self._nthreads > self._min:
            self._exit_locked(worker)
            return True
        return False

    def _summon_locked(self) -> None:
        # With self._lock held, the idle stack not empty: wake its top worker,
        # the most recently idle, to drain the queue.
        worker = self._idle.pop()
        worker.idle = False
        worker.summoned = True
        self._waking += 1
        worker.wake.release()

    def _kick_locked(self) -> None:
        # With self._lock held, after a change that could leave queued
        # requests with idle workers and none on its way to them (a worker
        # arrived at the queue, left the pool, or a limit changed): restores
        # _waking's invariant by waking one more.
        if self._queue and self._idle and not self._waking:
            self._summon_locked()

    def _arrived_locked(self, worker: Worker) -> None:
        # With self._lock held: *worker* reached the queue (or never will): it
        # is no longer on its way.
        if worker.summoned:
            worker.summoned = False
            self._waking -= 1
        elif worker.starting:
            worker.starting = False
            self._starting -= 1

    def _retire_locked(self, worker: Worker) -> None:
        # With self._lock held: *worker* was just taken off the idle stack and
        # must exit.
        worker.idle = False
        self._exit_locked(worker)
        worker.wake.release()

    def _exit_locked(self, worker: Worker) -> None:
        # With self._lock held: account for a worker leaving the pool (its
        # thread exits soon after, or never ran).
        if worker.idle:
            worker.idle = False
            self._idle.remove(worker)
        worker.retired = True
        self._nthreads -= 1
        self._exited += 1

    @runs_in(POOL_WORKER)
    def _finish_locked(self, request: Request) -> None:
        # With self._lock held, by the worker that ran *request*: it was
        # delivered (unless its caller withdrew it meanwhile, which counted
        # it).
        self._active -= 1
        if request.state is RequestState.RUNNING:
            request.state = RequestState.DONE
            self._completed += 1

    def _fail_all_locked(self) -> list[Request]:
        # With self._lock held, when no worker is left to serve the queue:
        # empty it, and return its requests that have not been withdrawn,
        # marked done.  Their functions never run: they count as neither
        # active nor completed.
        failed = []
        while self._queue:
            request = self._queue.popleft()
            if request.begin():
                request.state = RequestState.DONE
                failed.append(request)
            else:
                self._cancelled += 1
        return failed

    # --------------------------------------------------------------- shutdown

    @runs_in(ANY)
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new requests; the workers exit once the queue is drained.

        With *cancel_futures*, the queued requests are cancelled (they never
        run) instead of drained; running ones always complete.  With *wait*,
        return when every worker (and the spawner) has exited.  Calling it
        again is harmless.  Called from one of the
        pool's own threads (a worker, or a done-callback it runs), it waits
        neither for that thread nor for another pool thread inside
        ``shutdown()``: they cannot exit before it returns.
        """
        dropped: list[Request] = []
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    request = self._queue.popleft()
                    request.state = RequestState.CANCELLED
                    self._cancelled += 1
                    dropped.append(request)
            while self._idle:
                self._retire_locked(self._idle.pop())
            self._spawner.close_locked()
        for request in dropped:
            request.withdraw()
        if not wait:
            return
        # Once the spawner is gone, no worker can appear any more.
        me = threading.current_thread()
        with self._lock:
            # A worker, or a retired spawner running done-callbacks.
            pool_thread = self.owns_current_thread() or me in self._workers
            if pool_thread:
                self._shutting_down.add(me)
        try:
            self._spawner.join()
            with self._lock:
                workers = list(self._workers)
            for thread in workers:
                with self._lock:
                    # Another pool thread in shutdown registered before this
                    # check, so it does not wait for this one: skip it.
                    mutual = pool_thread and thread in self._shutting_down
                if thread is not me and not mutual:
                    thread.join()
        finally:
            if pool_thread:
                with self._lock:
                    self._shutting_down.discard(me)

    # ------------------------------------------------------------- statistics

    @runs_in(ANY)
    def owns_current_thread(self) -> bool:
        """True when called from one of this pool's worker threads."""
        worker = current_worker()
        return worker is not None and worker.pool is self

    @runs_in(ANY)
    def statistics(self) -> ThreadPoolStatistics:
        """A consistent snapshot of the pool's figures."""
        with self._lock:
            return ThreadPoolStatistics(
                threads=self._nthreads,
                idle=len(self._idle),
                active=self._active,
                queued=len(self._queue),
                min=self._min,
                max=self._max,
                peak=self._peak,
                spawned=self._spawned,
                exited=self._exited,
                completed=self._completed,
                cancelled=self._cancelled,
                start_failures=self._start_failures,
            )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<ThreadPool {self._name!r} threads={s.threads} idle={s.idle} "
            f"active={s.active} queued={s.queued} min={s.min} max={s.max}>"
        )
