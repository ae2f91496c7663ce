"""The pollers and the poll handler set, one step at a time, against a stub context.

``SelectorPoller`` and ``CallbackPoller`` talk to their AioContext through a
handful of methods (the context's "pollers' interface"); here a stub stands
in for the context, records every call, and answers as each test scripts it,
with a clock that moves only when the test says.  So each test checks the
exact timeouts, deadlines and block times a poller computes, and the exact
order of its calls, in one thread, without timing anything.  How the pollers
behave on a real loop is tests/test_aio.py's.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any, cast

import pytest

from iothreads._aio import _callback_poller, _inbox
from iothreads._aio._callback_poller import CallbackPoller, new_callback_poller
from iothreads._aio._poll_handlers import PollHandler, PollHandlerSet
from iothreads._aio._selector_poller import SelectorPoller

from .helpers import LOOP_FACTORIES

#: The wake-up channel's descriptor, as the stub context reports it.
WAKE_FD = 10

#: The descriptor of a selector that has one (epoll's).
SELECTOR_FD = 99


class Clock:
    """A clock (ns) that stands still until a test or a stub moves it."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class StubContext:
    """What a poller sees of its AioContext, scripted; ``calls`` records each call."""

    def __init__(self, clock: Clock, *, poll_ns: int = 0) -> None:
        self.loop = StubLoop()
        self.clock = clock
        self.window = StubWindow(poll_ns, self)
        self.closing = False
        #: what work_pending() answers
        self.pending = False
        #: what each spin() does, in turn: (its answer, ns the clock moves)
        self.spins: list[tuple[bool, int]] = []
        #: what end_polling() and prepare_to_block() answer
        self.caught = False
        self.may_block = True
        #: whether the spin found its CPU shared (the guard), read after a step
        self.cpu_shared = False
        #: whether each spin() finds its CPU shared (sets cpu_shared)
        self.spins_share = False
        self.calls: list[tuple[Any, ...]] = []

    @property
    def poll_ns(self) -> int:
        return self.window.poll_ns

    def work_pending(self) -> bool:
        return self.pending

    def begin_polling(self) -> None:
        self.calls.append(("begin_polling",))

    def spin(self, deadline_ns: int, fd: int) -> bool:
        self.calls.append(("spin", deadline_ns, fd))
        answer, elapsed = self.spins.pop(0)
        self.clock.now += elapsed
        self.cpu_shared = self.cpu_shared or self.spins_share
        return answer

    def end_polling(self, started_ns: int, *, io_ready: bool = False) -> bool:
        self.calls.append(("end_polling", started_ns, io_ready))
        return self.caught

    def prepare_to_block(self) -> bool:
        self.calls.append(("prepare_to_block",))
        return self.may_block

    def woke(self, block_ns: int) -> None:
        self.calls.append(("woke", block_ns))

    def wakeup_fileno(self) -> int:
        return WAKE_FD

    def serve_inbox(self) -> None:
        self.calls.append(("serve_inbox",))
        self.pending = False
        self.served()

    def served(self) -> None:
        """What serving the inbox does besides (a test replaces it)."""


class StubWindow:
    """A window that stays where it is; ``adjust()`` is recorded in the context's calls."""

    def __init__(self, poll_ns: int, context: StubContext) -> None:
        self.poll_ns = poll_ns
        self._context = context

    def adjust(self, block_ns: int) -> int:
        self._context.calls.append(("adjust", block_ns))
        return self.poll_ns


class StubLoop:
    """A loop that queues callbacks for the test to run, and records reported errors."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], object]] = []
        self.errors: list[Mapping[str, Any]] = []

    def call_soon(self, callback: Callable[[], object]) -> None:
        self.soon.append(callback)

    def is_running(self) -> bool:
        """Never: the test's thread owns it (what debug mode's checks ask)."""
        return False

    def call_exception_handler(self, context: Mapping[str, Any]) -> None:
        self.errors.append(context)

    def run_one(self) -> None:
        self.soon.pop(0)()


class FakeSelector(selectors.BaseSelector):
    """A selector without a descriptor of its own (as select(2)'s): ``select``
    records its timeout, moves the clock by ``sleep_ns`` unless told not to
    block, and returns ``ready``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.keys: dict[int, selectors.SelectorKey] = {}
        self.timeouts: list[float | None] = []
        self.ready: list[tuple[selectors.SelectorKey, int]] = []
        self.sleep_ns = 0
        #: called by each select() before it answers (work arriving meanwhile)
        self.during_select: Callable[[], None] = lambda: None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj, events, data)
        self.keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self.keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        if timeout is None or timeout > 0:
            self.clock.now += self.sleep_ns
        self.during_select()
        return list(self.ready)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self.keys


class FakeEpollSelector(FakeSelector):
    """A selector with a descriptor, readable when I/O is ready (as epoll's)."""

    def fileno(self) -> int:
        return SELECTOR_FD


START = 1_000_000


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def selector_poller(
    clock: Clock, *, poll_ns: int = 0, selector: type[FakeSelector] = FakeEpollSelector
) -> tuple[SelectorPoller, StubContext, FakeSelector]:
    context = StubContext(clock, poll_ns=poll_ns)
    inner = selector(clock)
    inner.register(WAKE_FD, selectors.EVENT_READ, "the inbox's reader")
    poller = SelectorPoller(inner, context)  # type: ignore[arg-type]
    return poller, context, inner


# -- SelectorPoller ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(LOOP_FACTORIES))
def test_attach_wraps_the_stdlib_selector_loop_only(kind: str) -> None:
    loop = LOOP_FACTORIES[kind]()
    try:
        context = SimpleNamespace(loop=loop)
        poller = SelectorPoller.attach(loop, context)  # type: ignore[arg-type]
        if kind == "asyncio":
            assert isinstance(poller, SelectorPoller)
            assert loop._selector is poller  # type: ignore[attr-defined]
        else:
            assert poller is None
    finally:
        loop.close()


def test_detach_gives_the_loop_its_own_selector_back() -> None:
    loop = asyncio.SelectorEventLoop()
    inner = loop._selector  # type: ignore[attr-defined]
    try:
        poller = SelectorPoller.attach(loop, SimpleNamespace(loop=loop))  # type: ignore[arg-type]
        assert poller is not None
        poller.detach()
        assert loop._selector is inner  # type: ignore[attr-defined]
        poller.detach()  # a selector that is not the poller stays
        assert loop._selector is inner  # type: ignore[attr-defined]
    finally:
        loop.close()
    poller.detach()  # a closed loop has no selector to give back
    assert loop._selector is None  # type: ignore[attr-defined]


def test_attach_leaves_a_loop_that_is_not_a_selector_loop_alone() -> None:
    """Having a selector is not enough: the loop must be the stdlib's selector
    loop, the one whose use of it the wrapper knows."""
    selector = selectors.DefaultSelector()
    try:
        loop = SimpleNamespace(_selector=selector)
        context = SimpleNamespace(loop=loop)
        assert SelectorPoller.attach(loop, context) is None  # type: ignore[arg-type]
        assert loop._selector is selector
    finally:
        selector.close()


def test_attach_leaves_a_selector_loop_without_a_selector_alone() -> None:
    loop = asyncio.SelectorEventLoop()
    inner = loop._selector  # type: ignore[attr-defined]
    try:
        loop._selector = object()  # type: ignore[attr-defined]
        context = SimpleNamespace(loop=loop)
        assert SelectorPoller.attach(loop, context) is None  # type: ignore[arg-type]
    finally:
        loop._selector = inner  # type: ignore[attr-defined]
        loop.close()


@pytest.mark.parametrize(("selector", "fd"), [(FakeEpollSelector, SELECTOR_FD), (FakeSelector, -1)])
def test_the_spin_watches_the_selectors_own_descriptor_where_it_has_one(
    clock: Clock, selector: type[FakeSelector], fd: int
) -> None:
    poller, context, _ = selector_poller(clock, poll_ns=5000, selector=selector)
    context.spins = [(False, 5000)]
    poller.select(None)
    assert context.calls[1] == ("spin", START + 5000, fd)


@pytest.mark.parametrize("timeout", [None, 1.0])
def test_queued_work_is_served_then_select_looks_without_blocking(
    clock: Clock, timeout: float | None
) -> None:
    """With work queued the loop must not block, nor spin: the work is served
    at once (it wrote no wake-up for the channel's reader), then one look at I/O."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    context.pending = True
    assert poller.select(timeout) == []
    assert inner.timeouts == [0]
    assert context.calls == [("serve_inbox",)]


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_queued_work_with_callbacks_queued_is_reported_for_the_channels_reader(
    clock: Clock, timeout: float
) -> None:
    """A timeout <= 0: the loop has callbacks queued, which must run before
    the work (first in, first out), so it is not served here: the wake-up
    channel is reported readable, and its reader runs the work in the batch."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    context.pending = True
    assert poller.select(timeout) == [(inner.keys[WAKE_FD], selectors.EVENT_READ)]
    assert inner.timeouts == [0]
    assert context.calls == []


@pytest.mark.parametrize("other_fd", [3, 20])
def test_queued_work_adds_the_wakeup_channel_to_other_events(clock: Clock, other_fd: int) -> None:
    poller, context, inner = selector_poller(clock)
    other = inner.register(other_fd, selectors.EVENT_READ)
    inner.ready = [(other, selectors.EVENT_READ)]
    context.pending = True
    wake = inner.keys[WAKE_FD]
    assert poller.select(0) == [(other, selectors.EVENT_READ), (wake, selectors.EVENT_READ)]
    # ... once: not when the selector reported the channel readable itself.
    inner.ready = [(wake, selectors.EVENT_READ), (other, selectors.EVENT_READ)]
    assert poller.select(0) == inner.ready


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_timeout_of_zero_or_less_only_looks(clock: Clock, timeout: float) -> None:
    """A selector's contract: a timeout <= 0 does not block; nor does it spin."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    assert poller.select(timeout) == []
    assert inner.timeouts == [0]
    assert context.calls == []


def test_without_a_window_select_announces_the_sleep_and_sleeps(clock: Clock) -> None:
    poller, context, inner = selector_poller(clock)
    inner.sleep_ns = 7_000_000
    assert poller.select(None) == []
    assert inner.timeouts == [None]
    assert context.calls == [("prepare_to_block",), ("woke", 7_000_000)]


def test_the_sleep_is_shortened_by_the_time_already_spent(clock: Clock) -> None:
    """select(2.0) after a 0.5 s spin sleeps for 1.5 s: timers are never delayed."""
    poller, context, inner = selector_poller(clock, poll_ns=10**10)
    context.spins = [(False, 500_000_000)]
    inner.sleep_ns = 250_000_000
    poller.select(2.0)
    assert inner.timeouts == [0, 1.5]  # the look before the phase, the sleep
    assert context.calls == [
        ("begin_polling",),
        ("spin", START + 2_000_000_000, SELECTOR_FD),
        ("end_polling", START, False),
        ("prepare_to_block",),
        ("woke", 750_000_000),
    ]


@pytest.mark.parametrize(("spun_ns", "timeout"), [(3_000_000_000, 0.0), (1_000_000_000, 0.0)])
def test_a_sleep_whose_time_was_all_spent_spinning_only_looks(
    clock: Clock, spun_ns: int, timeout: float
) -> None:
    """The clock may pass the timer's deadline while spinning (the last step
    overruns it): the sleep is then a look, never a negative timeout."""
    poller, context, inner = selector_poller(clock, poll_ns=10**10)
    context.spins = [(False, spun_ns)]
    poller.select(1.0)
    assert inner.timeouts == [0, timeout]


def test_the_spin_is_bounded_by_the_window(clock: Clock) -> None:
    poller, context, _ = selector_poller(clock, poll_ns=5000)
    context.spins = [(False, 5000)]
    poller.select(1.0)
    assert context.calls[:3] == [
        ("begin_polling",),
        ("spin", START + 5000, SELECTOR_FD),
        ("end_polling", START, False),
    ]


@pytest.mark.parametrize(("timeout", "limit_ns"), [(1.0, 1_000_000_000), (1e-6, 1000)])
def test_the_spin_is_bounded_by_the_next_timer(clock: Clock, timeout: float, limit_ns: int) -> None:
    poller, context, _ = selector_poller(clock, poll_ns=10**10)
    context.spins = [(False, limit_ns)]
    poller.select(timeout)
    assert context.calls[1] == ("spin", START + limit_ns, SELECTOR_FD)


def test_a_spin_that_sees_io_returns_the_events_without_sleeping(clock: Clock) -> None:
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    other = inner.register(3, selectors.EVENT_READ)
    context.spins = [(True, 2000)]
    context.caught = True
    spin = context.spin

    def io_arrives(deadline_ns: int, fd: int) -> bool:
        inner.ready = [(other, selectors.EVENT_READ)]
        return spin(deadline_ns, fd)

    context.spin = io_arrives  # type: ignore[method-assign]
    assert poller.select(None) == [(other, selectors.EVENT_READ)]
    assert inner.timeouts == [0, 0]
    assert context.calls == [
        ("begin_polling",),
        ("spin", START + 5000, SELECTOR_FD),
        ("end_polling", START, True),
    ]


def test_io_ready_at_once_is_answered_by_one_look_without_a_phase(clock: Clock) -> None:
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    other = inner.register(3, selectors.EVENT_READ)
    inner.ready = [(other, selectors.EVENT_READ)]
    assert poller.select(None) == [(other, selectors.EVENT_READ)]
    assert inner.timeouts == [0]
    assert context.calls == []


def test_a_spin_that_catches_work_serves_it_then_looks_once(clock: Clock) -> None:
    """The look for I/O comes after the work is served, and only then."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    context.spins = [(True, 2000)]
    context.caught = True
    spin = context.spin

    def work_arrives(deadline_ns: int, fd: int) -> bool:
        context.pending = True
        return spin(deadline_ns, fd)

    context.spin = work_arrives  # type: ignore[method-assign]
    assert poller.select(None) == []
    assert inner.timeouts == [0, 0]  # the look before the phase, the look after serving
    assert context.calls == [
        ("begin_polling",),
        ("spin", START + 5000, SELECTOR_FD),
        ("end_polling", START, False),
        ("serve_inbox",),
    ]


def test_a_spin_that_ends_with_nothing_goes_on_to_sleep(clock: Clock) -> None:
    """A spin that ran out of time does not look at I/O: it goes to sleep in
    the selector, which looks anyway."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    context.spins = [(False, 5000)]
    inner.sleep_ns = 1_000_000
    poller.select(None)
    assert inner.timeouts == [0, None]
    assert context.calls[2:] == [
        ("end_polling", START, False),
        ("prepare_to_block",),
        ("woke", 1_005_000),
    ]


def test_work_slipped_in_before_the_sleep_was_announced_is_served(clock: Clock) -> None:
    poller, context, inner = selector_poller(clock)
    context.may_block = False

    def prepare_to_block() -> bool:
        context.calls.append(("prepare_to_block",))
        context.pending = True
        return False

    context.prepare_to_block = prepare_to_block  # type: ignore[method-assign]
    assert poller.select(None) == []
    assert inner.timeouts == [0]
    # Served, and no wake-up to account for.
    assert context.calls == [("prepare_to_block",), ("serve_inbox",)]


def test_the_events_after_serving_are_looked_for_after_it(clock: Clock) -> None:
    """Work may close a descriptor and register its number again: events
    looked for before it ran would send the old reader's event to the new one."""
    poller, context, inner = selector_poller(clock)
    inner.ready = [(inner.register(3, selectors.EVENT_READ, "old reader"), selectors.EVENT_READ)]
    context.pending = True

    def reregister() -> None:
        inner.unregister(3)
        new = inner.register(3, selectors.EVENT_READ, "new reader")
        inner.ready = [(new, selectors.EVENT_READ)]

    context.served = reregister  # type: ignore[method-assign]
    [(key, _)] = poller.select(None)
    assert key.data == "new reader"


def test_work_arriving_as_the_look_before_a_phase_sees_io_is_served_first(
    clock: Clock,
) -> None:
    """The look before a polling phase finds I/O ready, and work was queued
    meanwhile (without a wake-up): served, then looked for again."""
    poller, context, inner = selector_poller(clock, poll_ns=5000)
    other = inner.register(3, selectors.EVENT_READ)
    inner.ready = [(other, selectors.EVENT_READ)]
    inner.during_select = lambda: setattr(context, "pending", True)
    assert poller.select(None) == [(other, selectors.EVENT_READ)]
    assert context.calls == [("serve_inbox",)]
    assert inner.timeouts == [0, 0]


def test_without_queued_work_the_events_are_the_selectors(clock: Clock) -> None:
    poller, _, inner = selector_poller(clock)
    other = inner.register(3, selectors.EVENT_READ)
    inner.ready = [(other, selectors.EVENT_READ)]
    assert poller.select(0) == [(other, selectors.EVENT_READ)]


# -- CallbackPoller ------------------------------------------------------------------

#: The callback poller's implementations: the reference and the native core's.
POLLER_KINDS = ["python", *(["native"] if _inbox.native_core is not None else [])]

#: A callback poller on a stub context of the clock and the window given, and
#: that context; the spin watches *fd*.
MakePoller = Callable[..., tuple[CallbackPoller, StubContext]]


@pytest.fixture(params=POLLER_KINDS)
def callback_poller(request: pytest.FixtureRequest) -> MakePoller:
    """Callback pollers of the implementation the test runs on."""

    def make(clock: Clock, *, poll_ns: int = 0, fd: int = -1) -> tuple[CallbackPoller, StubContext]:
        context = StubContext(clock, poll_ns=poll_ns)
        if request.param == "python":
            return CallbackPoller(context, fd), context  # type: ignore[arg-type]
        assert _inbox.native_core is not None
        return cast(CallbackPoller, _inbox.native_core.CallbackPoller(context, fd)), context

    return make


def test_the_native_poller_steps_as_far_as_the_reference() -> None:
    core = _inbox.native_core
    if core is None:
        pytest.skip("the native core is not built")
    assert (core.STEP_NS, core.MAX_BACKOFF) == (
        _callback_poller.STEP_NS,
        _callback_poller.MAX_BACKOFF,
    )


def test_without_the_core_the_callback_poller_watches_the_inbox_alone(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inbox, "native_core", None)
    context = StubContext(clock, poll_ns=5000)
    poller = new_callback_poller(context)  # type: ignore[arg-type]
    assert type(poller) is CallbackPoller
    context.spins = [(True, 0)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    assert context.calls[1] == ("spin", START + 5000, -1)


def test_the_spin_watches_the_descriptor_the_poller_was_given(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock, poll_ns=5000, fd=7)
    context.spins = [(True, 0)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    assert context.calls[1] == ("spin", START + 5000, 7)


def test_without_a_window_the_loop_announces_its_sleep_and_measures_it(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock)
    poller.after_work()
    assert context.calls == [("prepare_to_block",)]
    assert context.loop.soon == []
    clock.now += 3_000_000  # the loop sleeps, and is woken
    poller.after_work()
    assert context.calls[1] == ("adjust", 3_000_000)
    # The block was accounted once: the next pass measures the next sleep.
    clock.now += 1_000_000
    poller.after_work()
    assert context.calls[2:] == [
        ("prepare_to_block",),
        ("adjust", 1_000_000),
        ("prepare_to_block",),
    ]


def test_work_slipped_in_before_the_sleep_was_announced_is_served_next(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock)
    context.may_block = False
    poller.after_work()
    assert context.loop.soon == [context.serve_inbox]
    clock.now += 5000
    poller.after_work()  # not a wake-up from a sleep: nothing to measure
    assert ("adjust", 5000) not in context.calls


def test_a_sleep_is_measured_once_though_the_loop_stays_awake_after_it(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock)
    poller.after_work()  # the loop sleeps
    clock.now += 3_000_000
    context.pending = True
    poller.after_work()  # woken, with work still queued: no sleep
    clock.now += 5000
    poller.after_work()  # not a wake-up from a sleep: nothing to measure
    assert [call for call in context.calls if call[0] == "adjust"] == [("adjust", 3_000_000)]


def test_work_still_queued_is_served_after_the_other_callbacks(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock, poll_ns=5000)
    context.pending = True
    poller.after_work()
    assert context.loop.soon == [context.serve_inbox]
    assert context.calls == []


def test_a_closing_loop_neither_spins_nor_sleeps(clock: Clock, callback_poller: MakePoller) -> None:
    poller, context = callback_poller(clock, poll_ns=5000)
    context.closing = True
    context.pending = True
    poller.after_work()
    assert (context.loop.soon, context.calls) == ([], [])


def test_the_spin_runs_in_steps_until_the_window_closes(
    clock: Clock, callback_poller: MakePoller
) -> None:
    """Each step spins for at most 50 us (a timer due meanwhile runs this
    late at most), then gives the loop back; the last step ends at the
    window's end exactly, and the loop then announces its sleep, which is
    measured from the start of the spin."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(False, 50_000), (False, 50_000), (False, 20_000)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    assert context.calls == [("begin_polling",)]
    for _ in range(3):
        context.loop.run_one()
    assert context.loop.soon == []
    assert context.calls[1:] == [
        ("spin", START + 50_000, -1),
        ("spin", START + 100_000, -1),
        ("spin", START + 120_000, -1),
        ("end_polling", START, False),
        ("prepare_to_block",),
    ]
    clock.now += 1_000_000
    poller.after_work()
    assert context.calls[-2] == ("adjust", 1_120_000)


def test_a_step_that_overruns_ends_the_spin(clock: Clock, callback_poller: MakePoller) -> None:
    """A step whose clock reading comes after the window's end still ends at
    the window's end: no spin is ever longer than its window."""
    poller, context = callback_poller(clock, poll_ns=60_000)
    context.spins = [(False, 59_000), (False, 0)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    clock.now += 5000  # the loop ran other callbacks between the steps
    context.loop.run_one()
    assert context.calls[1:3] == [("spin", START + 50_000, -1), ("spin", START + 60_000, -1)]
    assert context.loop.soon == []


def test_a_spin_that_catches_work_serves_it_at_once(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(False, 50_000), (True, 10_000)]
    context.caught = True
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    context.loop.run_one()
    assert context.loop.soon == []
    assert context.calls[3:] == [("end_polling", START, False), ("serve_inbox",)]


def test_a_step_that_sees_only_io_gives_the_loop_back_to_serve_it(
    clock: Clock, callback_poller: MakePoller
) -> None:
    """The spin saw I/O but no work: the window closes without a hit and the
    loop announces its sleep, which its I/O ends at once."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(True, 1000)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    assert context.loop.soon == []
    assert context.calls[2:] == [("end_polling", START, False), ("prepare_to_block",)]


def test_work_served_during_a_spin_leaves_the_spin_under_way(
    clock: Clock, callback_poller: MakePoller
) -> None:
    """The inbox's reader may run between two steps: the spin under way
    goes on (one spin at a time), and notices the work served."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(False, 50_000), (False, 50_000), (False, 20_000)]
    poller.after_work()
    context.loop.run_one()  # the first step spins nothing: it queues the spin
    context.loop.run_one()
    poller.after_work()  # the reader ran between the steps
    assert context.calls == [("begin_polling",), ("spin", START + 50_000, -1)]
    assert len(context.loop.soon) == 1
    context.loop.run_one()
    context.loop.run_one()
    # The spin ended, so the next pass starts a new one.
    poller.after_work()
    assert context.calls[-1] == ("begin_polling",)


def test_the_first_step_spins_nothing_and_queues_the_spin_behind_the_callbacks(
    clock: Clock,
    callback_poller: MakePoller,
) -> None:
    """A task's step queues its done callbacks (which deliver its result):
    the spin waits behind them instead of making them wait a spin step."""
    poller, context = callback_poller(clock, poll_ns=5000)
    context.spins = [(True, 0)]
    poller.after_work()
    queued_meanwhile: list[str] = []
    context.loop.call_soon(lambda: queued_meanwhile.append("done callback"))
    context.loop.run_one()  # the first step
    assert context.calls == [("begin_polling",)]
    context.loop.run_one()  # what was queued before the spin
    assert queued_meanwhile == ["done callback"]
    context.loop.run_one()
    assert context.calls[1] == ("spin", START + 5000, -1)


@pytest.mark.parametrize("steps_run", [0, 1])
def test_a_detached_poller_leaves_its_queued_steps_nothing_to_do(
    clock: Clock, callback_poller: MakePoller, steps_run: int
) -> None:
    """A main-loop's context closes while its loop goes on: the step still
    queued (the first, or a spin step) finds the spin gone and returns."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(False, 50_000)]
    poller.after_work()
    for _ in range(steps_run):
        context.loop.run_one()
    poller.detach()
    context.loop.run_one()
    assert context.loop.soon == []
    assert context.calls == [("begin_polling",)]


def shared_phase(poller: CallbackPoller, context: StubContext, *, caught: bool) -> None:
    """One polling phase whose only step finds its CPU shared."""
    context.spins = [(caught, 1000)]
    context.caught = caught
    context.spins_share = True
    poller.after_work()
    context.loop.run_one()  # the first step
    context.loop.run_one()  # the spin
    context.spins_share = context.cpu_shared = False  # begin_polling() clears it


def phases_skipped(poller: CallbackPoller, context: StubContext) -> int:
    """How many passes in a row go to sleep without a polling phase."""
    skipped = 0
    while True:
        context.calls.clear()
        poller.after_work()
        if context.calls[-1] == ("begin_polling",):
            return skipped
        assert context.calls[-1] == ("prepare_to_block",)
        skipped += 1


@pytest.mark.parametrize("caught", [True, False])
def test_after_phases_that_found_their_cpu_shared_the_next_are_skipped_doubling(
    clock: Clock, callback_poller: MakePoller, caught: bool
) -> None:
    """A phase costs two loop iterations before its first look, which a CPU
    shared with the producers does not earn back: 1, 2, 4... phases are
    skipped (the loop sleeps at once), up to MAX_BACKOFF."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    skipped = []
    for _ in range(8):
        shared_phase(poller, context, caught=caught)
        skipped.append(phases_skipped(poller, context))
        poller.detach()  # the phase that phases_skipped() began, dropped
        context.loop.soon.clear()
    assert skipped == [1, 2, 4, 8, 16, 32, 64, 64]
    assert _callback_poller.MAX_BACKOFF == 64


def test_a_phase_that_did_not_find_its_cpu_shared_ends_the_backoff(
    clock: Clock, callback_poller: MakePoller
) -> None:
    poller, context = callback_poller(clock, poll_ns=120_000)
    shared_phase(poller, context, caught=True)
    assert phases_skipped(poller, context) == 1
    context.spins = [(True, 1000)]  # the phase phases_skipped() began, not shared
    context.loop.run_one()
    context.loop.run_one()
    shared_phase(poller, context, caught=True)
    assert phases_skipped(poller, context) == 1  # from 1 again, not 2


def test_a_step_that_finds_its_cpu_shared_ends_the_spin(
    clock: Clock, callback_poller: MakePoller
) -> None:
    """The guard: threads sharing the spin's CPU take turns with it, and
    cannot hand work over while it spins; the window closes without a hit."""
    poller, context = callback_poller(clock, poll_ns=120_000)
    context.spins = [(False, 1000)]
    context.spins_share = True
    poller.after_work()
    context.loop.run_one()
    context.loop.run_one()
    assert context.loop.soon == []
    assert context.calls[1:] == [
        ("spin", START + 50_000, -1),
        ("end_polling", START, False),
        ("prepare_to_block",),
    ]


# -- PollHandlerSet ------------------------------------------------------------------


class Recorder:
    """A poll handler's four methods, each recording its call in a shared log."""

    def __init__(self, name: str, log: list[str], *, ready: bool = False) -> None:
        self.name = name
        self.log = log
        self.is_ready = ready
        self.on_ready: Callable[[], object] = lambda: None
        self.on_begin: Callable[[], object] = lambda: None
        self.on_end: Callable[[], object] = lambda: None

    def poll(self) -> bool:
        self.log.append(f"{self.name}.poll")
        return self.is_ready

    def ready(self) -> None:
        self.log.append(f"{self.name}.ready")
        self.on_ready()

    def begin(self) -> None:
        self.log.append(f"{self.name}.begin")
        self.on_begin()

    def end(self) -> None:
        self.log.append(f"{self.name}.end")
        self.on_end()


class Handlers:
    """A PollHandlerSet on a stub loop, with recorders to register."""

    def __init__(self) -> None:
        self.loop = StubLoop()
        self.set = PollHandlerSet(self.loop)  # type: ignore[arg-type]
        self.log: list[str] = []

    def add(
        self, name: str, *, ready: bool = False, brackets: bool = True
    ) -> tuple[Recorder, PollHandler]:
        r = Recorder(name, self.log, ready=ready)
        handler = self.set.add(
            r.poll, r.ready, r.begin if brackets else None, r.end if brackets else None
        )
        return r, handler

    def take_log(self) -> list[str]:
        log, self.log[:] = list(self.log), []
        return log


@pytest.fixture
def handlers() -> Iterator[Handlers]:
    h = Handlers()
    yield h
    assert h.loop.errors == []


def test_removing_a_handler_keeps_the_others(handlers: Handlers) -> None:
    _, a = handlers.add("a")
    handlers.add("b")
    _, c = handlers.add("c")
    a.remove()
    c.remove()
    c.remove()  # a second removal is harmless
    assert handlers.set.registered()
    handlers.set.poll()
    assert handlers.take_log() == ["b.poll"]
    handlers.set.close()
    assert not handlers.set.registered()


def test_every_handler_is_polled_and_the_ready_ones_run_once(handlers: Handlers) -> None:
    handlers.add("a", ready=True)
    handlers.add("b")
    handlers.add("c", ready=True)
    assert not handlers.set.ready_handlers
    assert handlers.set.poll()
    assert handlers.set.ready_handlers
    # A handler found ready is not polled again until it has run.
    assert handlers.set.poll()
    handlers.set.run_ready()
    assert not handlers.set.ready_handlers
    handlers.set.run_ready()
    assert handlers.take_log() == ["a.poll", "b.poll", "c.poll", "b.poll", "a.ready", "c.ready"]
    # ... and after it ran, it is polled again.
    assert handlers.set.poll()
    assert handlers.take_log() == ["a.poll", "b.poll", "c.poll"]


def test_no_handler_ready_no_work(handlers: Handlers) -> None:
    handlers.add("a")
    assert not handlers.set.poll()
    handlers.set.run_ready()
    assert handlers.take_log() == ["a.poll"]


def test_a_handler_removed_after_it_was_found_ready_is_not_run(handlers: Handlers) -> None:
    _, a = handlers.add("a", ready=True)
    handlers.add("b", ready=True)
    handlers.set.poll()
    a.remove()
    handlers.set.run_ready()
    assert handlers.take_log() == ["a.poll", "b.poll", "b.ready"]


def test_a_handler_is_never_reentered_from_its_ready(handlers: Handlers) -> None:
    """ready() may run what polls and runs the handlers (the inbox, say):
    the handler running is neither polled nor run again meanwhile, the
    others are."""
    a, _ = handlers.add("a", ready=True)
    handlers.add("b", ready=True)

    def nested() -> None:
        a.on_ready = lambda: None
        handlers.set.poll()
        handlers.set.run_ready()

    a.on_ready = nested
    handlers.set.poll()
    handlers.set.run_ready()
    assert handlers.take_log() == [
        "a.poll", "b.poll", "a.ready", "b.poll", "b.ready", "b.ready",
    ]  # fmt: skip


def test_a_phase_brackets_every_handler_and_rechecks(handlers: Handlers) -> None:
    handlers.add("a")
    handlers.add("b", brackets=False)
    handlers.add("c")
    handlers.set.begin_phase()
    handlers.set.end_phase()
    assert handlers.take_log() == ["a.begin", "c.begin", "a.end", "c.end", "a.poll", "b.poll",
                                   "c.poll"]  # fmt: skip
    handlers.set.end_phase()  # no phase open: nothing to end
    handlers.set.end_phase(recheck=False)
    assert handlers.take_log() == ["a.poll", "b.poll", "c.poll"]


def test_a_handler_added_mid_phase_is_bracketed_from_the_next_phase(handlers: Handlers) -> None:
    a, _ = handlers.add("a")
    a.on_begin = lambda: handlers.add("late")
    handlers.add("b")
    handlers.set.begin_phase()
    handlers.set.end_phase(recheck=False)
    assert handlers.take_log() == ["a.begin", "b.begin", "a.end", "b.end"]


def test_a_handler_removed_by_an_earlier_begin_gets_no_brackets(handlers: Handlers) -> None:
    a, _ = handlers.add("a")
    _, b = handlers.add("b")
    handlers.add("c")
    a.on_begin = b.remove
    handlers.set.begin_phase()
    handlers.set.end_phase(recheck=False)
    assert handlers.take_log() == ["a.begin", "c.begin", "a.end", "c.end"]


def test_a_handler_removed_by_an_earlier_end_gets_no_end(handlers: Handlers) -> None:
    a, _ = handlers.add("a")
    _, b = handlers.add("b")
    handlers.add("c")
    a.on_end = b.remove
    handlers.set.begin_phase()
    handlers.set.end_phase(recheck=False)
    assert handlers.take_log() == ["a.begin", "b.begin", "c.begin", "a.end", "c.end"]


def test_closing_ends_the_phase_without_polling(handlers: Handlers) -> None:
    handlers.add("a", ready=True)
    handlers.set.poll()
    handlers.add("b", ready=True)
    handlers.set.begin_phase()
    handlers.set.close()
    handlers.set.run_ready()
    assert handlers.take_log() == ["a.poll", "a.begin", "b.begin", "a.end", "b.end"]
    assert not handlers.set.ready_handlers


@pytest.mark.parametrize("method", ["poll", "ready", "begin", "end"])
def test_a_raising_handler_method_is_reported_and_the_others_go_on(method: str) -> None:
    """A handler runs inside the loop's select() or spin: what it raises goes
    to the loop's exception handler, never up through the loop."""
    h = Handlers()
    a = Recorder("a", h.log, ready=True)

    def boom() -> bool:
        h.log.append(f"a.{method}")
        raise ValueError("boom")

    setattr(a, method, boom)
    h.set.add(a.poll, a.ready, a.begin, a.end)
    h.add("b", ready=True)
    h.set.begin_phase()
    h.set.end_phase(recheck=False)
    found = h.set.poll()
    h.set.run_ready()
    assert found
    assert [e["message"] for e in h.loop.errors] == [f"Exception in poll handler {method}()"]
    assert isinstance(h.loop.errors[0]["exception"], ValueError)
    expected = ["a.begin", "b.begin", "a.end", "b.end", "a.poll", "b.poll", "a.ready", "b.ready"]
    if method == "poll":
        expected.remove("a.ready")  # a poll() that raised found nothing
    assert h.log == expected
