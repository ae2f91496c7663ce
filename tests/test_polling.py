"""The polling window walks QEMU's exact sequences (docs/design.md, "The polling window"),
in both implementations: ``PollWindow`` and the native core's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from iothreads._aio import _inbox, _window
from iothreads._aio._window import PollWindow

WINDOWS: dict[str, Callable[..., PollWindow]] = {"python": PollWindow}
if _inbox.native_core is not None:
    WINDOWS["native"] = _inbox.native_core.PollWindow


@pytest.fixture(params=list(WINDOWS))
def new_window(request: pytest.FixtureRequest) -> Callable[..., PollWindow]:
    """A window of the implementation the test runs on."""
    return WINDOWS[request.param]


def walk(window: PollWindow, blocks: list[int]) -> list[int]:
    return [window.adjust(b) for b in blocks]


def test_default_growth_caps_at_max_and_resets_on_shrink(
    new_window: Callable[..., PollWindow],
) -> None:
    w = new_window()
    # Each event arrives just after the window closed, but before poll-max-ns.
    seq = [w.adjust(w.poll_ns + 1) for _ in range(5)]
    assert seq == [4000, 8000, 16000, 32000, 32768]
    assert w.adjust(32768) == 32768  # caught inside the full window
    # A long sleep drops the window to 0 when poll-shrink is 0.
    assert w.adjust(32769) == 0


def test_no_change_inside_the_window(new_window: Callable[..., PollWindow]) -> None:
    w = new_window(poll_ns=16000)
    assert walk(w, [0, 1, 15999, 16000]) == [16000] * 4


def test_no_growth_when_block_reaches_max(new_window: Callable[..., PollWindow]) -> None:
    # block_ns == poll_max_ns is neither "> max" (shrink) nor "< max" (grow).
    w = new_window(poll_ns=8000)
    assert w.adjust(32768) == 8000


def test_custom_grow_and_shrink(new_window: Callable[..., PollWindow]) -> None:
    w = new_window(poll_max_ns=100_000, poll_grow=3, poll_shrink=4)
    assert walk(w, [5000, 5000, 13000, 37000, 99_999]) == [4000, 12000, 36000, 100_000, 100_000]
    assert walk(w, [200_000, 200_000, 200_000]) == [25000, 6250, 1562]


@pytest.mark.parametrize("block", [0, 1, 5000, 10**9])
def test_max_zero_disables(new_window: Callable[..., PollWindow], block: int) -> None:
    w = new_window(poll_max_ns=0, poll_ns=0)
    assert w.adjust(block) == 0


def test_reset_restarts_from_zero(new_window: Callable[..., PollWindow]) -> None:
    w = new_window(poll_ns=32768)
    w.reset(poll_max_ns=1000, poll_grow=0, poll_shrink=0)
    assert (w.poll_ns, w.poll_max_ns) == (0, 1000)
    assert w.adjust(500) == 1000  # 4000 capped at the new max


def test_the_native_window_starts_growing_where_the_reference_does() -> None:
    core = _inbox.native_core
    if core is None:
        pytest.skip("the native core is not built")
    assert core.POLL_START_NS == _window.POLL_START_NS


def test_the_window_says_what_it_is(new_window: Callable[..., PollWindow]) -> None:
    assert repr(new_window(1000, 3, 4, 500)).endswith(
        "PollWindow(poll_max_ns=1000, poll_grow=3, poll_shrink=4, poll_ns=500)"
    )
