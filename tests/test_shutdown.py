"""The stop's watch: when a held-up stop warns, and what it says, on a clock that stands still.

``_StopWatch`` reads the loop's clock and waits with ``asyncio.wait``; here
the loop's ``time()`` is frozen, so a wait's timeout fires only if it is
already due when the wait begins (a timer in the future never comes), and
a watched future ends only when the test ends it.  Whether the stop warns
then depends on the stop's age alone, exactly, with no timing.  The stdlib
loop stands in for both kinds: the watch uses nothing of the loop but its
clock and ``asyncio.wait``, and uvloop's clock cannot be frozen from Python.
How a real stop is held up and named is tests/test_iothread.py's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest

from iothreads._shutdown import STOP_WARNING_DELAY, _StopWatch

#: The frozen loop time.
NOW = 1000.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    loop.time = lambda: NOW  # type: ignore[method-assign]
    yield loop
    loop.close()


def watch_once(
    loop: asyncio.AbstractEventLoop,
    age: float,
    what: Callable[[], str | None] = lambda: "the test's future",
    *,
    watch: _StopWatch | None = None,
) -> tuple[_StopWatch, bool]:
    """Wait on a future with a stop *age* s old; return the watch and whether
    the wait was still pending after the loop had run everything it could."""

    async def main() -> tuple[_StopWatch, bool]:
        nonlocal watch
        if watch is None:
            watch = _StopWatch("io0", loop)
            watch._start = NOW - age
        waited = loop.create_future()
        waiting = asyncio.ensure_future(watch.wait(waited, what))
        for _ in range(10):  # every callback due now runs; a timer due later never does
            await asyncio.sleep(0)
        pending = not waiting.done()
        waited.set_result(None)
        await waiting
        return watch, pending

    return loop.run_until_complete(main())


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="iothreads")


def test_a_stop_younger_than_the_delay_waits_without_a_word(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    _, pending = watch_once(loop, STOP_WARNING_DELAY - 0.1)
    assert pending  # the wait goes on until the future ends
    assert warnings(caplog) == []


@pytest.mark.parametrize("age", [STOP_WARNING_DELAY, STOP_WARNING_DELAY + 0.1, 100.0])
def test_a_stop_as_old_as_the_delay_warns_and_goes_on_waiting(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture, age: float
) -> None:
    _, pending = watch_once(loop, age)
    assert pending  # warned, and still waiting
    assert warnings(caplog) == [
        f"IOThread 'io0' has been stopping for {age:.1f} s; it waits for the test's future"
    ]


def test_the_delay_is_five_seconds() -> None:
    """A stop held up for 5 s warns (docs/design.md, "Threading rules");
    the tests above measure against the constant."""
    assert STOP_WARNING_DELAY == 5.0


def test_a_stop_warns_once(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    watch, _ = watch_once(loop, 10.0)
    watch_once(loop, 10.0, watch=watch)
    assert len(warnings(caplog)) == 1


def test_nothing_left_to_name_is_no_warning_yet(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    """What was waited for may finish just as the delay comes: no warning,
    and a later wait of the same stop still warns."""
    watch, _ = watch_once(loop, 10.0, lambda: None)
    assert warnings(caplog) == []
    watch_once(loop, 10.0, watch=watch)
    assert len(warnings(caplog)) == 1


def test_a_wait_that_ends_in_time_warns_not(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        watch = _StopWatch("io0", loop)
        waited = loop.create_future()
        waited.set_result(None)
        await watch.wait(waited, lambda: "nothing")

    loop.run_until_complete(main())
    assert warnings(caplog) == []
