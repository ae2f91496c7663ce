"""What every benchmark shares: cases, groups, placement, sampling, the runner.

A *case* is an async context manager factory: entered on the caller's loop,
it sets up what it measures (an IOThread, a plain loop thread, a pool...) and
yields ``op``, a coroutine function doing one operation.  A *group* is a
baseline case followed by the cases compared with it, all doing the same
work (a coroutine against a coroutine, a plain function against a plain
function), which the group states.

Fairness rules.  Thread placement changes results about 3x, and absolute
times on a shared 2-vCPU host swing 3-10x between hours, so only ratios
from one run mean anything (docs/design.md, "Measurements"):

* every case of a group runs in the same process, under the same thread
  placement, interleaved in rounds (baseline chunk, case chunk, ... repeat),
  so drift hits all of them alike, and each round starts one case further
  on than the round before (``in_turn``), so no case always follows the
  same one; each round's samples are kept apart
  (``_figures``), so a ratio is also given round by round, and a figure
  derived from two cases is computed within each round;
* each chunk starts with a warm-up that is not sampled;
* latency is sampled per operation with ``perf_counter_ns``; CPU per operation
  is the process's CPU time (all threads) over the chunk, divided by the ops;
* every IOThread case runs once per inbox implementation present (the native
  core where it was built, the pure-Python inbox always), in the same
  rounds, its name ending in the implementation (``iothread`` below).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TextIO, TypeVar

from iothreads import IOThread, MainLoop
from iothreads._aio import _inbox

from ._figures import (
    Chunk,
    Result,
)

Op = Callable[[], Awaitable[object]]
CaseFactory = Callable[[], contextlib.AbstractAsyncContextManager[Op]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    name: str
    factory: CaseFactory
    #: pause before each operation (sparse traffic); not part of the latency,
    #: but the CPU any thread burns meanwhile counts towards CPU per op
    gap_s: float = 0.0


@dataclass(frozen=True)
class Group:
    """A baseline case and the cases compared with it, all doing *work*."""

    name: str
    #: what one operation does, said in the table: the same on every side
    work: str
    cases: Sequence[Case]


@dataclass(frozen=True)
class Mode:
    """How long a run is: samples per case, in how many rounds."""

    name: str
    samples: int
    rounds: int
    #: the number of the first round: ``--repeat`` runs everything again
    #: with the count going on, so the later runs' rounds keep turning the
    #: cases' order (``in_turn``) instead of repeating the first run's orders
    first_round: int = 0

    @property
    def quick(self) -> bool:
        """A short run: quick, or smoke."""
        return self.name != "full"

    def turns(self) -> range:
        """The numbers of this run's rounds, for ``in_turn``."""
        return range(self.first_round, self.first_round + self.rounds)


def in_turn(items: Sequence[T], turn: int) -> list[T]:
    """*items* in the order of round number *turn*: *turn* places on, wrapping.

    Cases run in a fixed order each always run right after the same one,
    and inherit what it left: on one CPU, the threads it is still ending,
    cold caches, the scheduler's account of who slept.  On one CPU the
    stdlib echo at p99 read 1.25x a plain loop thread polling and 1.06x
    with polling off in a fixed order, and 1.13x both with the order turned
    (docs/design.md, "Measurements").  Turned, every case starts a round as
    often as any other, over as many rounds as there are cases.
    """
    if not items:
        return []
    start = turn % len(items)
    return [*items[start:], *items[:start]]


# Samples per case: the full run's 20 000 leave 20 samples beyond p99.9; the
# quick run keeps everything (2 loops x 3 placements) under a minute on a
# 2-vCPU machine, at the price of a p99.9 that rests on one sample.  Rounds
# interleave the cases of a group, so drift hits them all alike.  The smoke
# run takes a few dozen samples per case in one round, in seconds: it shows
# that every suite, the summary and the figures work (the test suite runs
# it), and its figures mean nothing.
MODES = {
    "smoke": Mode("smoke", 40, 1),
    "quick": Mode("quick", 800, 2),
    "full": Mode("full", 20000, 5),
}


@dataclass(frozen=True)
class Placement:
    """Which CPUs the caller and the threads a case starts may run on.

    Threads inherit the affinity of the thread that starts them, so a case's
    threads are placed by pinning the caller to the worker CPUs while the case
    sets up (``starting_workers``), and back to the caller CPUs to measure.
    """

    name: str
    caller: frozenset[int] | None  # None: every CPU the process may use
    workers: frozenset[int] | None

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Pin the calling thread (and what it starts) to the caller CPUs."""
        with _pinned(self.caller):
            yield

    @contextlib.contextmanager
    def starting_workers(self) -> Iterator[None]:
        """Threads started inside run on the worker CPUs."""
        with _pinned(self.workers):
            yield


@contextlib.contextmanager
def _pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def placements() -> list[Placement]:
    """Unpinned; everything on one CPU; caller and workers on two different CPUs.

    The split placement is QEMU's deployment (an iothread on a CPU of its
    own) and the one where a wake-up costs most: a cross-CPU wake of an idle
    vCPU.  Placement changes results about 3x, so every group runs under each.
    """
    result = [Placement("unpinned", None, None)]
    if hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        result.append(Placement("one-cpu", frozenset(allowed[:1]), frozenset(allowed[:1])))
        if len(allowed) > 1:
            result.append(Placement("split", frozenset(allowed[:1]), frozenset(allowed[1:2])))
    return result


def loop_kinds() -> dict[str, LoopFactory]:
    """The loop implementations present: stdlib always, uvloop when installed."""
    kinds: dict[str, LoopFactory] = {"stdlib": asyncio.SelectorEventLoop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        kinds["uvloop"] = uvloop.new_event_loop
    return kinds


@dataclass(frozen=True)
class Implementation:
    """Which inbox an IOThread gets: the native core, or the pure-Python one."""

    name: str
    #: what ``_inbox.native_core`` holds while the IOThread starts: the
    #: module, or None for the pure-Python inbox
    core: ModuleType | None


#: The native core as the package loaded it (None: not built, or disabled),
#: read before any case switches it.
_NATIVE_CORE = _inbox.native_core


def implementations() -> list[Implementation]:
    """The inbox implementations present: native where built, then pure Python."""
    python = Implementation("python", None)
    if _NATIVE_CORE is None:
        return [python]
    return [Implementation("native", _NATIVE_CORE), python]


def implementations_note() -> str | None:
    """What the output says when IOThread cases run on the pure-Python inbox alone."""
    if _NATIVE_CORE is not None:
        return None
    return (
        "note: the native core is not built (or IOTHREADS_NO_EXTENSIONS is set): "
        "IOThread cases run the pure-Python inbox only"
    )


def with_implementation(name: str, implementation: str) -> str:
    """An IOThread case's name, saying which inbox (by its name) it ran."""
    return f"{name}, {implementation}"


@contextlib.contextmanager
def iothread(
    loop_factory: LoopFactory,
    implementation: Implementation,
    poll_max_ns: int = IOThread.property_defaults["poll-max-ns"],
) -> Iterator[IOThread]:
    """A started IOThread "bench" of *loop_factory*'s kind with *implementation*'s
    inbox, its properties at their defaults but the window *poll_max_ns*.

    An IOThread takes its inbox from ``_inbox.native_core`` when its thread
    creates its AioContext, which ``start()`` waits for: switching the
    global around ``start()`` alone chooses the implementation (the tests'
    ``implementation`` fixture switches the same global).
    """
    io = IOThread("bench", loop_factory=loop_factory, poll_max_ns=poll_max_ns)
    with _inbox_of(implementation):
        io.start()
    try:
        yield io
    finally:
        io.stop()


@contextlib.contextmanager
def polling_main_loop(implementation: Implementation, poll_max_ns: int) -> Iterator[MainLoop]:
    """A main-loop installed on the running (caller's) loop with the window
    *poll_max_ns* and *implementation*'s inbox, closed on exit."""
    main_loop = MainLoop()
    try:
        with _inbox_of(implementation):
            main_loop.install(poll_max_ns=poll_max_ns)
        yield main_loop
    finally:
        main_loop.close()


@contextlib.contextmanager
def _inbox_of(implementation: Implementation) -> Iterator[None]:
    """AioContexts made inside take *implementation*'s inbox: the global
    ``_inbox.native_core``, read when a context is made, switched meanwhile."""
    saved, _inbox.native_core = _inbox.native_core, implementation.core
    try:
        yield
    finally:
        _inbox.native_core = saved


class Progress:
    """What runs now and how far along, on stderr: a bar on a terminal when tqdm
    is installed (the ``bench`` extra), else one plain line per step."""

    def __init__(self, total: int, file: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self._file = file or sys.stderr
        self._bar = _bar(total, self._file)

    def step(self, label: str) -> None:
        """Step *label* starts (the one before it has ended)."""
        self.done += 1
        if self._bar is None:
            print(f"[{self.done}/{self.total}] {label}", file=self._file, flush=True)
            return
        if self.done > 1:
            self._bar.update(1)
        self._bar.set_description_str(label)

    def close(self) -> None:
        """The last step has ended."""
        if self._bar is not None:
            self._bar.update(self.total - self._bar.n)
            self._bar.close()


def _bar(total: int, file: TextIO) -> Any:
    """A tqdm bar of *total* steps on *file*, or None: not a terminal, or no tqdm."""
    if not file.isatty():
        return None
    try:
        tqdm = importlib.import_module("tqdm")
    except ImportError:
        return None
    # monitor_interval 0: no tqdm monitor thread, which only tunes bars updated
    # many times a second and would outlive the run; leave=False: the bar
    # goes once the run ends, the figures stay.
    bar = type("Bar", (tqdm.tqdm,), {"monitor_interval": 0})
    return bar(total=total, file=file, leave=False, dynamic_ncols=True, unit="step")


async def run_chunk(op: Op, chunk: Chunk, samples: int, warmup: int, gap_s: float) -> None:
    """Warm up, then time *samples* operations one by one, *gap_s* apart."""
    for _ in range(warmup):
        await op()
    clock = time.perf_counter_ns
    out = chunk.samples_ns
    cpu0 = time.process_time_ns()
    for _ in range(samples):
        if gap_s:
            time.sleep(gap_s)  # the caller's loop has nothing else to do meanwhile
        t0 = clock()
        await op()
        out.append(clock() - t0)
    chunk.cpu_ns += time.process_time_ns() - cpu0
    chunk.ops += samples


async def _run_group(
    name: str, group: Group, placement: Placement, mode: Mode, progress: Progress
) -> list[Result]:
    results = [Result(name, case.name, group.work) for case in group.cases]
    per_round = max(1, mode.samples // mode.rounds)
    for turn in mode.turns():
        for case, result in in_turn(list(zip(group.cases, results, strict=True)), turn):
            progress.step(f"{name}: {case.name} (round {turn + 1})")
            # Sparse cases are slow per op: sample fewer, and warm up less.
            n = per_round if not case.gap_s else max(20, per_round // 10)
            with placement.starting_workers():
                setup = case.factory()
                op = await setup.__aenter__()
            try:
                await run_chunk(op, result.new_round(), n, max(20, n // 10), case.gap_s)
            finally:
                with placement.starting_workers():
                    await setup.__aexit__(None, None, None)
    return results


def run_group(
    name: str,
    group: Group,
    *,
    loop_factory: LoopFactory,
    placement: Placement,
    mode: Mode,
    progress: Progress,
) -> list[Result]:
    """Run *group* (reported as *name*) on a caller loop of *loop_factory*, under *placement*."""
    with placement.applied(), asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_run_group(name, group, placement, mode, progress))


# -- running suites from the command line ---------------------------------------

# A suite is a module with NAME and cases(loop_factory) -> [Group, ...], the
# first case of a group being its baseline.  It may also have
# results(kind, loop_factory, placement, mode) -> [Result, ...] (latencies it
# measures its own way, printed in the table, first of a group = baseline),
# rates(kind, loop_factory, placement, mode) -> [Rate, ...],
# derived(results) -> [Derived, ...] (figures computed from its groups, round
# by round), report(results, derived, mode) -> [str] (lines printed before
# the summary, e.g. its verdicts), and recordings(mode) -> [Recording, ...]
# (something sampled over time, once per run).  Group names are
# "suite/group/loop kind/placement".  ``__main__`` runs the suites it is
# given (``--only`` picks some).


class Recording(Protocol):
    """Figures a suite samples over time, once per run (e.g. a thread count)."""

    name: str

    def lines(self) -> list[str]:
        """The recording as text, for ``--table``."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The recording for the JSON: every sample."""
        ...


__all__ = [
    "MODES",
    "Case",
    "CaseFactory",
    "Group",
    "Implementation",
    "LoopFactory",
    "Mode",
    "Op",
    "Placement",
    "Progress",
    "Recording",
    "implementations",
    "implementations_note",
    "in_turn",
    "iothread",
    "loop_kinds",
    "placements",
    "polling_main_loop",
    "run_chunk",
    "run_group",
    "with_implementation",
]
