"""An IOThread's polling window and poll hit rate over time, under changing traffic.

One IOThread takes ``io.run_sync`` calls from this thread in phases: back to
back, then 200 us apart, then 5 ms apart, then none (idle).  A sampler
thread reads ``aio_context.statistics()`` (exact counters, readable from any
thread) every WINDOW_TICK, so the record shows the window growing under
back-to-back traffic and shrinking to 0 once requests come too far apart,
and the share of polling phases that caught work (hits) as it goes.  The
polling suite records it once per run, on the first loop kind, unpinned;
``--table`` prints a line per phase, ``--plot`` draws it.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from iothreads import IOThread

from ._harness import Implementation, LoopFactory, Mode, iothread

#: The record's name: where its lines and figure are filed.
NAME = "polling/window"

#: Sampling period of the counters (s): the window moves at every block, far
#: more often, so a sample shows where it stands, not each step.
WINDOW_TICK = 0.002

#: The phases: a label and the gap between calls (None: no calls at all).
PHASES: tuple[tuple[str, float | None], ...] = (
    ("back to back", 0.0),
    ("200 us apart", 200e-6),
    ("5 ms apart", 5e-3),
    ("idle", None),
)

#: Seconds per phase, by mode.
PHASE_S = {"smoke": 0.05, "quick": 0.3, "full": 1.0}


@dataclass(frozen=True)
class WindowPoint:
    """The counters at one moment, *t* seconds after the first phase began."""

    t: float
    poll_ns: int
    polls: int
    poll_hits: int
    blocks: int
    submitted: int


@dataclass
class WindowTimeline:
    """The samples, and when each phase began (seconds since the start)."""

    poll_max_ns: int
    loop_kind: str
    implementation: str
    name: str = NAME
    phases: list[tuple[str, float]] = field(default_factory=list)
    points: list[WindowPoint] = field(default_factory=list)

    def phase_of(self, t: float) -> str:
        """The label of the phase running at *t*."""
        current = self.phases[0][0]
        for label, start in self.phases:
            if t >= start:
                current = label
        return current

    def lines(self) -> list[str]:
        """One line per phase: the calls, the window's median, the share of polls that hit."""
        out = [
            f"{self.name}: an IOThread at poll-max-ns {self.poll_max_ns} ({self.loop_kind}, "
            f"{self.implementation}), io.run_sync calls from one thread, phase by phase"
        ]
        for label, _ in self.phases:
            points = [p for p in self.points if self.phase_of(p.t) == label]
            if len(points) < 2:
                out.append(f"  {label:<14} too short to sample")
                continue
            first, last = points[0], points[-1]
            polls = last.polls - first.polls
            hits = last.poll_hits - first.poll_hits
            rate = f"{100 * hits / polls:5.1f} % of {polls} polls" if polls else "no polls"
            window = statistics.median(p.poll_ns for p in points)
            out.append(
                f"  {label:<14} {last.submitted - first.submitted:7d} submissions, "
                f"window median {window:8.0f} ns, hits {rate}"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "poll_max_ns": self.poll_max_ns,
            "loop_kind": self.loop_kind,
            "implementation": self.implementation,
            "phases": [{"label": label, "start_s": start} for label, start in self.phases],
            "points": [asdict(p) for p in self.points],
        }


def _noop() -> None:
    pass


def record_window(
    loop_kind: str,
    loop_factory: LoopFactory,
    implementation: Implementation,
    poll_max_ns: int,
    mode: Mode,
) -> WindowTimeline:
    """Run the phases on a new IOThread at *poll_max_ns*, sampling its counters."""
    record = WindowTimeline(poll_max_ns, loop_kind, implementation.name)
    phase_s = PHASE_S[mode.name]
    with iothread(loop_factory, implementation, poll_max_ns=poll_max_ns) as io:
        done = threading.Event()
        t0 = time.perf_counter()
        sampler = threading.Thread(
            target=_sample, args=(io, t0, record.points, done), name="bench-window-sampler"
        )
        sampler.start()
        try:
            for label, gap in PHASES:
                record.phases.append((label, time.perf_counter() - t0))
                _phase(io, gap, time.perf_counter() + phase_s)
        finally:
            done.set()
            sampler.join()
    return record


def _phase(io: IOThread, gap: float | None, until: float) -> None:
    """Calls *gap* apart (None: none, only waiting) until *until*."""
    idle = threading.Event()  # never set: a bounded sleep
    while (now := time.perf_counter()) < until:
        if gap is None:
            idle.wait(until - now)
            return
        if gap:
            time.sleep(gap)
        io.run_sync(_noop)


def _sample(io: IOThread, t0: float, out: list[WindowPoint], done: threading.Event) -> None:
    """Read the counters every WINDOW_TICK until *done*, and once more after."""
    context = io.aio_context
    while True:
        stopping = done.is_set()
        s = context.statistics()
        out.append(
            WindowPoint(
                time.perf_counter() - t0, s.poll_ns, s.polls, s.poll_hits, s.blocks, s.submitted
            )
        )
        if stopping:
            return
        done.wait(WINDOW_TICK)


__all__ = ["NAME", "PHASES", "WindowPoint", "WindowTimeline", "record_window"]
