"""The polling window walks QEMU's exact sequences (docs/design.md, "The polling window")."""

from __future__ import annotations

import pytest

from iothreads._aio._window import PollWindow


def walk(window: PollWindow, blocks: list[int]) -> list[int]:
    return [window.adjust(b) for b in blocks]


def test_default_growth_caps_at_max_and_resets_on_shrink() -> None:
    w = PollWindow()
    # Each event arrives just after the window closed, but before poll-max-ns.
    seq = [w.adjust(w.poll_ns + 1) for _ in range(5)]
    assert seq == [4000, 8000, 16000, 32000, 32768]
    assert w.adjust(32768) == 32768  # caught inside the full window
    # A long sleep drops the window to 0 when poll-shrink is 0.
    assert w.adjust(32769) == 0


def test_no_change_inside_the_window() -> None:
    w = PollWindow(poll_ns=16000)
    assert walk(w, [0, 1, 15999, 16000]) == [16000] * 4


def test_no_growth_when_block_reaches_max() -> None:
    # block_ns == poll_max_ns is neither "> max" (shrink) nor "< max" (grow).
    w = PollWindow(poll_ns=8000)
    assert w.adjust(32768) == 8000


def test_custom_grow_and_shrink() -> None:
    w = PollWindow(poll_max_ns=100_000, poll_grow=3, poll_shrink=4)
    assert walk(w, [5000, 5000, 13000, 37000, 99_999]) == [4000, 12000, 36000, 100_000, 100_000]
    assert walk(w, [200_000, 200_000, 200_000]) == [25000, 6250, 1562]


@pytest.mark.parametrize("block", [0, 1, 5000, 10**9])
def test_max_zero_disables(block: int) -> None:
    w = PollWindow(poll_max_ns=0, poll_ns=0)
    assert w.adjust(block) == 0


def test_reset_restarts_from_zero() -> None:
    w = PollWindow(poll_ns=32768)
    w.reset(poll_max_ns=1000, poll_grow=0, poll_shrink=0)
    assert (w.poll_ns, w.poll_max_ns) == (0, 1000)
    assert w.adjust(500) == 1000  # 4000 capped at the new max
