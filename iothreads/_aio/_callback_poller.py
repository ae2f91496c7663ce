"""Polling on loops without a selector to wrap (uvloop): a self-rescheduling callback.

While a callback is queued the loop cannot sleep (libuv polls with a zero
timeout while an idle handle is active), so re-queueing the spin step with
``call_soon`` *is* the busy-poll.  Each step spins for at most a slice
(``context.spin``: without the GIL in the native core, watching libuv's own
descriptor for I/O where it can be had), then gives the loop back, so
timers and I/O are served between steps and the window needs no "time to
the next timer" bound here.  When the window closes, the poller announces
the sleep and lets the loop sleep.

Two implementations: ``CallbackPoller`` here, the reference and the
fallback, and the native core's, with the same steps in C (``poller.c``):
with the native inbox and window, its way back to sleep then runs no Python
call (docs/design.md, "The wake-up path in Python").  ``new_callback_poller``
chooses, as ``new_inbox`` does.

The loop's own idleness is invisible to a callback, so ``notify_me`` is only
cleared by inbox work: the loop may be woken while it is busy with other
callbacks, which costs a system call, never a lost wake-up.

A phase here costs two loop iterations before its first look, which a phase
on a CPU shared with the producers cannot earn back: their work comes while
the spin yields, as it would while the loop slept.  So after a phase that
found its CPU shared (the guard; caught or not), the next phases are skipped
(the loop sleeps at once), 1, then 2, 4... up to ``MAX_BACKOFF``, until a
phase runs without finding its CPU shared.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from .._runs_in import LOOP, runs_in
from . import _inbox

if TYPE_CHECKING:
    from ._context import AioContext, Poller

__all__ = ["CallbackPoller", "new_callback_poller"]

#: The longest one spin step keeps the loop: a timer due meanwhile runs this
#: late at most (plus, after a step that caught work, the native spin's
#: hand-over wait, 50 us at most: spin.c).  50 us is about one cross-CPU
#: wake-up on the machines measured (docs/design.md, "Measurements").
STEP_NS: Final = 50_000

#: The most polling phases skipped in a row after phases that found their
#: CPU shared: one phase in this many still looks whether it is.
MAX_BACKOFF: Final = 64


class CallbackPoller:
    """The polling window of one loop, as callbacks on that loop."""

    def __init__(self, context: AioContext, fd: int) -> None:
        self._context = context
        self.loop: asyncio.AbstractEventLoop = context.loop
        # The window itself, not the context's methods over it: the inbox's
        # reader has already told the inbox the loop woke, and each Python
        # call costs the wake-up path (docs/design.md, "The wake-up path in Python").
        self._window = context.window
        # (start, deadline) of the spin under way, None when not spinning.
        self._spinning: tuple[int, int] | None = None
        # When the loop last announced its sleep, for the window's block_ns.
        self._idle_since: int | None = None
        # Phases still to skip, and how many the last backoff skipped.
        self._skips = 0
        self._backoff = 0
        #: libuv's own descriptor, readable when I/O is ready, which the
        #: spin watches too; -1: the spin watches the inbox alone.
        self.fd = fd

    @runs_in(LOOP)
    def after_work(self) -> None:
        """The inbox was served: more work, a spin, or announce the sleep."""
        context = self._context
        now = context.clock()
        if self._idle_since is not None:
            self._window.adjust(now - self._idle_since)
            self._idle_since = None
        if context.closing:
            return
        if context.work_pending():
            # Still behind (aio-max-batch): come back after the other callbacks.
            self.loop.call_soon(context.serve_inbox)
            return
        if self._spinning is not None:
            return  # the spin under way notices the work served
        poll_ns = self._window.poll_ns
        if poll_ns and self._skips:
            self._skips -= 1
            self._go_idle(now)
        elif poll_ns:
            self._spinning = (now, now + poll_ns)
            context.begin_polling()
            self.loop.call_soon(self._first_step)
        else:
            self._go_idle(now)

    @runs_in(LOOP)
    def detach(self) -> None:
        """A spin step still queued finds nothing to do."""
        self._spinning = None

    @runs_in(LOOP)
    def _first_step(self) -> None:
        """Spin nothing yet: queue the spin behind what the callbacks queued
        before this one queued in turn (a task's first step; its done
        callbacks, which deliver an exception), which would otherwise wait a
        spin step for nothing."""
        if self._spinning is not None:
            self.loop.call_soon(self._spin)

    @runs_in(LOOP)
    def _spin(self) -> None:
        if self._spinning is None:
            return  # detached meanwhile
        context = self._context
        start, deadline = self._spinning
        step_end = min(deadline, context.clock() + STEP_NS)
        caught = context.spin(step_end, self.fd)
        if not (caught or context.cpu_shared) and step_end < deadline:
            self.loop.call_soon(self._spin)
            return
        self._spinning = None
        if context.cpu_shared:
            self._skips = self._backoff = min(MAX_BACKOFF, max(1, 2 * self._backoff))
        else:
            self._backoff = 0
        if context.end_polling(start):
            context.serve_inbox()
        else:
            self._go_idle(start)

    def _go_idle(self, since: int) -> None:
        if self._context.prepare_to_block():
            self._idle_since = since
        else:
            self.loop.call_soon(self._context.serve_inbox)


def new_callback_poller(context: AioContext) -> Poller:
    """The callback poller of *context*'s loop: the native core's where the
    context has the native inbox (the spin then watches libuv's descriptor,
    where the core can get it from uvloop)."""
    core = _inbox.native_core
    if core is None:
        return CallbackPoller(context, -1)
    poller: Poller = core.CallbackPoller(context, core.uv_backend_fd(context.loop))
    return poller
