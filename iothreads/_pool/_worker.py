"""One worker thread of a ``ThreadPool``, and the loop it runs.

As trio's ``WorkerThread`` (``trio/_core/_thread_cache.py``) does, a
``Worker`` owns its thread and that thread's loop: take a request, call it,
hand its outcome over, and when the queue is empty wait on its own wake-up
lock until the pool wakes it or its idle timeout passes.  What it takes, and
whether it exits, is the pool's decision: the worker asks through the few
members listed in ``WorkerPool``, always under the pool's lock.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Final, Protocol

from .._fork import FORK_CHILD
from .._runs_in import ThreadRole, runs_in

if TYPE_CHECKING:
    from ._requests import Request

__all__ = ["POOL_WORKER", "Worker", "WorkerPool", "current_worker"]

# Marks the worker threads from their first instruction on; written only by
# each worker for itself.
_this_thread = threading.local()


def current_worker() -> Worker | None:
    """The ``Worker`` whose thread calls this, or None in any other thread."""
    worker: Worker | None = getattr(_this_thread, "worker", None)
    return worker


@runs_in(FORK_CHILD)
def _forget_worker_after_fork() -> None:
    # A fork from a worker's thread: in the child, that thread is no
    # worker's (its pool is the parent's, stopped here).
    _this_thread.worker = None


os.register_at_fork(after_in_child=_forget_worker_after_fork)


def _is_own_thread(worker: Worker) -> bool:
    return threading.current_thread() is worker.thread


def _is_pool_worker(pool: WorkerPool) -> bool:
    return pool.owns_current_thread()


#: The thread of the ``Worker`` whose method is called.
OWN_THREAD: Final = ThreadRole("the worker's own thread", _is_own_thread)

#: A worker thread of the ``ThreadPool`` whose method is called.
POOL_WORKER: Final = ThreadRole("a worker thread of this pool", _is_pool_worker)


class WorkerPool(Protocol):
    """The pool as its workers see it.

    Members ending in ``_locked`` are called with ``_lock`` held.
    """

    _lock: threading.Lock

    @property
    def idle_timeout(self) -> float:
        """Seconds an idle worker above the pool's minimum waits before it exits."""
        ...

    def owns_current_thread(self) -> bool:
        """True when called from one of this pool's worker threads."""
        ...

    def _booted_locked(self) -> None:
        """A new worker's thread runs (the constructor may be waiting for it)."""
        ...

    def _take_locked(self, worker: Worker) -> Request | None:
        """The next request for *worker*, started; or None once it is idle or retired."""
        ...

    def _finish_locked(self, request: Request) -> None:
        """*request*'s function ended; its outcome is delivered next: count it."""
        ...

    def _expire_locked(self, worker: Worker) -> bool:
        """*worker* stayed idle for the idle timeout: True if it leaves the pool."""
        ...


def _call(request: Request) -> tuple[Any, BaseException | None]:
    """Call *request*'s function; return its result or what it raised.  Never raises.

    A function of its own, so that an exception's traceback holds this small
    frame rather than the worker's loop.
    """
    try:
        return request.context.run(request.fn, *request.args, **request.kwargs), None
    except BaseException as exc:  # the caller gets everything, as from a ThreadPoolExecutor
        return None, exc


class Worker:
    """One worker thread of a pool, and the loop it runs.

    Its flags (``idle``, ``retired``, ``starting``, ``summoned``) are guarded
    by the pool lock; ``pool``, ``thread`` and ``wake`` never change.

    ``wake`` is a binary semaphore, held while the worker is on the idle stack.
    Whoever takes the worker off the stack sets ``summoned`` (go and drain the
    queue) or ``retired`` (exit) and releases ``wake`` while still holding the
    pool lock, so a worker that sees it was taken can consume ``wake`` without
    blocking.
    """

    __slots__ = ("idle", "pool", "retired", "starting", "summoned", "thread", "wake")

    def __init__(self, pool: WorkerPool, name: str, *, starts_idle: bool) -> None:
        """Make the worker and its thread, not started.

        A worker that *starts_idle* has been put on the pool's idle stack and
        begins with an idle wait; any other drains the queue first.
        """
        self.pool = pool
        self.wake = threading.Lock()
        self.wake.acquire()
        self.idle = False  # on the pool's idle stack
        self.retired = False  # told to exit and accounted for
        self.summoned = False  # woken for the queue, counted in the pool's _waking
        self.starting = False  # started for the queue, not there yet: the pool's _starting
        self.thread = threading.Thread(
            target=self._main, args=(starts_idle,), name=name, daemon=True
        )

    @runs_in(OWN_THREAD)
    def _main(self, idle: bool) -> None:
        # Serves requests until told to exit.  *idle*: the worker was put on
        # the idle stack before its thread ran.
        _this_thread.worker = self
        pool = self.pool
        lock = pool._lock
        with lock:
            pool._booted_locked()
        finished: Request | None = None
        result: Any = None
        error: BaseException | None = None
        while True:
            if finished is not None and finished.runs_callbacks:
                # A submit() future runs its done-callbacks in this thread,
                # and they may wait for the pool: deliver while still busy,
                # as ThreadPoolExecutor does, so that no request counts on
                # this worker meanwhile.
                with lock:
                    pool._finish_locked(finished)
                finished.deliver(result, error)
                finished = result = error = None
            with lock:
                if finished is not None:
                    pool._finish_locked(finished)
                request = None if idle else pool._take_locked(self)
                leaving = request is None and self.retired
            if finished is not None:
                # A run() is delivered only now, once this worker has its
                # next request or is idle again, as QEMU completes a request
                # after its worker is back under the pool lock: a caller that
                # runs again as soon as it has the result finds this worker
                # idle instead of an empty stack and a needless spawn.  (Its
                # delivery runs no user code here: call_soon_threadsafe.)
                finished.deliver(result, error)
                finished = result = error = None  # hold nothing while idle
            if leaving:
                return
            idle = False
            if request is None:
                if not self._idle_wait():
                    return
                continue  # summoned: drain the queue
            result, error = _call(request)
            finished = request

    def _idle_wait(self) -> bool:
        # Without the pool lock but on timeouts.  Returns True when summoned
        # to the queue, False when the worker exits.
        pool = self.pool
        while True:
            if self.wake.acquire(timeout=pool.idle_timeout):
                return not self.retired  # written before wake was released
            with pool._lock:
                if not self.idle:
                    # Taken off the stack as the wait timed out; wake was
                    # released under the lock, so this does not block.
                    self.wake.acquire()
                    return not self.retired
                if pool._expire_locked(self):
                    return False
