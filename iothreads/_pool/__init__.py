"""A self-regulating worker pool with QEMU's thread-pool-min / thread-pool-max rules.

``ThreadPool`` follows QEMU's ``util/thread-pool.c`` (docs/design.md, "The
thread pool"):

- requests go to one shared queue, which every worker drains: a worker that
  finishes a request takes the next queued one before it goes idle, so a
  burst is served by the workers already awake instead of waking one thread
  per request.  A submit wakes an idle worker only when no worker is already
  on its way to the queue (woken but not yet there); each woken worker that
  leaves requests behind in the queue wakes the next idle one, so a burst of
  long requests still spreads over the idle workers, one wake-up at a time
  and off the submitter's path.  (QEMU keeps a shared request list and
  signals a worker for every request, through a semaphore or a condition by
  version; the suppression of wake-ups while one is in flight is ours, in the
  spirit of QEMU's ``notify_me``: docs/design.md, "Wake-up suppression".)
  The worker woken is the most recently idle (a LIFO stack), so its caches
  are warm and the others can time out.
  When no worker is idle and fewer than ``max_threads`` exist, a new worker
  is started **off the submitter's path**, by the pool's spawner thread
  (itself started on the pool's first need: an unused pool with
  ``min_threads=0`` has no thread at all);
- an idle worker exits after ``idle_timeout`` seconds while more than
  ``min_threads`` exist; the ``min_threads`` workers are created with the pool
  and never exit until it is shut down;
- ``set_limits()`` applies live, without waiting for threads: raising min
  has the spawner start the missing workers at once, one at a time; lowering
  max retires excess idle workers at once and busy ones as soon as they
  finish; a rejected update changes nothing.  A thread start the system
  refuses is counted (``statistics().start_failures``) and logged, and the
  pool goes on with the workers it has;
- a queued request can be cancelled (it never runs); a running one completes
  and its result is discarded.

It is a ``concurrent.futures.ThreadPoolExecutor`` so that it can be an event
loop's default executor, and adds ``await pool.run(func, *args)``, which
resolves one future on the awaiting loop instead of ``run_in_executor``'s
concurrent future chained to an asyncio future.

Locking: one ``threading.Lock`` (``ThreadPool._lock``) guards every mutable
field of the pool, of its workers, of its spawner and the ``state`` of its
requests.  Nothing slow runs under it: no user code, no thread creation, no
future callbacks.

One mechanism per module:

- ``_thread_pool``: ``ThreadPool`` itself -- limits, dispatch, shutdown,
  statistics -- and ``ThreadPoolStatistics``;
- ``_requests``: what the pool queues (one call, its state, where its
  outcome goes);
- ``_worker``: one worker thread and the loop it runs;
- ``_spawner``: the thread that starts the workers, off the submitters' path.
"""

from . import _thread_pool
from ._thread_pool import *  # noqa: F403

__all__ = _thread_pool.__all__
