"""Prometheus metrics of the user objects: ``pip install 'iothreads[metrics]'``.

:func:`register` adds one collector to a ``prometheus_client`` registry.  At
each scrape it reads what ``query_iothread_stats()``, ``query_thread_pools()``
and ``query_iothreads()`` report at that moment, so IOThreads and pools
created or deleted later appear and disappear by themselves; each sample
carries the object's id as its ``id`` label.  Figures that only grow are
counters (``..._total``), the others gauges; times are in seconds, as
Prometheus names them (``poll_ns`` becomes ``iothreads_poll_window_seconds``).
Internal IOThreads (``iothread_create()``) are invisible here, as under
``/objects``.
"""

from . import _collector
from ._collector import *  # noqa: F403

__all__ = _collector.__all__
