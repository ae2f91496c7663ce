"""The fixtures; the ``pytest11`` entry point names this module."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

import pytest

from .. import _iothread, _objects
from .._pool import _thread_pool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["LOOP_KINDS", "IOThreadFactory"]


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    # The stdlib loop by its class, as IOTHREADS_LOOP=asyncio picks it:
    # asyncio.new_event_loop() answers whatever the event loop policy makes,
    # uvloop's after uvloop.install().
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.SelectorEventLoop
    }
    try:
        import uvloop
    except ImportError:
        pass  # the stdlib loop only: uvloop is optional where it does not install
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


_LOOP_FACTORIES: Final = _loop_factories()

#: The loop kinds installed here, for ``@pytest.mark.parametrize("iothread_loop", LOOP_KINDS)``.
LOOP_KINDS: Final = tuple(_LOOP_FACTORIES)

#: The fixtures' IOThread ids: ``test-io0``, ``test-io1``..., never reused in
#: a process, so a test that failed to clean up cannot make the next one clash.
_ids: Final = itertools.count()


class IOThreadFactory(Protocol):
    """The type of the ``iothread_factory`` fixture."""

    def __call__(self, id: str | None = None, **options: Any) -> _iothread.IOThread:
        """Create and start an IOThread; *options* are those of
        :class:`~iothreads.IOThread` (``loop_factory`` defaults to the kind of
        ``iothread_loop``).

        Raises:
            InvalidParameterValue, InvalidParameterType: what ``IOThread``
                raises for a bad id or option; nothing was started.
        """
        ...


def _open_fds() -> set[int] | None:
    """The process's open file descriptors, or None where the system does
    not list them."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(directory):
            # Listing the directory opens one descriptor, closed again by
            # the time the set is compared.
            return {int(fd) for fd in os.listdir(directory)}
    return None


@pytest.fixture(scope="session", name="_iothreads_warm_up")
def _warm_up() -> None:
    """Open the process-wide descriptors of each loop kind before any leak
    check counts (the first uvloop loop of a process opens some that live
    until exit)."""
    for factory in _LOOP_FACTORIES.values():
        factory().close()


@pytest.fixture(name="iothreads_leak_timeout")
def _leak_timeout() -> float:
    """Seconds the leak check waits for the test's threads to finish."""
    return 10.0


@pytest.fixture(name="_iothreads_leak_check")
def _leak_check(_iothreads_warm_up: None, iothreads_leak_timeout: float) -> Iterator[None]:
    """Fail the teardown of a test that leaves threads or descriptors behind
    (set up before, so torn down after, the fixtures that start things)."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    # Threads that were told to exit may still be unwinding: wait for them,
    # bounded, rather than a fixed time.
    deadline = time.monotonic() + iothreads_leak_timeout
    leaks = []
    threads = set(threading.enumerate()) - threads_before
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if alive := sorted(repr(thread.name) for thread in threads if thread.is_alive()):
        leaks.append(f"the test leaked threads, still running: {', '.join(alive)}")
    fds_after = _open_fds()
    if fds_before is not None and fds_after is not None and fds_after - fds_before:
        leaks.append(f"the test leaked file descriptors: {sorted(fds_after - fds_before)}")
    if leaks:
        pytest.fail("; ".join(leaks), pytrace=False)


@pytest.fixture(name="iothread_loop")
def _iothread_loop() -> str | None:
    """The loop kind of the fixtures' IOThreads: None for the runtime's own
    choice; parametrize it with :data:`LOOP_KINDS` to run on each."""
    return None


@pytest.fixture(name="iothread_factory")
def _iothread_factory(
    _iothreads_leak_check: None, iothread_loop: str | None
) -> Iterator[IOThreadFactory]:
    """Start IOThreads on demand; stop them all after the test."""
    if iothread_loop is None:
        loop_factory = None
    elif iothread_loop in _LOOP_FACTORIES:
        loop_factory = _LOOP_FACTORIES[iothread_loop]
    elif iothread_loop == "uvloop":
        pytest.skip("uvloop is not installed")
    else:
        raise ValueError(
            f"iothread_loop must be one of {[*LOOP_KINDS, None]}, not {iothread_loop!r}"
        )
    started: list[_iothread.IOThread] = []

    def make(id: str | None = None, **options: Any) -> _iothread.IOThread:
        options.setdefault("loop_factory", loop_factory)
        io = _iothread.IOThread(f"test-io{next(_ids)}" if id is None else id, **options)
        io.start()
        started.append(io)
        return io

    try:
        yield make
    finally:
        with contextlib.ExitStack() as stack:
            # Each one is stopped even if stopping another raised.
            for io in started:
                stack.callback(io.stop)
        registered = {info.id for info in _objects.query_iothreads()}
        left = [io.id for io in started if io.id in registered]
        if left:
            pytest.fail(f"IOThreads still under /objects after stop(): {left}", pytrace=False)


@pytest.fixture(name="iothread")
def _iothread_fixture(iothread_factory: IOThreadFactory) -> _iothread.IOThread:
    """A started IOThread, stopped after the test."""
    return iothread_factory()


@pytest.fixture(name="thread_pool")
def _thread_pool_fixture(_iothreads_leak_check: None) -> Iterator[_thread_pool.ThreadPool]:
    """A ThreadPool with default limits, shut down (its workers joined) after the test."""
    pool = _thread_pool.ThreadPool()
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)
