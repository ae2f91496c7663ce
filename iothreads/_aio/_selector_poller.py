"""Polling on the stdlib loop: its selector, wrapped to poll first, then sleep.

``select(timeout)`` is exactly "the loop is about to block for *timeout*", so
the wrapper spins there for up to ``min(poll_ns, timeout)`` (timers are not
delayed, but by the native spin's hand-over wait after work it caught, 50 us
at most: spin.c) -- each spin step checks the inbox, the poll handlers and
I/O readiness (the selector's own descriptor), without the GIL in the
native core, yielding the CPU between looks in Python -- then announces the
sleep and sleeps.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._runs_in import LOOP, runs_in

if TYPE_CHECKING:
    from ._context import AioContext

__all__ = ["SelectorPoller"]

_Events = list[tuple[selectors.SelectorKey, int]]


class SelectorPoller(selectors.BaseSelector):
    """Wraps a stdlib loop's selector: poll first, then sleep, QEMU style."""

    @classmethod
    def attach(cls, loop: asyncio.AbstractEventLoop, context: AioContext) -> SelectorPoller | None:
        """Wrap *loop*'s selector, if it is a stdlib selector loop; else None.

        Called in the loop's thread (between two of its iterations) or before
        the loop runs: the loop reads its selector anew at every iteration,
        and nothing else holds it, so swapping it is safe.
        """
        selector = getattr(loop, "_selector", None)
        if not (
            isinstance(loop, asyncio.SelectorEventLoop)
            and isinstance(selector, selectors.BaseSelector)
        ):
            return None
        poller = cls(selector, context)
        loop._selector = poller  # type: ignore[attr-defined]
        return poller

    def __init__(self, inner: selectors.BaseSelector, context: AioContext) -> None:
        self._inner = inner
        self._context = context
        self.loop: asyncio.AbstractEventLoop = context.loop
        self._wake_key: selectors.SelectorKey | None = None
        # The selector's own descriptor (epoll's, on Linux), readable when I/O
        # is ready: what the spin watches beside the inbox.  -1 where the
        # selector has none (select(2)): the spin watches the inbox alone.
        self._fd: int = inner.fileno() if hasattr(inner, "fileno") else -1

    def after_work(self) -> None:
        """Nothing to do: the loop comes back to select() by itself."""

    @runs_in(LOOP)
    def detach(self) -> None:
        """Give the loop its own selector back (a closed loop has none)."""
        if getattr(self.loop, "_selector", None) is self:
            self.loop._selector = self._inner

    # Registration is the inner selector's business.
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    @runs_in(LOOP)
    def select(self, timeout: float | None = None) -> _Events:
        context = self._context
        if timeout is not None and timeout <= 0:
            # Callbacks are queued already: work found now runs after them,
            # as the channel's reader in the loop's batch, first in first out.
            return self._reporting_work(self._inner.select(0))
        if context.work_pending():
            return self._served()
        start = context.clock()
        poll_ns = context.poll_ns
        if poll_ns:
            # I/O ready already needs no polling phase: one look answers it
            # at the cost of the sleep it replaces.
            events = self._inner.select(0)
            if events:
                return self._with_work(events)
            events = self._spin(start, poll_ns, timeout)
            if context.end_polling(start, io_ready=bool(events)):
                return self._with_work(events)
            if timeout is not None:
                timeout = max(0.0, timeout - (context.clock() - start) / 1e9)
        if not context.prepare_to_block():
            return self._served()
        events = self._inner.select(timeout)
        context.woke(context.clock() - start)
        # No look for work here, which would cost every sleep one: work
        # queued while the loop slept wrote its wake-up (the channel is
        # among the events, and its reader serves the inbox), and work
        # queued from now on, without one, is found by the next select()
        # before it sleeps.
        return events

    def _spin(self, start: int, poll_ns: int, timeout: float | None) -> _Events:
        """Busy-poll for up to min(poll_ns, timeout); return the I/O events
        seen (none when work came: ``_served`` looks after serving it)."""
        context = self._context
        limit = poll_ns if timeout is None else min(poll_ns, int(timeout * 1e9))
        context.begin_polling()
        if context.spin(start + limit, self._fd) and not context.work_pending():
            return self._inner.select(0)
        return []

    def _with_work(self, events: _Events) -> _Events:
        """*events*, or, when work is queued too, the work served and a fresh look."""
        return self._served() if self._context.work_pending() else events

    def _reporting_work(self, events: _Events) -> _Events:
        """*events*, with the wake-up channel among them when work is queued:
        work whose wake-up was suppressed wrote nothing to it."""
        context = self._context
        if not context.work_pending():
            return events
        if self._wake_key is None:
            self._wake_key = self._inner.get_key(context.wakeup_fileno())
        if any(key is self._wake_key for key, _ in events):
            return events
        return [*events, (self._wake_key, selectors.EVENT_READ)]

    def _served(self) -> _Events:
        """Serve the queued work now, then look for I/O without waiting.

        Only where the loop would have slept, so nothing is queued before
        the work.  It wrote no wake-up, so the channel's reader would not
        run it.  Served here, before the loop takes its batch of ready
        callbacks, what that work queues (a task's first step, the one that
        delivers the result of a coroutine that does not wait) joins this
        iteration's batch instead of waiting for the next iteration.  The
        look comes after, so that its events are not stale: the work may
        have closed a descriptor and registered its number again.
        """
        self._context.serve_inbox()
        return self._inner.select(0)
