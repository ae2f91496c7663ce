"""Polling on loops without a selector to wrap (uvloop): a self-rescheduling callback.

While a callback is queued the loop cannot sleep (libuv polls with a zero
timeout while an idle handle is active), so re-queueing the spin step with
``call_soon`` *is* the busy-poll; each step yields the CPU with
``sched_yield`` (which releases the GIL) so that producers get in.  Timers
and I/O keep being served between steps, so the window needs no "time to
next timer" bound here.  When the window closes, the poller announces the
sleep and lets the loop sleep.

The loop's own idleness is invisible to a callback, so ``notify_me`` is only
cleared by inbox work: the loop may be woken while it is busy with other
callbacks, which costs a system call, never a lost wake-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._runs_in import LOOP, runs_in
from ._window import yield_cpu

if TYPE_CHECKING:
    from ._context import AioContext

__all__ = ["CallbackPoller"]


class CallbackPoller:
    """The polling window of one loop, as callbacks on that loop."""

    def __init__(self, context: AioContext) -> None:
        self._context = context
        self.loop = context.loop
        self._spinning = False
        self._spin_start = 0
        self._deadline = 0
        # When the loop last announced its sleep, for the window's block_ns.
        self._idle_since: int | None = None

    @runs_in(LOOP)
    def after_work(self) -> None:
        """The inbox was served: more work, a spin, or announce the sleep."""
        context = self._context
        now = context.clock()
        if self._idle_since is not None:
            context.woke(now - self._idle_since)
            self._idle_since = None
        if context.closing:
            return
        if context.work_pending():
            # Still behind (aio-max-batch): come back after the other callbacks.
            self.loop.call_soon(context.serve_inbox)
            return
        if self._spinning:
            return  # the spin under way notices the work served
        poll_ns = context.poll_ns
        if poll_ns:
            self._spinning = True
            self._spin_start = now
            self._deadline = now + poll_ns
            context.begin_polling()
            self.loop.call_soon(self._spin)
        else:
            self._go_idle(now)

    @runs_in(LOOP)
    def _spin(self) -> None:
        context = self._context
        if not context.poll_step() and context.clock() < self._deadline:
            yield_cpu()
            self.loop.call_soon(self._spin)
            return
        self._spinning = False
        if context.end_polling(self._spin_start):
            context.serve_inbox()
        else:
            self._go_idle(self._spin_start)

    def _go_idle(self, since: int) -> None:
        if self._context.prepare_to_block():
            self._idle_since = since
        else:
            self.loop.call_soon(self._context.serve_inbox)
