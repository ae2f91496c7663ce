"""The collector: one scrape reads the object tree's figures once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

try:
    import prometheus_client.core
    import prometheus_client.registry
except ImportError as exc:  # pragma: no cover - the metrics extra is a test dependency
    raise ImportError(
        "iothreads.metrics needs prometheus_client: install the metrics extra "
        "(pip install 'iothreads[metrics]')"
    ) from exc

from .. import _objects
from .._runs_in import ANY, runs_in

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from prometheus_client.metrics_core import Metric

    from .._aio._context import AioContextStatistics
    from .._objects import IOThreadInfo
    from .._pool._thread_pool import ThreadPoolStatistics

__all__ = ["IOThreadsCollector", "register"]

#: Prometheus wants seconds; the runtime counts nanoseconds.
_NS_PER_S: Final = 1e9

#: (statistics field, metric name, counter?, HELP, divisor to the unit) for an IOThread's
#: ``AioContextStatistics``; counters get ``_total`` from prometheus_client.
_LOOP_METRICS: Final = (
    ("poll_ns", "iothreads_poll_window_seconds", False,
     "The adaptive polling window now (poll_ns), in seconds.", _NS_PER_S),
    ("polls", "iothreads_polls", True,
     "Polling phases started: the loop would have blocked and busy-polled first.", 1),
    ("poll_hits", "iothreads_poll_hits", True,
     "Polling phases that ended because work arrived while spinning.", 1),
    ("blocks", "iothreads_blocks", True,
     "Times the loop went to sleep.", 1),
    ("submitted", "iothreads_submitted", True,
     "Callbacks submitted from other threads through the inbox and taken by the loop.", 1),
    ("wakeups_sent", "iothreads_wakeups_sent", True,
     "Wake-up channel writes by producers (the loop was blocking or about to block).", 1),
    ("wakeups_suppressed", "iothreads_wakeups_suppressed", True,
     "Submissions that needed no wake-up because the loop was awake or spinning.", 1),
    ("spin_ns", "iothreads_spin_seconds", True,
     "Time spent busy-polling, in seconds.", _NS_PER_S),
    ("spins_shared", "iothreads_spins_shared", True,
     "Polling phases ended early because the spin shared its CPU with another thread.", 1),
    ("max_batch", "iothreads_max_batch", False,
     "Submissions run per loop pass at most (aio-max-batch; 0: all queued at its start).", 1),
    ("native", "iothreads_native_core", False,
     "1 when the native core serves the loop, 0 for the pure-Python inbox.", 1),
)  # fmt: skip

#: The polling properties of ``query_iothreads()`` (the rest of it is above
#: or is the thread id): (attribute, metric name, HELP, divisor to the unit).
_PARAMETER_METRICS: Final = (
    ("poll_max_ns", "iothreads_poll_max_seconds",
     "The poll-max-ns property: the upper bound of the polling window, in seconds.",
     _NS_PER_S),
    ("poll_grow", "iothreads_poll_grow",
     "The poll-grow property: the window's multiplier (0 means 2).", 1),
    ("poll_shrink", "iothreads_poll_shrink",
     "The poll-shrink property: the window's divisor (0 means drop to 0).", 1),
)  # fmt: skip

#: (field, metric name, counter?, HELP) for ``ThreadPoolStatistics``.
_POOL_METRICS: Final = (
    ("threads", "iothreads_pool_threads", False,
     "Worker threads that exist or are being started."),
    ("idle", "iothreads_pool_idle_threads", False, "Workers waiting for work."),
    ("active", "iothreads_pool_active_threads", False, "Workers running a request."),
    ("queued", "iothreads_pool_queued_requests", False, "Requests waiting for a worker."),
    ("min", "iothreads_pool_min_threads", False,
     "Workers kept alive regardless of demand (thread-pool-min)."),
    ("max", "iothreads_pool_max_threads", False, "Workers at most (thread-pool-max)."),
    ("peak", "iothreads_pool_peak_threads", False, "The most workers that existed at once."),
    ("spawned", "iothreads_pool_threads_spawned", True, "Workers started."),
    ("exited", "iothreads_pool_threads_exited", True, "Workers that exited."),
    ("completed", "iothreads_pool_requests_completed", True,
     "Requests whose function ran to its end for a caller that wanted the result."),
    ("cancelled", "iothreads_pool_requests_cancelled", True,
     "Requests withdrawn by their caller."),
)  # fmt: skip

_LABELS: Final = ["id"]


def _family(
    name: str, counter: bool, documentation: str
) -> prometheus_client.core.CounterMetricFamily | prometheus_client.core.GaugeMetricFamily:
    kind = (
        prometheus_client.core.CounterMetricFamily
        if counter
        else prometheus_client.core.GaugeMetricFamily
    )
    return kind(name, documentation, labels=_LABELS)


class IOThreadsCollector(prometheus_client.registry.Collector):
    """A ``prometheus_client`` collector of every user IOThread's and pool's figures.

    Scrapes may come from any thread (``start_http_server`` serves them from
    its own); each reads a fresh snapshot of the object tree.
    """

    @runs_in(ANY)
    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples: what the registry checks
        for clashes when this collector is registered."""
        return self._families()

    @runs_in(ANY)
    def collect(self) -> Iterable[Metric]:
        """The metric families with one sample per object, as of now."""
        return self._families(
            loops=_objects.query_iothread_stats(),
            parameters=_objects.query_iothreads(),
            pools=_objects.query_thread_pools(),
        )

    def _families(
        self,
        loops: Sequence[tuple[str, AioContextStatistics]] = (),
        parameters: Sequence[IOThreadInfo] = (),
        pools: Sequence[tuple[str, ThreadPoolStatistics]] = (),
    ) -> Iterator[Metric]:
        for field, name, counter, documentation, unit in _LOOP_METRICS:
            family = _family(name, counter, documentation)
            for id, stats in loops:
                family.add_metric([id], float(getattr(stats, field)) / unit)
            yield family
        for field, name, documentation, unit in _PARAMETER_METRICS:
            family = _family(name, False, documentation)
            for info in parameters:
                family.add_metric([info.id], float(getattr(info, field)) / unit)
            yield family
        for field, name, counter, documentation in _POOL_METRICS:
            family = _family(name, counter, documentation)
            for id, pool in pools:
                family.add_metric([id], float(getattr(pool, field)))
            yield family


@runs_in(ANY)
def register(
    registry: prometheus_client.registry.CollectorRegistry = prometheus_client.registry.REGISTRY,
) -> IOThreadsCollector:
    """Register an :class:`IOThreadsCollector` with *registry* (by default
    prometheus_client's global one, which ``start_http_server`` serves) and
    return it; ``registry.unregister(collector)`` takes it out again.

    Raises:
        ValueError: *registry* already has these metrics (a collector was
            registered there before); unregister that one first.
    """
    collector = IOThreadsCollector()
    registry.register(collector)
    return collector
