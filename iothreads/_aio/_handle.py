"""The handle of a cross-thread submission: an ``asyncio.Handle`` any thread may cancel."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import format_helpers
from collections.abc import Callable
from typing import Any

from .._runs_in import ANY, runs_in

__all__ = ["ThreadsafeHandle"]


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
        self._source_traceback = (
            format_helpers.extract_stack(sys._getframe(1)) if loop.get_debug() else None
        )

    @runs_in(ANY)
    def cancel(self) -> None:
        self._cancelled = True
