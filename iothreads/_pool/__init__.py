"""The self-regulating worker pool (``ThreadPool``), one mechanism per module.

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
