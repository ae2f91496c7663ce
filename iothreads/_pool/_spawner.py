"""The spawner: the thread that starts a ``ThreadPool``'s workers, off the submitters' path.

Why a spawner thread: ``threading.Thread.start()`` blocks its caller until the
new thread runs (~53 µs here, milliseconds under mlock; docs/design.md,
"Measurements"), and QEMU keeps that off the submitter's path by creating
threads from a bottom half of the main loop.  A pool belongs to no loop and
its busy workers are running user code, so one small thread of its own does
the starting: a submitter only queues a ``Worker`` and notifies it.  It sleeps
on a condition when there is nothing to start and exits at shutdown.

It is started lazily, the first time a worker has to be spawned, so that a
pool with ``min_threads=0`` that is never used (every IOThread owns one) has
no thread at all.  That first time, and only once in the pool's life, the
caller that needed the worker starts the spawner itself, after releasing the
lock (``Spawner.start``): one ``Thread.start()`` on the submitter's path,
instead of one per worker.

Besides the workers queued by submitters, the spawner tops the pool up to
what its limits ask for (``SpawnerPool._top_up_locked``): raising
thread-pool-min by any amount costs its writer one notification, never a
loop over the new value, and the spawner makes and starts the workers one at
a time, with the pool lock taken only around each record it makes (a write
of a smaller min, a shutdown or a refused thread start stops it between two
workers).
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Final, Protocol

from .._fork import FORK_CHILD
from .._runs_in import ANY, ThreadRole, runs_in

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["Spawner", "SpawnerPool"]


class SpawnerPool(Protocol):
    """The pool as its spawner sees it."""

    _lock: threading.Lock

    @property
    def name(self) -> str:
        """The prefix of the pool's thread names."""
        ...

    def _start_worker(self, worker: Worker) -> None:
        """Start *worker*'s thread, or undo the worker if it cannot start."""
        ...

    def _start_failed(self, worker: Worker, exc: Exception) -> None:
        """Undo *worker*, whose thread could not be started."""
        ...

    def _start_refused(self, thread: threading.Thread, exc: Exception) -> None:
        """Count and report that *thread* could not be started (without the lock)."""
        ...

    def _top_up_locked(self) -> Worker | None:
        """A new worker the limits ask for, to start now; None when none is needed."""
        ...


def _is_spawner(spawner: Spawner) -> bool:
    return spawner.owns_current_thread()


#: The spawner thread of the ``Spawner`` whose method is called.
SPAWNER: Final = ThreadRole("the pool's spawner thread", _is_spawner)

#: The thread that made the spawner thread (``make_thread_locked()``, or
#: ``request_locked()`` returning True), once it has released the pool lock.
MAKER: Final = ThreadRole("the thread that made the spawner thread, without the pool lock")


class Spawner:
    """Starts a pool's workers, one at a time, in a thread of its own.

    The pool queues the workers to start (``request_locked``); the spawner
    thread hands each to the pool's ``_start_worker``, then tops the pool up
    (``SpawnerPool._top_up_locked``).  A spawner thread may retire
    (``retire_locked``) and is then followed by a new one on the next request.

    Every field is guarded by the pool lock.
    """

    __slots__ = ("_closed", "_lock", "_pool", "_settled", "_thread", "_up", "_wanted", "pending")

    def __init__(self, pool: SpawnerPool) -> None:
        self._pool = pool
        self._lock = pool._lock
        self.pending: collections.deque[Worker] = collections.deque()  # to start, in order
        self._thread: threading.Thread | None = None  # exists once needed
        self._up = False  # its start() returned
        self._closed = False  # the pool was shut down
        self._wanted = threading.Condition(self._lock)  # for the spawner thread
        self._settled = threading.Condition(self._lock)  # for join()

    @runs_in(FORK_CHILD)
    def after_fork_in_child(self, lock: threading.Lock) -> None:
        """In a forked child, for its pool: closed, on the pool's new *lock*.

        The spawner thread was the parent's; the workers waiting for it are
        the pool's to account for.
        """
        self._lock = lock
        self._wanted = threading.Condition(lock)
        self._settled = threading.Condition(lock)
        self._thread = None
        self._up = False
        self._closed = True
        self.pending.clear()

    @runs_in(ANY)
    def request_locked(self, worker: Worker) -> bool:
        # With the pool lock held: have the spawner thread start *worker*.
        # Returns True when there was no spawner thread yet: the caller must
        # then call start() once it has released the lock (starting a thread
        # under the lock would stall every submitter).
        self.pending.append(worker)
        return self.wake_locked()

    @runs_in(ANY)
    def wake_locked(self) -> bool:
        # With the pool lock held: have the spawner thread look for work
        # (queued workers, or the pool's top-up).  Returns True when the
        # caller must start a new spawner thread once it has released the lock.
        if self._thread is None:
            self.make_thread_locked()
            return True
        self._wanted.notify()
        return False

    @runs_in(ANY)
    def make_thread_locked(self) -> None:
        # With the pool lock held: a new spawner thread; the caller starts it.
        self._thread = threading.Thread(
            target=self._main, name=f"{self._pool.name}-spawner", daemon=True
        )
        self._up = False

    @runs_in(MAKER)
    def start(self) -> None:
        """Start the spawner thread just made.

        Until ``Thread.start()`` returns, the workers asked for wait in
        ``pending``; the spawner looks there before it first sleeps, so none is
        missed.
        """
        with self._lock:
            thread = self._thread
        assert thread is not None  # only this thread can reset it
        try:
            thread.start()
        except Exception as exc:  # "can't start new thread" (RuntimeError), MemoryError...
            # No spawner: the workers waiting for it never start.  Undo them
            # (failing what they were to serve, as _start_failed does), and
            # let the next spawn try again with a new spawner.
            self._pool._start_refused(thread, exc)
            with self._lock:
                self._thread = None
                stranded = list(self.pending)
                self.pending.clear()
                self._settled.notify_all()
            for worker in stranded:
                self._pool._start_failed(worker, exc)
            return
        with self._lock:
            # Unless it has already retired (retire_locked), and a request
            # may have made a new one since, not started yet.
            if self._thread is thread:
                self._up = True
            self._settled.notify_all()

    @runs_in(SPAWNER)
    def _main(self) -> None:
        # It starts what is asked even after shutdown (those workers drain the
        # queue or exit at once) and exits when shut down with nothing left
        # to start.  Queued workers come first: each has a request waiting.
        while True:
            with self._lock:
                while True:
                    if self.pending:
                        worker = self.pending.popleft()
                        break
                    top_up = self._pool._top_up_locked()  # None once shut down
                    if top_up is not None:
                        worker = top_up
                        break
                    if self._closed:
                        return
                    self._wanted.wait()
            self._pool._start_worker(worker)
            with self._lock:
                if self._thread is not threading.current_thread():
                    return  # retired by the pool's _start_failed

    @runs_in(SPAWNER)
    def retire_locked(self) -> None:
        # With the pool lock held: the calling thread stops being the spawner
        # (it returns once its current duty is done); the next request makes
        # a new one.  The pool retires it only once no worker is left, and a
        # worker waiting here counts as one of the pool's: none waits.
        assert not self.pending
        self._thread = None

    @runs_in(ANY)
    def close_locked(self) -> None:
        # With the pool lock held, at shutdown: the spawner thread exits once
        # nothing is left to start.
        self._closed = True
        self._wanted.notify()

    @runs_in(ANY)
    def owns_current_thread(self) -> bool:
        """True when called from the spawner thread.

        Exact even without the pool lock: while the spawner thread runs, only
        that thread clears ``_thread`` (``retire_locked``), and a thread made
        afterwards is never the calling one.
        """
        return threading.current_thread() is self._thread

    @runs_in(ANY)
    def join(self) -> None:
        """Return once no spawner thread is left, or the one left is the caller.

        A pool that never needed one has none; one being started right now is
        waited for (``Thread.start()`` returns promptly, or fails and resets
        it to None).  A spawner that retires (``retire_locked``) may be
        followed by a new one before it exits: join until the one joined was
        the last.
        """
        me = threading.current_thread()
        while True:
            with self._lock:
                while self._thread is not None and not self._up:
                    self._settled.wait()
                thread = self._thread
            if thread is None or thread is me:
                return
            thread.join()
            with self._lock:
                if self._thread is thread:
                    return  # it exited as the spawner: no successor
