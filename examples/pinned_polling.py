"""A latency-critical IOThread: pinned to a CPU of its own, polling before it sleeps.

    python examples/pinned_polling.py [--requests 2000] [--cpu auto|none|N]
                                      [--poll-max-ns 262144] [--loop asyncio|uvloop]

The application's loop sends requests back to back to an IOThread and times
each round trip.  Two settings cut the IOThread's share of that time:

* ``poll_max_ns``: before the IOThread's loop sleeps it busy-polls for up to
  this long, so a request arriving meanwhile is taken without a wake-up (no
  syscall for the producer, no scheduler latency for the loop).  The window
  adapts: it grows while requests come a little after it closed, and drops
  when the loop idles longer than poll_max_ns.
* ``cpu_affinity``: the IOThread's thread stays on one CPU, so its spin does
  not compete with the producer for a CPU, and its caches stay warm.  Linux
  only; ``--cpu auto`` picks the last CPU this process may use, and leaves
  the IOThread unpinned where there is only one (a spin on the producer's
  CPU would only delay the producer) or where pinning is refused.

Then polling is switched off live (``io.poll_max_ns = 0``) and the same
requests run again, for comparison.  After each run the program prints the
round trips' percentiles and the loop's counters (``aio_context.statistics()``):

* ``polls``: times the loop had nothing to do and polled before sleeping;
  ``poll_hits``: polls that a request ended (it was served without sleeping);
  ``blocks``: times the loop did go to sleep;
* ``submitted``: requests taken from the IOThread's inbox; ``wakeups_sent``:
  those whose producer had to wake the loop; ``wakeups_suppressed``: those
  that found it awake or polling (no syscall);
* ``spin_ns``: time spent polling; ``spins_shared``: polls cut short because
  another thread was waiting for the same CPU;
* ``poll_ns``: the polling window at the end of the run; ``native``: whether
  the C core serves the loop (else the pure-Python one).

On a shared or loaded machine the figures vary from run to run; polling pays
where a wake-up is dear and the IOThread has a CPU to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from iothreads import IOThread

#: The counters printed after each run, as differences over the run.
COUNTERS = ("polls", "poll_hits", "blocks", "submitted", "wakeups_sent", "wakeups_suppressed")


def choose_cpus(cpu: str) -> tuple[frozenset[int] | None, str]:
    """The CPUs to pin the IOThread to (None: unpinned), and why, for *cpu*
    as given on the command line (auto, none or a CPU id)."""
    if cpu == "none":
        return None, "unpinned (--cpu none)"
    if not hasattr(os, "sched_getaffinity"):
        return None, "unpinned (this platform cannot pin threads)"
    if cpu != "auto":
        return frozenset({int(cpu)}), f"pinned to CPU {cpu}"
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, f"unpinned (this process may use CPU {allowed[0]} only)"
    return frozenset({allowed[-1]}), f"pinned to CPU {allowed[-1]} of {allowed}"


async def start_pinned(io: IOThread, cpu: str) -> str:
    """Start *io*, pinned as *cpu* asks where it can be; returns where it runs."""
    cpus, placement = choose_cpus(cpu)
    if cpus is not None:
        try:
            io.cpu_affinity = cpus  # ValueError: a CPU this process may not use
            await io.astart()  # OSError: the system refused (a container may)
            return placement
        except (ValueError, OSError) as exc:
            io.cpu_affinity = None
            placement = f"unpinned (pinning refused: {exc})"
    await io.astart()
    return placement


def handle(request: int) -> int:
    """The latency-critical work: small, and run on the IOThread's own thread."""
    return request * 2 + 1


async def run_requests(io: IOThread, requests: int, label: str) -> None:
    """Send *requests* back to back, then print the round trips and the counters."""
    before = io.aio_context.statistics()
    round_trips: list[int] = []
    for i in range(requests):
        started = time.perf_counter_ns()
        await io.run(handle, i)  # a plain function: called on the IOThread's thread
        round_trips.append(time.perf_counter_ns() - started)
    after = io.aio_context.statistics()

    print(f"{label}: {requests} requests answered")
    if round_trips:
        round_trips.sort()
        p50, p99 = (round_trips[len(round_trips) * p // 100] for p in (50, 99))
        print(f"  round trip p50 {p50 / 1000:.1f} us, p99 {p99 / 1000:.1f} us")
    before_d, after_d = asdict(before), asdict(after)
    print("  " + ", ".join(f"{name} {after_d[name] - before_d[name]}" for name in COUNTERS))
    print(
        f"  spin_ns {after.spin_ns - before.spin_ns}, spins_shared"
        f" {after.spins_shared - before.spins_shared}, poll_ns {after.poll_ns},"
        f" native {after.native}"
    )


async def main_async(io: IOThread, requests: int, cpu: str) -> int:
    placement = await start_pinned(io, cpu)
    try:
        # What the IOThread's loop itself reports: the CPUs it was pinned to.
        print(f"IOThread {io.id!r}: {placement}; cpu_affinity {_cpus(io)}")
        await run_requests(io, requests, f"polling on (poll-max-ns {io.poll_max_ns})")
        io.poll_max_ns = 0  # live: validated here, applied by the IOThread's loop
        # The change is queued to the loop like a request: once a request
        # queued after it is answered, the loop polls no more.
        await io.run(handle, 0)
        await run_requests(io, requests, "polling off (poll-max-ns 0)")
    finally:
        await io.aclose()
    return 0


def _cpus(io: IOThread) -> str:
    cpus = io.aio_context.statistics().cpu_affinity
    return "none" if cpus is None else ",".join(map(str, sorted(cpus)))


def _loop_factory(kind: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The IOThread's loop: uvloop, the stdlib's, or None for iothreads' default choice."""
    if kind == "uvloop":
        import uvloop  # an optional dependency: pip install uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="round trips per run")
    parser.add_argument(
        "--poll-max-ns", type=int, default=262144, help="the polling window's upper bound"
    )
    parser.add_argument(
        "--cpu", default="auto", help="auto, none, or the CPU id to pin the IOThread to"
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        help="the IOThread's event loop (default: uvloop where installed)",
    )
    args = parser.parse_args(argv)
    if args.requests < 0:
        parser.error(f"--requests must be at least 0, not {args.requests}")
    if args.cpu not in ("auto", "none") and not args.cpu.isdigit():
        parser.error(f"--cpu must be auto, none or a CPU id, not {args.cpu!r}")
    try:
        # Validates every property now (and starts nothing): a bad value is a usage error.
        io = IOThread("rt0", poll_max_ns=args.poll_max_ns, loop_factory=_loop_factory(args.loop))
    except ValueError as exc:
        parser.error(f"--poll-max-ns {args.poll_max_ns}: {exc}")
    return asyncio.run(main_async(io, args.requests, args.cpu))


if __name__ == "__main__":
    sys.exit(main())
