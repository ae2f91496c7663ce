"""The pool's thread count over time: a burst, then idleness.

A ``ThreadPool`` of min 2, max 8 takes 24 sleeping requests at once, grows
to max, drains its queue in waves, and its workers above min time out one
after another once idle.  ``statistics()`` is sampled throughout; the pool
suite (``bench_pool``) prints the changes of the thread count and saves a
PNG of it when matplotlib is installed (the optional ``plot`` extra).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass

from iothreads._pool import ThreadPool, ThreadPoolStatistics

#: The suite the timeline's lines are printed under.
NAME = "pool"

#: Where the timeline's PNG goes (matplotlib permitting): outside the work tree.
TIMELINE_PNG = os.path.join(tempfile.gettempdir(), "iothreads-pool-timeline.png")


@dataclass(frozen=True)
class Timeline:
    """The pool's figures sampled over time: (seconds since start, statistics)."""

    min: int
    max: int
    idle_timeout: float
    points: list[tuple[float, ThreadPoolStatistics]]


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


def timeline_lines(timeline: Timeline) -> list[str]:
    """The timeline as text: one line per change of the thread count."""
    lines = [
        f"{NAME}/timeline: min={timeline.min} max={timeline.max} "
        f"idle_timeout={timeline.idle_timeout:g}s, {TIMELINE_REQUESTS} requests at once "
        f"(sleeping 10-{10 + 5 * (TIMELINE_REQUESTS - 1)} ms) after {10 * TIMELINE_TICK:g}s",
        f"  {'t (s)':>7} {'threads':>7} {'idle':>5} {'active':>6} {'queued':>6}",
    ]
    last = None
    for i, (t, s) in enumerate(timeline.points):
        if s.threads != last or i == len(timeline.points) - 1:
            lines.append(f"  {t:7.3f} {s.threads:7d} {s.idle:5d} {s.active:6d} {s.queued:6d}")
            last = s.threads
    final = timeline.points[-1][1]
    lines.append(
        f"  peak {final.peak}, spawned {final.spawned}, exited {final.exited}, "
        f"completed {final.completed}"
    )
    return lines


def save_timeline_png(timeline: Timeline, path: str) -> str:
    """Plot the timeline to *path* with matplotlib, if it is installed; say what happened."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return f"{NAME}/timeline: matplotlib is not installed; no PNG written"
    matplotlib.use("Agg")  # a file, no display
    plt = importlib.import_module("matplotlib.pyplot")
    t = [p[0] for p in timeline.points]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(t, [p[1].threads for p in timeline.points], where="post", label="threads")
    ax.step(t, [p[1].active for p in timeline.points], where="post", label="active")
    ax.step(t, [p[1].queued for p in timeline.points], where="post", label="queued")
    ax.axhline(timeline.min, linestyle=":", color="grey", label="min")
    ax.axhline(timeline.max, linestyle="--", color="grey", label="max")
    ax.set_xlabel("seconds since the pool was created")
    ax.set_ylabel("count")
    ax.set_title(
        f"ThreadPool(min={timeline.min}, max={timeline.max}, "
        f"idle_timeout={timeline.idle_timeout:g}s): a burst, then idleness"
    )
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"{NAME}/timeline: saved to {path}"


__all__ = ["TIMELINE_PNG", "Timeline", "record_timeline", "save_timeline_png", "timeline_lines"]
