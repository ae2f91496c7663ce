"""The AioContext's side of the pollers' interface, one call at a time.

Each test makes an AioContext on a new loop that never runs and calls what
a poller would (the loop's thread is the test's), with a clock that moves
only when the test says: the counters, the window and the answers are then
exact.  How the context behaves on a running loop is tests/test_aio.py's.
"""

from __future__ import annotations

import dataclasses
import itertools
import select
import socket
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from iothreads import IOThreadStopped
from iothreads._aio import AioContext, _context, _inbox
from iothreads._aio._callback_poller import CallbackPoller
from iothreads._aio._selector_poller import SelectorPoller

from .helpers import LoopFactory, stdin_closed

START = 1_000_000


class Clock:
    """A clock (ns) that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def aio(loop_factory: LoopFactory, implementation: str) -> Iterator[AioContext]:
    loop = loop_factory()
    aio = AioContext(loop=loop, poll_max_ns=32768, poll_grow=0, poll_shrink=0, aio_max_batch=0)
    aio.clock = Clock()
    yield aio
    aio.close()
    loop.close()


def clock_of(aio: AioContext) -> Clock:
    assert isinstance(aio.clock, Clock)
    return aio.clock


def test_a_new_context_has_counted_nothing(aio: AioContext, implementation: str) -> None:
    stats = aio.statistics()
    assert (stats.poll_ns, stats.polls, stats.poll_hits, stats.blocks, stats.spin_ns) == (
        0, 0, 0, 0, 0
    )  # fmt: skip
    assert (stats.submitted, stats.wakeups_sent, stats.wakeups_suppressed) == (0, 0, 0)
    assert stats.spins_shared == 0
    assert stats.native == (implementation == "native")
    assert not aio.closing


def test_a_statistics_snapshot_cannot_be_changed(aio: AioContext) -> None:
    stats = aio.statistics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.polls = 1  # type: ignore[misc]


def test_each_loop_kind_gets_its_poller(aio: AioContext, implementation: str) -> None:
    """The stdlib's selector is wrapped; uvloop gets a callback poller, the
    native core's with the native inbox, whose spin watches libuv's descriptor."""
    wrapped = getattr(aio.loop, "_selector", None)
    if isinstance(wrapped, SelectorPoller):
        assert aio._poller is wrapped
        return
    core, poller = _inbox.native_core, cast(Any, aio._poller)
    if implementation == "native":
        assert core is not None
        assert type(poller) is core.CallbackPoller
        assert poller.fd == core.uv_backend_fd(aio.loop) >= 0
    else:
        assert type(poller) is CallbackPoller
        assert poller.fd == -1


def test_a_context_on_a_closed_loop_fails_and_leaves_no_descriptor(
    loop_factory: LoopFactory, implementation: str
) -> None:
    """The no_leaks fixture counts the wake-up channel's descriptor."""
    loop = loop_factory()
    loop.close()
    with pytest.raises(RuntimeError):
        AioContext(loop, poll_max_ns=0, poll_grow=0, poll_shrink=0, aio_max_batch=0)


def test_wakeups_suppressed_counts_submissions_that_wrote_nothing(aio: AioContext) -> None:
    """A wake-up with no submission (a poll handler's registration) is not a
    negative number of suppressed ones."""
    aio.add_poll_handler(lambda: False, lambda: None)
    aio._inbox.drain_wakeups()
    assert (aio.statistics().wakeups_sent, aio.statistics().wakeups_suppressed) == (1, 0)
    aio.woke(0)
    for _ in range(3):
        aio.call_soon_threadsafe(lambda: None)
    assert aio.drain()
    stats = aio.statistics()
    assert (stats.submitted, stats.wakeups_sent, stats.wakeups_suppressed) == (3, 1, 2)


@pytest.mark.parametrize(
    "poll",
    [(32768, 0, 0), (32767, 0, 0), (32769, 0, 0), (32768, 1, 0), (32768, 0, 1), (0, 5, 5)],
)
def test_a_change_of_a_poll_parameter_restarts_the_window(
    aio: AioContext, poll: tuple[int, int, int]
) -> None:
    """Whichever parameter moves, up or down; a change of aio-max-batch alone
    keeps the window."""
    aio.window.poll_ns = 8000
    params = dict(zip(("poll-max-ns", "poll-grow", "poll-shrink"), poll, strict=True))
    aio.set_params({**params, "aio-max-batch": 7})
    assert aio.statistics().max_batch == 7
    assert aio.poll_ns == (8000 if poll == (32768, 0, 0) else 0)


def test_close_inbox_refuses_work_from_then_on(aio: AioContext) -> None:
    aio.close_inbox()
    assert aio.closing
    with pytest.raises(IOThreadStopped):
        aio.call_soon_threadsafe(lambda: None)


def test_close_alone_stops_the_work_and_detaches(aio: AioContext) -> None:
    """A main-loop's context is closed without close_inbox() first: close()
    stops taking work itself, and says it is detached."""
    assert (aio.closing, aio.closed) == (False, False)
    aio.close()
    assert (aio.closing, aio.closed) == (True, True)
    with pytest.raises(IOThreadStopped):
        aio.call_soon_threadsafe(lambda: None)


def test_drain_runs_until_nothing_is_queued(aio: AioContext) -> None:
    ran: list[str] = []
    assert not aio.drain()
    aio.call_soon_threadsafe(lambda: aio.call_soon_threadsafe(ran.append, "queued meanwhile"))
    assert aio.drain()
    assert ran == ["queued meanwhile"]
    assert not aio.work_pending()


def test_a_poll_handler_may_be_given_by_keywords(aio: AioContext) -> None:
    calls: list[str] = []
    aio.add_poll_handler(
        poll=lambda: True,
        ready=lambda: calls.append("ready"),
        begin=lambda: calls.append("begin"),
        end=lambda: calls.append("end"),
    )
    aio.begin_polling()
    aio.end_polling(START)
    aio.drain()
    assert calls == ["begin", "end", "ready"]


def test_a_ready_poll_handler_is_work(aio: AioContext) -> None:
    ran: list[str] = []
    aio.add_poll_handler(lambda: True, lambda: ran.append("ready"))
    assert not aio.work_pending()
    assert aio.poll_step()
    assert aio.work_pending()
    assert aio.drain()
    assert ran == ["ready"]


def test_a_polling_phase_that_catches_nothing(aio: AioContext) -> None:
    aio.begin_polling()
    clock_of(aio).now += 5000
    assert not aio.end_polling(START)
    stats = aio.statistics()
    assert (stats.polls, stats.poll_hits, stats.spin_ns, stats.poll_ns) == (1, 0, 5000, 0)


@pytest.mark.parametrize("catch", ["io", "inbox", "handler"])
def test_a_polling_phase_that_catches_work_moves_the_window(aio: AioContext, catch: str) -> None:
    """A hit: counted, and the window moved by the time it took (here a block
    of 5 us grows the window of 0 to its first size)."""
    if catch == "inbox":
        aio.call_soon_threadsafe(lambda: None)
    elif catch == "handler":  # found by the look that follows the handlers' end()
        aio.add_poll_handler(lambda: True, lambda: None)
    aio.begin_polling()
    clock_of(aio).now += 5000
    assert aio.end_polling(START, io_ready=catch == "io")
    stats = aio.statistics()
    assert (stats.polls, stats.poll_hits, stats.spin_ns, stats.poll_ns) == (1, 1, 5000, 4000)
    aio.drain()


def test_the_last_look_lets_the_loop_sleep_and_counts_it(aio: AioContext) -> None:
    assert aio.prepare_to_block()
    assert aio.statistics().blocks == 1
    aio.call_soon_threadsafe(lambda: None)  # the loop sleeps: this wakes it
    assert aio._inbox.drain_wakeups() == 1
    assert not aio.prepare_to_block()  # work queued: no sleep
    assert aio.statistics().blocks == 1
    aio.drain()


def test_a_ready_poll_handler_keeps_the_loop_awake(aio: AioContext) -> None:
    """... and awake means producers do not wake it: the loop does not
    announce a sleep it would have to call off."""
    aio.add_poll_handler(lambda: True, lambda: None)
    aio._inbox.drain_wakeups()
    assert aio.poll_step()
    assert not aio.prepare_to_block()
    assert aio.statistics().blocks == 0
    aio.call_soon_threadsafe(lambda: None)
    assert aio._inbox.drain_wakeups() == 0
    aio.drain()


def test_woke_moves_the_window_and_ends_the_sleep(aio: AioContext) -> None:
    assert aio.prepare_to_block()
    aio.woke(5000)
    assert aio.poll_ns == 4000
    aio.call_soon_threadsafe(lambda: None)
    assert aio._inbox.drain_wakeups() == 0  # awake: not woken
    aio.drain()


# -- spin(): the Python spin and the native one's slices ---------------------------------


class StepClock(Clock):
    """Moves 1 us per reading: a spin lasts a known number of looks (and one
    that does not end within 100 fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def __call__(self) -> int:
        self.readings += 1
        assert self.readings <= 100, "the spin went on past its deadline"
        self.now += 1000
        return self.now


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], float]]:
    """The Python spin's looks at a descriptor: (descriptors, timeout) each."""
    seen: list[tuple[list[int], float]] = []

    def looking(r: list[int], w: list[int], x: list[int], timeout: float) -> object:
        seen.append((r, timeout))
        return select.select(r, w, x, timeout)

    monkeypatch.setattr(_context, "select", SimpleNamespace(select=looking))
    return seen


def test_the_python_spin_runs_out_at_its_deadline(
    aio: AioContext, looks: list[tuple[list[int], float]]
) -> None:
    aio._native_spin = None
    aio.clock = StepClock()
    assert not aio.spin(START + 3000)
    assert aio.clock() == START + 4000  # read at 1, 2, 3 us: the third is the deadline
    assert looks == []  # no descriptor to watch


def test_the_python_spin_ends_at_the_first_reading_past_its_deadline(aio: AioContext) -> None:
    aio._native_spin = None
    aio.clock = StepClock()
    assert not aio.spin(START + 2500, -1)
    assert aio.clock() == START + 4000


def test_the_python_spin_looks_at_the_descriptor_without_waiting(
    aio: AioContext, looks: list[tuple[list[int], float]]
) -> None:
    aio._native_spin = None
    aio.clock = StepClock()
    a, b = socket.socketpair()
    with a, b:
        assert not aio.spin(START + 3000, a.fileno())
        assert looks == [([a.fileno()], 0)] * 2
        b.send(b"x")
        assert aio.spin(START + 10**9, a.fileno())


def test_the_python_spin_watches_descriptor_zero(
    aio: AioContext, looks: list[tuple[list[int], float]]
) -> None:
    aio._native_spin = None
    aio.clock = StepClock()
    with stdin_closed():
        a, b = socket.socketpair()
        with a, b:
            assert a.fileno() == 0
            b.send(b"x")
            assert aio.spin(START + 10**9, 0)


def test_a_spin_ends_at_once_when_work_is_queued(aio: AioContext) -> None:
    def never(slice_ns: int, fd: int) -> int:
        raise AssertionError("spun with work queued")

    aio._native_spin = never
    aio.call_soon_threadsafe(lambda: None)
    assert aio.spin(START + 10**9)
    aio.drain()


def test_the_native_spin_waits_out_the_rest_of_the_window(aio: AioContext) -> None:
    slices: list[tuple[int, int]] = []

    def spin(slice_ns: int, fd: int) -> int:
        slices.append((slice_ns, fd))
        clock_of(aio).now += slice_ns
        return 0

    aio._native_spin = spin
    assert not aio.spin(START + 50_000, 5)
    assert slices == [(50_000, 5)]
    aio._native_spin = lambda slice_ns, fd: 1  # work or I/O came
    assert aio.spin(clock_of(aio).now + 50_000, 5)


def test_the_native_spin_comes_back_for_the_poll_handlers_every_20_us(aio: AioContext) -> None:
    slices: list[int] = []

    def spin(slice_ns: int, fd: int) -> int:
        slices.append(slice_ns)
        clock_of(aio).now += slice_ns
        return 0

    polled: list[int] = []

    def poll() -> bool:
        polled.append(1)
        return False

    aio.add_poll_handler(poll, lambda: None)
    aio._native_spin = spin
    assert not aio.spin(START + 50_000)
    assert slices == [20_000, 20_000, 10_000]
    assert len(polled) == 4  # before each slice, and at the deadline


# -- the guard: a spin that learns its CPU is shared gives up -----------------------------


class Switches:
    """A thread's context-switch counter (``AioContext.switches``) that moves
    only when the test says so, and counts its readings.

    Its values are large, a new int object at each reading, as a real
    counter's may be: the guard compares them by value.
    """

    BASE = 10**6

    def __init__(self) -> None:
        self.count = 0
        self.readings = 0

    def __call__(self) -> int:
        self.readings += 1
        return self.BASE + self.count

    def switch(self) -> None:
        """Another thread ran on the spin's CPU."""
        self.count += 1


@pytest.fixture
def switches(aio: AioContext, monkeypatch: pytest.MonkeyPatch) -> Switches:
    """The Python spin with its guard on, watching a counter the test moves;
    the clock moves 1 us a reading (``StepClock``), so a spin of n us yields
    n - 1 times."""
    counter = Switches()
    aio._native_spin = None
    aio.spin_guard = True
    aio.switches = counter
    aio.clock = StepClock()
    monkeypatch.setattr(_context, "yield_cpu", lambda: None)
    return counter


def yields_then(monkeypatch: pytest.MonkeyPatch, n: int, action: Callable[[], object]) -> None:
    """Make the spin's *n*-th yield run *action*, as another thread on its CPU would."""
    made = itertools.count(1)
    monkeypatch.setattr(_context, "yield_cpu", lambda: next(made) == n and action())


@pytest.mark.implementations("python")
def test_the_guard_lets_a_spin_nobody_shares_run_its_window(
    aio: AioContext, switches: Switches
) -> None:
    """19 yields, none of which ran another thread: the spin runs out at its
    deadline, and nothing says the CPU is shared."""
    assert not aio.spin(START + 20_000)
    assert clock_of_steps(aio) == 20
    assert not aio.cpu_shared
    assert aio.statistics().spins_shared == 0


@pytest.mark.implementations("python")
@pytest.mark.parametrize(("yields", "readings"), [(8, 2), (16, 3), (19, 4), (1, 2)])
def test_the_guard_reads_the_counter_once_per_guard_steps_yields_and_at_the_end(
    aio: AioContext, switches: Switches, yields: int, readings: int
) -> None:
    """Each reading is a system call (getrusage): the guard reads the counter
    before the spin, after every GUARD_STEPS-th yield, and once more at the
    deadline only if yields came since its last reading."""
    assert _context.GUARD_STEPS == 8  # the cases above count in eights
    assert not aio.spin(START + (yields + 1) * 1000)
    assert switches.readings == readings


@pytest.mark.implementations("python")
@pytest.mark.parametrize(
    ("shared_at", "spin_us", "gives_up_at_us"),
    [(1, 10, 8), (8, 10, 8), (9, 10, 10), (3, 4, 4), (1, 2, 2)],
)
def test_the_guard_sees_any_yield_that_ran_another_thread(
    aio: AioContext,
    switches: Switches,
    monkeypatch: pytest.MonkeyPatch,
    shared_at: int,
    spin_us: int,
    gives_up_at_us: int,
) -> None:
    """Whether the yield that shared the CPU comes before a reading (after
    every 8th yield) or after the last one, the spin gives up at the next
    reading or at its deadline, whichever comes first (a spin of n us yields
    n - 1 times)."""

    yields_then(monkeypatch, shared_at, switches.switch)
    assert not aio.spin(START + spin_us * 1000)
    assert aio.cpu_shared
    assert aio.statistics().spins_shared == 1
    assert clock_of_steps(aio) == gives_up_at_us


def test_work_handed_over_as_the_cpu_was_shared_ends_the_spin_as_caught(
    aio: AioContext, implementation: str, switches: Switches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard's one more look finds what the thread that ran on the CPU
    queued: the spin returns True, and it did not give up, but the CPU
    proved shared."""

    def hand_over() -> None:
        aio.call_soon_threadsafe(lambda: None)

    if implementation == "native":

        def native_spin(slice_ns: int, fd: int) -> int:
            hand_over()
            return _context.NATIVE_SPIN_SHARED

        aio._native_spin = native_spin
    else:  # the 8th yield, whose reading sees the thread that ran

        def another_thread_ran() -> None:
            switches.switch()
            hand_over()

        yields_then(monkeypatch, 8, another_thread_ran)
    assert aio.spin(START + 10**9) is True
    assert aio.cpu_shared
    assert aio.statistics().spins_shared == 0
    aio.drain()


@pytest.mark.implementations("native")
@pytest.mark.parametrize("guard", [True, False])
def test_work_the_native_spin_caught_on_a_shared_cpu_is_caught_and_says_so(
    aio: AioContext, guard: bool
) -> None:
    """C's last look after the yield that shared the CPU found work (its
    outcome 4): caught, and the CPU proved shared, where the guard is on."""
    aio.spin_guard = guard
    aio._native_spin = lambda slice_ns, fd: _context.NATIVE_SPIN_CAUGHT_SHARED
    assert aio.spin(START + 10**9) is True
    assert aio.cpu_shared is guard
    assert aio.statistics().spins_shared == 0


@pytest.mark.skipif(_inbox.native_core is None, reason="the native core is not built here")
def test_the_spin_outcomes_the_context_tells_apart_are_the_native_cores() -> None:
    """The context reads two of C's spin outcomes by number: spin.c's own."""
    core = _inbox.native_core
    assert core is not None
    assert (_context.NATIVE_SPIN_SHARED, _context.NATIVE_SPIN_CAUGHT_SHARED) == (
        core.SPIN_SHARED,
        core.SPIN_WORK_SHARED,
    )


def test_a_polling_phase_starts_with_the_cpu_not_known_shared(
    aio: AioContext, switches: Switches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cpu_shared`` tells the poller the spin gave up for this phase only."""

    yields_then(monkeypatch, 1, switches.switch)
    aio.begin_polling()
    assert not aio.spin(START + 10_000)
    assert aio.cpu_shared
    aio.end_polling(START)
    aio.begin_polling()
    assert not aio.cpu_shared
    aio.end_polling(START)


def clock_of_steps(aio: AioContext) -> int:
    """How many times the spin read its StepClock."""
    assert isinstance(aio.clock, StepClock)
    return aio.clock.readings
