"""The pool's thread count over time: a burst, then idleness.

A ``ThreadPool`` of min 2, max 8 takes 24 sleeping requests at once, grows
to max, drains its queue in waves, and its workers above min time out one
after another once idle.  ``statistics()`` is sampled throughout; the pool
suite (``bench_pool``) records it once per run; ``--table`` prints the
changes of the thread count, ``--plot`` draws them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from iothreads._pool import ThreadPool, ThreadPoolStatistics

#: The suite the timeline's lines are printed under.
NAME = "pool"


@dataclass(frozen=True)
class Timeline:
    """The pool's figures sampled over time: (seconds since start, statistics)."""

    min: int
    max: int
    idle_timeout: float
    points: list[tuple[float, ThreadPoolStatistics]]
    name: str = f"{NAME}/timeline"

    def lines(self) -> list[str]:
        """The timeline as text: one line per change of the thread count."""
        lines = [
            f"{self.name}: min={self.min} max={self.max} "
            f"idle_timeout={self.idle_timeout:g}s, {TIMELINE_REQUESTS} requests at once "
            f"(sleeping 10-{10 + 5 * (TIMELINE_REQUESTS - 1)} ms) after {10 * TIMELINE_TICK:g}s",
            f"  {'t (s)':>7} {'threads':>7} {'idle':>5} {'active':>6} {'queued':>6}",
        ]
        last = None
        for i, (t, s) in enumerate(self.points):
            if s.threads != last or i == len(self.points) - 1:
                lines.append(f"  {t:7.3f} {s.threads:7d} {s.idle:5d} {s.active:6d} {s.queued:6d}")
                last = s.threads
        final = self.points[-1][1]
        lines.append(
            f"  peak {final.peak}, spawned {final.spawned}, exited {final.exited}, "
            f"completed {final.completed}"
        )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "min": self.min,
            "max": self.max,
            "idle_timeout": self.idle_timeout,
            "points": [{"t": t, **asdict(s)} for t, s in self.points],
        }


#: Timeline scenario: a pool of min 2, max 8, hit by 24 requests at once that
#: sleep (releasing the GIL) between 10 and 125 ms each, so it grows to max,
#: drains its queue in waves, and its workers go idle at staggered times; then
#: idleness, during which the workers above min time out one after another.
TIMELINE_MIN, TIMELINE_MAX, TIMELINE_REQUESTS = 2, 8, 24
#: Sampling period of the thread count (s): fine enough to see each exit.
TIMELINE_TICK = 0.005


def record_timeline(quick: bool) -> Timeline:
    """Run the timeline scenario, sampling ``statistics()`` every TIMELINE_TICK."""
    # A short idle timeout (instead of the 10 s default) makes the shrink
    # visible within seconds.
    idle_timeout = 0.25 if quick else 1.0
    pool = ThreadPool(TIMELINE_MIN, TIMELINE_MAX, idle_timeout=idle_timeout, name="bench-timeline")
    points: list[tuple[float, ThreadPoolStatistics]] = []
    tick = threading.Event()  # never set: a bounded sleep
    t0 = time.perf_counter()

    def sample() -> ThreadPoolStatistics:
        stats = pool.statistics()
        points.append((time.perf_counter() - t0, stats))
        return stats

    try:
        for _ in range(10):  # the pool at rest, before the burst
            sample()
            tick.wait(TIMELINE_TICK)
        futures = [pool.submit(time.sleep, 0.010 + 0.005 * n) for n in range(TIMELINE_REQUESTS)]
        # Sample until every request is done and the pool is back to min,
        # then a little longer to show that min workers stay; bounded.
        deadline = time.perf_counter() + 10 * idle_timeout + 5.0
        settled_at = None
        while time.perf_counter() < deadline:
            stats = sample()
            done = all(f.done() for f in futures)
            if done and stats.threads == TIMELINE_MIN and settled_at is None:
                settled_at = points[-1][0]
            if settled_at is not None and points[-1][0] > settled_at + idle_timeout:
                break
            tick.wait(TIMELINE_TICK)
    finally:
        pool.shutdown()
    return Timeline(TIMELINE_MIN, TIMELINE_MAX, idle_timeout, points)


__all__ = ["Timeline", "record_timeline"]
