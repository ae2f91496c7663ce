"""The handle of a cross-thread submission: an ``asyncio.Handle`` any thread may cancel.

``ThreadsafeHandle`` is the pure-Python one; the native core's
``_core.Handle`` is the same to its users (it subclasses ``asyncio.Handle``
too) and calls ``report_error`` and ``capture_stack`` here, so both say the
same thing when a callback fails or the loop is in debug mode.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import traceback
import types
from asyncio import format_helpers
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._runs_in import ANY, ThreadRole, runs_in

__all__ = ["ThreadsafeHandle", "capture_stack", "report_error"]

#: The thread running the loop of the handle given.
HANDLE_LOOP = ThreadRole(
    "the thread running the handle's loop",
    lambda handle: asyncio._get_running_loop() in (None, handle._loop),
)


class ThreadsafeHandle(asyncio.Handle):
    """An ``asyncio.Handle`` whose ``cancel()`` is safe from any thread.

    ``asyncio.Handle.cancel`` clears the callback; done from another thread
    while the loop is about to run it, the loop would call ``None``.  Here
    cancel only sets the flag, which the loop checks before running.
    """

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        # asyncio.Handle.__init__, flattened: this runs once per hand-off.
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._repr = None
        self._context = context if context is not None else contextvars.copy_context()
        # Frame 1 is the inbox's submit; its caller is where this comes from.
        self._source_traceback = capture_stack(sys._getframe(2)) if loop.get_debug() else None

    @runs_in(ANY)
    def cancel(self) -> None:
        self._cancelled = True

    def get_context(self) -> contextvars.Context:
        """The context the callback runs in (asyncio.Handle has it from 3.12)."""
        return self._context


@runs_in(ANY)
def capture_stack(frame: types.FrameType | None = None) -> traceback.StackSummary:
    """Where a handle is being submitted from, for debug mode's reports: from
    *frame* out, by default the caller's (the native core calls this from C,
    so its caller is the code that submitted)."""
    return format_helpers.extract_stack(frame or sys._getframe(1))


class _Failed(Protocol):
    """What report_error() reads of a handle (either implementation's)."""

    _callback: Callable[..., object]
    _args: Sequence[Any]
    _loop: asyncio.AbstractEventLoop
    _source_traceback: traceback.StackSummary | None


@runs_in(HANDLE_LOOP)
def report_error(handle: _Failed, exc: BaseException) -> None:
    """Report what a handle's callback raised to its loop, as asyncio.Handle._run does."""
    source = format_helpers._format_callback_source(handle._callback, handle._args)
    context: dict[str, Any] = {
        "message": f"Exception in callback {source}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)
