"""Soak test: race every way of handing work to IOThreads for a while, and
account for every call.

    python tools/soak.py [--minutes N | --seconds N] [--fork | --no-fork]

The run is a sequence of cycles, each one IOThread's life, rotating over the
stdlib loop and uvloop (where installed) and over the native and the
pure-Python inbox (where the native core is built).  In a cycle, threads race:
``call_soon_threadsafe`` handles (some cancelled), ``submit`` futures (some
cancelled), ``run_sync``, ``io.run`` awaited from an asyncio caller of the same
loop kind (some cancelled), and ``update_params`` of poll-max-ns,
thread-pool-min/max and aio-max-batch; the IOThread is stopped while they go
on.  With ``--fork`` (the default) some cycles fork while all that runs: the
child checks that the inherited IOThread reads stopped and refuses work, then
starts and uses an IOThread of its own, and answers through a pipe; every
wait for it is bounded, so a child that hangs is reported as a failure.

Every call ends in exactly one outcome: ran, refused (``IOThreadStopped``) or
cancelled.  The report gives these per loop and inbox, plus *lost* (no
outcome, or an outcome its execution count contradicts) and *doubled* (run
twice, or run and refused), and the threads and descriptors open at the end
against the start.  The exit status is 1 if anything was lost, doubled or
leaked, a fork check failed or a thread raised; else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from iothreads import IOThread, IOThreadStopped
from iothreads._aio import _inbox

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

try:
    import uvloop
except ImportError:  # the soak runs the stdlib loop alone
    uvloop_factory: LoopFactory | None = None
else:
    uvloop_factory = uvloop.new_event_loop

WAIT = 10.0  # seconds: the bound of every wait for an outcome, a thread, a child
NATIVE_CORE = _inbox.native_core


KEYS = ("submitted", "ran", "refused", "cancelled", "lost", "doubled")


class Ledger:
    """The calls of one loop and inbox kind, and what became of them.

    Calls are tallied into ``totals`` at the end of each cycle (``close_cycle``)
    and forgotten, so a long run holds one cycle's calls at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self.outcomes: dict[int, list[str]] = {}  # call -> outcomes seen by its caller
        self.runs: collections.Counter[int] = collections.Counter()  # call -> executions
        self.totals: collections.Counter[str] = collections.Counter({k: 0 for k in KEYS})
        self.cycles = 0
        self.forks = 0
        self.failures: list[str] = []

    def new(self) -> int:
        with self._lock:
            self._next += 1
            self.outcomes[self._next] = []
            return self._next

    def work(self, call: int) -> int:
        """What every call runs on the IOThread: count the execution."""
        with self._lock:
            self.runs[call] += 1
        return call

    async def coro_work(self, call: int) -> int:
        await asyncio.sleep(0)
        return self.work(call)

    def outcome(self, call: int, what: str) -> None:
        with self._lock:
            self.outcomes[call].append(what)

    def fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def close_cycle(self) -> None:
        """Tally this cycle's calls (all callers have ended) and forget them."""
        with self._lock:
            outcomes, self.outcomes = self.outcomes, {}
            runs, self.runs = self.runs, collections.Counter()
        self.totals["submitted"] += len(outcomes)
        for call, seen in outcomes.items():
            if len(seen) > 1 or runs[call] > 1 or (seen == ["refused"] and runs[call]):
                self.totals["doubled"] += 1
            elif not seen or (seen == ["ran"] and not runs[call]):
                self.totals["lost"] += 1
            else:
                self.totals[seen[0]] += 1
        self.cycles += 1


def outcome_of(future: concurrent.futures.Future[int]) -> str:
    try:
        future.result(WAIT)
    except concurrent.futures.CancelledError:
        return "cancelled"
    except IOThreadStopped:
        return "refused"
    except concurrent.futures.TimeoutError:
        return "no outcome"
    return "ran"


def handles(io: IOThread, ledger: Ledger, done: threading.Event) -> None:
    issued: list[tuple[int, asyncio.Handle, bool]] = []
    while not done.is_set():
        call = ledger.new()
        try:
            handle = io.call_soon_threadsafe(ledger.work, call)
        except IOThreadStopped:
            ledger.outcome(call, "refused")
            break  # the stop has begun
        cancel = random.random() < 0.2
        if cancel:
            handle.cancel()
        issued.append((call, handle, cancel))
    done.wait()  # set only once io.stop() returned: every handle ran or never will
    for call, _, cancel in issued:
        ran = ledger.runs[call] > 0
        if ran or cancel:
            ledger.outcome(call, "ran" if ran else "cancelled")


def submits(io: IOThread, ledger: Ledger, done: threading.Event) -> None:
    while not done.is_set():
        call = ledger.new()
        try:
            future = io.submit(ledger.work, call)
        except IOThreadStopped:
            ledger.outcome(call, "refused")
            return  # the stop has begun
        if random.random() < 0.3:
            future.cancel()
        ledger.outcome(call, outcome_of(future))


def run_syncs(io: IOThread, ledger: Ledger, done: threading.Event) -> None:
    while not done.is_set():
        call = ledger.new()
        try:
            io.run_sync(ledger.work, call, timeout=WAIT)
        except IOThreadStopped:
            ledger.outcome(call, "refused")
            return  # the stop has begun
        except TimeoutError:
            ledger.outcome(call, "cancelled")
        else:
            ledger.outcome(call, "ran")


def async_caller(loop_factory: LoopFactory) -> Callable[[IOThread, Ledger, threading.Event], None]:
    def caller(io: IOThread, ledger: Ledger, done: threading.Event) -> None:
        async def one() -> bool:
            """One call; return whether it was refused."""
            call = ledger.new()
            work = ledger.coro_work if call % 2 else ledger.work
            task = asyncio.ensure_future(io.run(work, call))
            if random.random() < 0.3:
                await asyncio.sleep(0)
                task.cancel()
            finished, _ = await asyncio.wait({task}, timeout=WAIT)
            if not finished:
                return False  # no outcome: counted lost
            if task.cancelled():
                ledger.outcome(call, "cancelled")
            elif isinstance(task.exception(), IOThreadStopped):
                ledger.outcome(call, "refused")
                return True
            elif task.exception() is None:
                ledger.outcome(call, "ran")
            else:
                ledger.fail(f"io.run raised {task.exception()!r}")
            return False

        async def main() -> None:
            while not done.is_set():
                if any(await asyncio.gather(*(one() for _ in range(8)))):
                    return  # the stop has begun

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())

    return caller


def writer(io: IOThread, ledger: Ledger, done: threading.Event) -> None:
    while not done.wait(0.001):
        low = random.randint(0, 4)
        io.update_params(
            random.choice(
                [
                    {"poll-max-ns": random.choice([0, 4000, 32768, 262144])},
                    {"thread-pool-min": low, "thread-pool-max": random.randint(max(1, low), 8)},
                    {"aio-max-batch": random.choice([0, 1, 32, 1024])},
                ]
            )
        )


def fork_check(io: IOThread, loop_factory: LoopFactory, ledger: Ledger) -> None:
    """Fork now; the child checks *io* reads stopped and runs an IOThread of its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return
        problems: list[str] = []
        try:
            signal.alarm(int(WAIT))  # the child's own bound: killed if it hangs
            os.close(r)
            if io.running:
                problems.append("the inherited IOThread reads running")
            try:
                io.call_soon_threadsafe(print)
            except IOThreadStopped:
                pass
            else:
                problems.append("the inherited IOThread took a call")
            with IOThread("soak-child", loop_factory=loop_factory) as child:
                if child.run_sync(lambda: 42, timeout=WAIT) != 42:
                    problems.append("the child's own IOThread gave a wrong answer")
        except BaseException as exc:
            problems.append(repr(exc))
        finally:
            os.write(w, ("; ".join(problems) or "ok").encode()[:1000])
            os._exit(1 if problems else 0)
    os.close(w)
    deadline = time.monotonic() + WAIT
    answer = b""
    try:
        if select.select([r], [], [], WAIT)[0]:
            answer = os.read(r, 1000)
    finally:
        os.close(r)
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if waited[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        answer = answer or b"hung (killed)"
    ledger.forks += 1
    if answer != b"ok":
        ledger.fail(f"fork: {answer.decode(errors='replace') or 'no answer'}")


def cycle(n: int, name: str, loop_factory: LoopFactory, ledger: Ledger, fork: bool) -> None:
    io = IOThread(f"soak{n}", loop_factory=loop_factory)
    io.start()
    done = threading.Event()
    producers = [handles, submits, run_syncs, async_caller(loop_factory), writer]
    threads = [
        threading.Thread(target=guarded(p, io, ledger, done), name=f"soak {p.__name__}")
        for p in producers
    ]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.1, 0.5))
    if fork:
        fork_check(io, loop_factory, ledger)
    io.stop()  # while the producers go on: each ends at its first refusal
    done.set()
    for thread in threads:
        thread.join(WAIT)
        if thread.is_alive():
            ledger.fail(f"{thread.name} did not end in {WAIT} s ({name})")
    ledger.close_cycle()


def guarded(
    producer: Callable[[IOThread, Ledger, threading.Event], None],
    io: IOThread,
    ledger: Ledger,
    done: threading.Event,
) -> Callable[[], None]:
    def run() -> None:
        try:
            producer(io, ledger, done)
        except BaseException as exc:
            ledger.fail(f"{threading.current_thread().name} raised {exc!r}")
            done.set()

    return run


def kinds() -> list[tuple[str, LoopFactory, bool]]:
    loops: list[tuple[str, LoopFactory]] = [("asyncio", asyncio.SelectorEventLoop)]
    if uvloop_factory is not None:
        loops.append(("uvloop", uvloop_factory))
    inboxes = [True, False] if NATIVE_CORE is not None else [False]
    return [
        (f"{loop}/{'native' if native else 'python'}", factory, native)
        for native in inboxes
        for loop, factory in loops
    ]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))


def duration(text: str) -> float:
    value = float(text)
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=duration, default=10.0, help="default 10")
    length.add_argument("--seconds", type=duration, help="instead of --minutes")
    parser.add_argument("--fork", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    for _, factory, _ in kinds():
        # The first uvloop of a process opens descriptors that live until it
        # exits: open them before counting.
        factory().close()
    threads_before, fds_before = threading.active_count(), open_fds()
    ledgers: dict[str, Ledger] = {}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        name, factory, native = kinds()[n % len(kinds())]
        ledger = ledgers.setdefault(name, Ledger())
        _inbox.native_core = NATIVE_CORE if native else None  # the inbox new IOThreads get
        cycle(n, name, factory, ledger, fork=args.fork and n % 5 == 4)
        n += 1
    _inbox.native_core = NATIVE_CORE
    threads_after, fds_after = threading.active_count(), open_fds()
    bad = threads_after > threads_before or fds_after > fds_before
    print(f"soak: {seconds:g} s, {n} cycles, fork={args.fork}")
    for name, ledger in sorted(ledgers.items()):
        counts = ledger.totals
        print(
            f"{name:15} cycles={ledger.cycles} forks={ledger.forks} "
            + " ".join(f"{k}={counts[k]}" for k in KEYS)
        )
        for failure in ledger.failures[:10]:
            print(f"  FAILED: {failure}")
        bad = bad or bool(counts["lost"] or counts["doubled"] or ledger.failures)
    print(f"threads: {threads_before} -> {threads_after}, fds: {fds_before} -> {fds_after}")
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
