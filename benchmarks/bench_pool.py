"""ThreadPool against the executors it replaces, and the targets it must meet.

Four measurements, each in one process under one thread placement, the cases
of a group interleaved in rounds (``_harness`` rules), every case running the
same plain-function no-op:

* **dispatch** (a regular ``cases()`` group): the round trip of one no-op from
  a loop to a worker and back.  Baselines: ``loop.run_in_executor`` on a warm
  ``ThreadPoolExecutor``, ``asyncio.to_thread`` (the loop's default executor,
  warm) and ``anyio.to_thread.run_sync``; ours: ``await pool.run(noop)``, and
  ``run_in_executor`` on our pool.  Target: our p50 at most 0.8x the best
  baseline's.  The group's last case is the *floor*: the caller hands a
  ``threading.Lock`` to a thread on the worker CPUs and waits for it back,
  the two wake-ups every round trip pays and nothing else, which no executor
  can go below.  ``derived()`` computes, round by round from the p50s of
  that round, ours against the best baseline, the floor against it, and
  both above the floor.
* **burst**: N requests issued at once.  Each sample is one request's
  latency, from just before it is submitted to its result being on the
  caller's loop.  The question: does a *new* executor serve its first burst
  as a *warm* one of the same kind does (no creation spike)?  So there is
  one group per executor kind, ``ThreadPool(min=N)``, ``ThreadPool(min=0,
  max=N)`` and ``ThreadPoolExecutor(N)`` (cold: it creates threads in
  ``submit()``), each comparing its *new* case with its *warm* case, all
  groups interleaved in the same rounds.  A new case creates its executor
  just before each burst and shuts it down just after (both untimed).  A
  warm case bursts on one long-lived executor, each burst surrounded by the
  very same creation and shutdown of a throwaway executor of that kind, so
  that it is measured identically: creating threads just before a burst
  slows that burst down whichever pool it goes to (cache and scheduler
  effects), and a back-to-back warm case is shown to size that effect.
  ``burst_verdict`` explains why new against warm, quantile for quantile,
  and not the literal "p99.9 within 1.5x the warm p50", is the comparison;
  both are printed.
* **submit**: the ``submit()`` call itself when no worker is idle, so each call
  brings a new thread: ``ThreadPoolExecutor`` starts it inside ``submit()``,
  ours hands it to its spawner.  CPU per op counts everything the process
  spent until every submitted request had started, thread creation included.
* **timeline** (``_timeline``): the pool's thread count under a burst then
  idleness (min, max, idle shrink), printed with ``--table``, drawn with
  ``--plot``.

``python -m benchmarks`` runs it through the hooks ``cases()`` (dispatch),
``results()`` (burst, submit), ``derived()`` (the dispatch figures above),
``report()`` (verdicts) and ``recordings()`` (the timeline); ``python -m
benchmarks --only pool`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from iothreads._pool import ThreadPool

from ._figures import Chunk, Derived, Rate, Result, Spread
from ._harness import Case, Group, LoopFactory, Mode, Op, Placement, in_turn, loop_kinds
from ._timeline import Timeline, record_timeline
from .roundtrip import noop_sync as noop

NAME = "pool"

_E = TypeVar("_E", bound=Executor)

#: Requests per burst and min of the burst pool: 8 is four per vCPU on the
#: 2-vCPU machines we measure on, so a burst queues on CPUs as well as on
#: threads, and creating 8 threads is a visible spike: ``Thread.start()``
#: takes ~53 µs each (docs/design.md, "Measurements").
BURST = 8

#: Workers per executor in the submit measurement: every submit() finds them
#: all busy, so each one brings a new thread; 16 keeps an executor's set-up
#: short next to the thousands of samples.
SUBMITS_PER_EXECUTOR = 16

#: Requests per burst case and per submit case.  Every new-executor burst
#: creates and joins 8 threads (~3 ms here).  The burst verdict rests on
#: p99.9: with 8000 requests (8 beyond p99.9) it swung from 0.5x to 2.3x
#: between full runs, so the full run takes 24 000 (24 beyond p99.9, about
#: ten minutes for the suite); the quick run keeps all of
#: ``python -m benchmarks --quick`` under a minute.
BURST_SAMPLES = {"smoke": 32, "quick": 400, "full": 24000}
SAMPLES = {"smoke": 32, "quick": 400, "full": 8000}

# ------------------------------------------------------------------ dispatch

#: Threads a warm ThreadPoolExecutor has under back-to-back calls (see cases()).
TPE_THREADS = 2

#: The dispatch group's work, its baselines, ours, and its wake-up floor
#: (see the module docstring).
WORK_DISPATCH = "`def noop()` on a worker thread, its result awaited on the caller's loop"
TPE_CASE = "run_in_executor(TPE) warm"
TO_THREAD_CASE = "asyncio.to_thread"
ANYIO_CASE = "anyio.to_thread.run_sync"
POOL_RUN_CASE = "ThreadPool.run"
FLOOR_CASE = "floor: threading.Lock ping-pong (no executor)"
BASELINE_CASES = (TPE_CASE, TO_THREAD_CASE, ANYIO_CASE)


async def start_threads(
    run: Callable[[Callable[[], object]], Awaitable[object]], threads: int
) -> None:
    """Have an executor start *threads* threads now: as many calls that wait for each other.

    A barrier that times out (an executor with fewer threads) fails the case
    instead of hanging the run.
    """
    barrier = threading.Barrier(threads)
    await asyncio.gather(*(run(lambda: barrier.wait(timeout=10.0)) for _ in range(threads)))


def cases(loop_factory: LoopFactory) -> list[Group]:
    """The dispatch group, baselines first (the first one is the table's ratio base).

    Warm-up note: every executor creates its threads on demand, from the
    thread that submits (or, for ours, from a spawner that thread starts), and
    threads inherit that thread's CPU affinity.  Each case therefore starts
    its threads while it sets up, which the harness runs pinned to the
    placement's worker CPUs, so that every executor's workers land there.
    A ``ThreadPoolExecutor`` under back-to-back calls settles at two threads:
    its worker delivers the result before it counts itself idle, so now and
    then the caller resubmits first and ``submit()`` starts a second thread,
    after which one is always idle (measured: two threads after 5 000 to
    20 000 calls, on both loops, never more).  Started during the
    measurement, that thread would inherit the caller's CPU and turn the split
    placement into a same-CPU one for half of the baseline's calls (seen:
    ``ThreadPoolExecutor`` at 0.65x ``asyncio.to_thread`` in split, the same
    executor); so the ``ThreadPoolExecutor`` cases start both at set-up.
    """

    @contextlib.asynccontextmanager
    async def tpe_run_in_executor() -> AsyncIterator[Op]:
        executor = ThreadPoolExecutor(thread_name_prefix="bench-tpe")
        loop = asyncio.get_running_loop()
        try:
            await start_threads(lambda f: loop.run_in_executor(executor, f), TPE_THREADS)
            yield lambda: loop.run_in_executor(executor, noop)
        finally:
            executor.shutdown()

    @contextlib.asynccontextmanager
    async def to_thread() -> AsyncIterator[Op]:
        await start_threads(asyncio.to_thread, TPE_THREADS)
        yield lambda: asyncio.to_thread(noop)

    @contextlib.asynccontextmanager
    async def anyio_run_sync() -> AsyncIterator[Op]:
        import anyio.to_thread

        await anyio.to_thread.run_sync(noop)
        yield lambda: anyio.to_thread.run_sync(noop)

    @contextlib.asynccontextmanager
    async def pool_run() -> AsyncIterator[Op]:
        pool = ThreadPool(name="bench-pool")
        try:
            await pool.run(noop)
            yield lambda: pool.run(noop)
        finally:
            pool.shutdown()

    @contextlib.asynccontextmanager
    async def floor() -> AsyncIterator[Op]:
        there, back = threading.Lock(), threading.Lock()
        there.acquire()
        back.acquire()
        done = False

        def hand(lock: threading.Lock) -> None:
            if not lock.acquire(timeout=10.0):  # bounded: a lost hand-off fails the run
                raise RuntimeError("floor: the other thread did not hand the lock back")

        def peer() -> None:
            while True:
                hand(there)
                if done:
                    return
                back.release()

        async def op() -> None:  # blocks the caller's loop, which has nothing else to do
            there.release()
            hand(back)

        thread = threading.Thread(target=peer, name="bench-floor")
        thread.start()
        try:
            yield op
        finally:
            done = True
            there.release()
            thread.join()

    @contextlib.asynccontextmanager
    async def pool_run_in_executor() -> AsyncIterator[Op]:
        pool = ThreadPool(name="bench-pool")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(pool, noop)
            yield lambda: loop.run_in_executor(pool, noop)
        finally:
            pool.shutdown()

    group = [Case(TPE_CASE, tpe_run_in_executor), Case(TO_THREAD_CASE, to_thread)]
    try:
        import anyio  # noqa: F401  # the bench extra; the case is skipped without it
    except ImportError:
        pass
    else:
        group.append(Case(ANYIO_CASE, anyio_run_sync))
    group += [
        Case(POOL_RUN_CASE, pool_run),
        Case("run_in_executor(ThreadPool)", pool_run_in_executor),
        Case(FLOOR_CASE, floor),
    ]
    return [Group("dispatch", WORK_DISPATCH, group)]


# --------------------------------------------------------------------- burst

# One burst: issue BURST requests at once; return each one's latency (ns) and
# the process CPU the burst took (ns).
Burst = Callable[[], Awaitable[tuple[list[int], int]]]
BurstCase = Callable[[], contextlib.AbstractAsyncContextManager[Burst]]


async def timed_burst(submit: Callable[[], Awaitable[object]]) -> tuple[list[int], int]:
    """Issue BURST requests at once; each latency runs from just before its submit."""
    clock = time.perf_counter_ns

    async def one() -> int:
        t0 = clock()
        await submit()
        return clock() - t0

    cpu0 = time.process_time_ns()
    latencies = await asyncio.gather(*(one() for _ in range(BURST)))
    return list(latencies), time.process_time_ns() - cpu0


def pool_runner(pool: ThreadPool) -> Callable[[], Awaitable[object]]:
    return lambda: pool.run(noop)


def tpe_runner(executor: ThreadPoolExecutor) -> Callable[[], Awaitable[object]]:
    loop = asyncio.get_running_loop()
    return lambda: loop.run_in_executor(executor, noop)


def new_pool() -> ThreadPool:
    return ThreadPool(BURST, name="bench-burst")


def new_tpe() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(BURST, thread_name_prefix="bench-burst")


def burst_on_new(
    make: Callable[[], _E], runner: Callable[[_E], Callable[[], Awaitable[object]]]
) -> Callable[[Placement], BurstCase]:
    """Each burst: create an executor (untimed), burst on it, shut it down (untimed).

    The executor is created pinned to the placement's worker CPUs, so that the
    threads it creates there land there; those it creates on demand inherit
    the submitter's CPUs, for ours as for ThreadPoolExecutor.
    """

    def placed(placement: Placement) -> BurstCase:
        return contextlib.asynccontextmanager(lambda: _new_bursts(make, runner, placement))

    return placed


async def _new_bursts(
    make: Callable[[], _E],
    runner: Callable[[_E], Callable[[], Awaitable[object]]],
    placement: Placement,
) -> AsyncIterator[Burst]:
    async def burst() -> tuple[list[int], int]:
        with placement.starting_workers():
            executor = make()
        try:
            return await timed_burst(runner(executor))
        finally:
            executor.shutdown()

    yield burst


def burst_on_warm(
    make: Callable[[], _E],
    runner: Callable[[_E], Callable[[], Awaitable[object]]],
    *,
    same_surroundings: bool = True,
) -> Callable[[Placement], BurstCase]:
    """Bursts on one long-lived executor.

    With *same_surroundings*, each burst is surrounded exactly as in
    ``burst_on_new(make, ...)``: a throwaway executor made by *make* is created
    just before it and shut down just after (untimed), so the only difference
    from the new-executor case is which executor the burst goes to.
    """

    def placed(placement: Placement) -> BurstCase:
        @contextlib.asynccontextmanager
        async def case() -> AsyncIterator[Burst]:
            with placement.starting_workers():
                executor = make()
                submit = runner(executor)
                await timed_burst(submit)  # every thread exists and has run once

            async def burst() -> tuple[list[int], int]:
                if not same_surroundings:
                    return await timed_burst(submit)
                with placement.starting_workers():
                    throwaway = make()
                try:
                    return await timed_burst(submit)
                finally:
                    throwaway.shutdown()

            try:
                yield burst
            finally:
                executor.shutdown()

        return case

    return placed


def min0_pool() -> ThreadPool:
    return ThreadPool(0, BURST, name="bench-burst")


WORK_BURST = f"{BURST} calls of `def noop()` issued at once from the caller's loop"


@dataclass(frozen=True)
class BurstKind(Generic[_E]):
    """One executor kind in the burst measurement: its new bursts against its warm ones."""

    #: the group's name in the table
    key: str
    #: the executor as the case names say it
    label: str
    make: Callable[[], _E]
    runner: Callable[[_E], Callable[[], Awaitable[object]]]
    #: also a warm case without the throwaway executor around each burst
    back_to_back: bool = False

    @property
    def warm(self) -> str:
        return f"warm {self.label}"

    @property
    def new(self) -> str:
        return f"new {self.label}"

    def cases(self) -> list[tuple[str, Callable[[Placement], BurstCase]]]:
        """The warm case first: the baseline the new one is compared with."""
        out = [
            (self.warm, burst_on_warm(self.make, self.runner)),
            (self.new, burst_on_new(self.make, self.runner)),
        ]
        if self.back_to_back:
            out.append(
                (
                    f"{self.warm}, back-to-back",
                    burst_on_warm(self.make, self.runner, same_surroundings=False),
                )
            )
        return out


BURST_KINDS: list[BurstKind[ThreadPool] | BurstKind[ThreadPoolExecutor]] = [
    BurstKind(
        f"burst{BURST}-pool-min{BURST}",
        f"ThreadPool(min={BURST})",
        new_pool,
        pool_runner,
        back_to_back=True,
    ),
    BurstKind(f"burst{BURST}-pool-min0", f"ThreadPool(min=0, max={BURST})", min0_pool, pool_runner),
    BurstKind(f"burst{BURST}-tpe", f"ThreadPoolExecutor({BURST})", new_tpe, tpe_runner),
]


async def run_bursts(loop_kind: str, placement: Placement, mode: Mode) -> list[Result]:
    """Every burst case of every kind, interleaved in *mode*'s rounds."""
    cases = [
        (Result(f"{NAME}/{kind.key}/{loop_kind}/{placement.name}", name, WORK_BURST), factory)
        for kind in BURST_KINDS
        for name, factory in kind.cases()
    ]
    bursts = max(1, BURST_SAMPLES[mode.name] // mode.rounds // BURST)
    warmup = max(3, bursts // 20)
    for turn in mode.turns():
        for result, factory in in_turn(cases, turn):
            chunk = result.new_round()
            async with factory(placement)() as burst:
                for _ in range(warmup):
                    await burst()
                for _ in range(bursts):
                    latencies, cpu_ns = await burst()
                    chunk.samples_ns.extend(latencies)
                    chunk.cpu_ns += cpu_ns
                    chunk.ops += len(latencies)
    return [result for result, _ in cases]


# -------------------------------------------------------------------- submit


def hold(started: threading.Semaphore, gate: threading.Event) -> None:
    """Say the request started, then keep its worker busy until *gate* opens."""
    started.release()
    gate.wait()


def submit_chunk(make: Callable[[], Executor], chunk: Chunk, submits: int) -> None:
    """Time *submits* submit() calls, each finding every worker busy."""
    clock = time.perf_counter_ns
    for _ in range(max(1, submits // SUBMITS_PER_EXECUTOR)):
        executor = make()
        gate = threading.Event()
        started = threading.Semaphore(0)
        cpu0 = time.process_time_ns()
        for _ in range(SUBMITS_PER_EXECUTOR):
            t0 = clock()
            executor.submit(hold, started, gate)
            chunk.samples_ns.append(clock() - t0)
        for _ in range(SUBMITS_PER_EXECUTOR):  # every request started: threads exist
            started.acquire()
        chunk.cpu_ns += time.process_time_ns() - cpu0
        chunk.ops += SUBMITS_PER_EXECUTOR
        gate.set()
        executor.shutdown()


#: The submit group's work, and its loop-kind part: submit() is called from the
#: main thread with no loop running, so the loop kind plays no part.
WORK_SUBMIT = "submit() of a blocking call while every worker is busy (a new thread each)"
SUBMIT_LOOP = "no-loop"
TPE_SUBMIT_CASE = "ThreadPoolExecutor.submit"
POOL_SUBMIT_CASE = "ThreadPool.submit"


def run_submits(group: str, mode: Mode) -> list[Result]:
    """Both executors' submit() with every worker busy, interleaved in *mode*'s rounds."""
    makers: list[tuple[str, Callable[[], Executor]]] = [
        (
            TPE_SUBMIT_CASE,
            lambda: ThreadPoolExecutor(SUBMITS_PER_EXECUTOR, thread_name_prefix="bench-tpe"),
        ),
        (
            POOL_SUBMIT_CASE,
            lambda: ThreadPool(0, SUBMITS_PER_EXECUTOR, name="bench-pool"),
        ),
    ]
    results = [Result(group, name, WORK_SUBMIT) for name, _ in makers]
    for turn in mode.turns():
        for (_, make), result in in_turn(list(zip(makers, results, strict=True)), turn):
            submit_chunk(make, Chunk(), SUBMITS_PER_EXECUTOR * 2)  # warm-up, discarded
            submit_chunk(make, result.new_round(), SAMPLES[mode.name] // mode.rounds)
    return results


# ------------------------------------------------- hooks of python -m benchmarks


def results(kind: str, loop_factory: LoopFactory, placement: Placement, mode: Mode) -> list[Result]:
    """The burst (per loop kind) and submit (once per placement) measurements."""
    out = []
    with placement.applied(), asyncio.Runner(loop_factory=loop_factory) as runner:
        out += runner.run(run_bursts(kind, placement, mode))
        # submit() is called with no loop running: the loop kind does not
        # matter, so it runs with the first kind only.
        if kind == next(iter(loop_kinds())):
            group = f"{NAME}/submit/{SUBMIT_LOOP}/{placement.name}"
            out += run_submits(group, mode)
    return out


#: The dispatch group's derived figures (see ``derived``).
OURS_OVER_BEST = "ThreadPool.run p50 / the best baseline's p50"
FLOOR_OVER_BEST = "floor p50 / the best baseline's p50"
ABOVE_FLOOR = "above the floor: (ThreadPool.run - floor) / (best baseline - floor), p50"


def derived(all_results: Sequence[Result]) -> list[Derived]:
    """Each dispatch group's figures against its best baseline, round by round.

    The best baseline is the one with the lowest p50 over all rounds; each
    figure is then computed within each round, from the p50s of that round,
    and reported as the median and range of the rounds.  The floor (the
    caller and a thread handing a lock back and forth, same placement, same
    rounds) is what any executor pays in wake-ups alone; what lies above it
    is the executor's own cost, the part an implementation can change.
    """
    out = []
    for group, by_case in _groups(all_results, f"{NAME}/dispatch").items():
        best = min(
            (by_case[name] for name in BASELINE_CASES if name in by_case),
            key=lambda r: r.percentile(50),
        )
        detail = f"best baseline: {best.case}"
        theirs, ours = best.per_round("p50_us"), by_case[POOL_RUN_CASE].per_round("p50_us")
        out.append(Derived(group, OURS_OVER_BEST, Spread.of_ratios(ours, theirs), detail))
        if FLOOR_CASE in by_case:
            floor = by_case[FLOOR_CASE].per_round("p50_us")
            out += [
                Derived(group, FLOOR_OVER_BEST, Spread.of_ratios(floor, theirs), detail),
                Derived(
                    group,
                    ABOVE_FLOOR,
                    Spread.of_ratios(
                        [o - f for o, f in zip(ours, floor, strict=True)],
                        [t - f for t, f in zip(theirs, floor, strict=True)],
                    ),
                    detail,
                ),
            ]
    return out


def _groups(all_results: Sequence[Result], prefix: str) -> dict[str, dict[str, Result]]:
    """The results of the groups whose names start with *prefix*, by group and case."""
    groups: dict[str, dict[str, Result]] = {}
    for r in all_results:
        if r.group.startswith(prefix + "/"):
            groups.setdefault(r.group, {})[r.case] = r
    return groups


def report(
    all_results: Sequence[Result],
    all_derived: Sequence[Derived],
    all_rates: Sequence[Rate],
    mode: Mode,
) -> list[str]:
    """The targets checked against this run (the pool has no rates)."""
    lines = [
        f"{d.group}: target ThreadPool.run p50 <= 0.8x the best baseline's: "
        f"{'met' if d.value.median <= 0.8 else 'NOT met'} ({d.value.text()}, median (range) "
        "of the rounds)"
        for d in all_derived
        if d.name == OURS_OVER_BEST
    ]
    lines += burst_verdicts(all_results)
    return lines


def recordings(mode: Mode) -> list[Timeline]:
    """The thread-count timeline of a burst, then idleness."""
    return [record_timeline(mode.quick)]


def burst_verdicts(all_results: Sequence[Result]) -> list[str]:
    """No creation spike: a new ThreadPool(min=N)'s burst against a warm one's.

    The target as first worded, "p99.9 of the burst with min=N within 1.5x
    the warm p50", compares one quantile of a burst with another of a different
    distribution: a burst of 8 on 2 CPUs through one caller loop queues, so
    even a warm pool's burst has a p99.9 several times its p50 (shown as
    "spread").  What shows a creation spike is the new pool's burst against
    the same burst, measured identically, on a warm pool of the same kind:
    same quantiles, ratio near 1 when there is no spike (the table shows
    every kind's new/warm ratios).  The literal ratio is printed too.
    """
    kind = BURST_KINDS[0]
    lines = []
    for group, by_case in _groups(all_results, f"{NAME}/{kind.key}").items():
        warm, new = by_case[kind.warm], by_case[kind.new]
        spike = new.percentile(99.9) / warm.percentile(99.9)
        lines.append(
            f"{group}: no creation spike, target p99.9 {kind.new} / {kind.warm} <= 1.5: "
            f"{'met' if spike <= 1.5 else 'NOT met'} ({spike:.2f}; warm spread p99.9/p50 = "
            f"{warm.percentile(99.9) / warm.percentile(50):.2f}; literal reading: new p99.9 = "
            f"{new.percentile(99.9) / warm.percentile(50):.2f}x the warm burst p50)"
        )
    return lines
