"""Which thread runs a function: one marker for the whole package, checked in debug mode.

Every function whose callers are restricted to one thread says so with
``@runs_in(ROLE)``; functions that any thread may call say ``@runs_in(ANY)``.
The marker is the documentation (it is kept as ``func.__runs_in__``), and in
asyncio's debug mode (``PYTHONASYNCIODEBUG=1`` or ``python -X dev``, read when
this module is imported) it is also a check: a role that knows how to
recognise its thread raises ``RuntimeError`` when called from another one, as
asyncio's ``BaseEventLoop._check_thread`` does for its loop.

Outside debug mode the decorator returns the function itself: the hot paths
pay nothing for it.  A private helper called only from marked methods of its
own class runs where they do and carries no marker of its own.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = ["ANY", "DEBUG", "LOOP", "ThreadRole", "runs_in"]

F = TypeVar("F", bound=Callable[..., Any])


def _debug_mode() -> bool:
    # asyncio's own rule (asyncio.coroutines._is_debug_mode), so one switch
    # turns both checks on.
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


#: Whether the markers check their thread (fixed at import).
DEBUG: Final = _debug_mode()


@dataclass(frozen=True)
class ThreadRole:
    """A kind of thread a function may run in.

    *holds*, when given, tells in debug mode whether the calling thread plays
    the role for the object the method is called on (``holds(self)``).
    """

    description: str
    holds: Callable[[Any], bool] | None = None


def _in_own_loop(obj: Any) -> bool:
    loop: asyncio.AbstractEventLoop | None = obj.loop
    if loop is None:
        return True  # before the loop exists, or once it is gone
    running = asyncio._get_running_loop()
    # While the loop is not running (being set up, or torn down after its
    # last iteration) its owner works on it outside any loop, as asyncio's
    # own _check_thread allows.
    return running is loop or (running is None and not loop.is_running())


#: No restriction: the function is thread-safe.
ANY: Final = ThreadRole("any thread")

#: The thread running ``self.loop`` (an IOThread's loop, or the loop an
#: AioContext serves); while that loop is not running, its owning thread.
LOOP: Final = ThreadRole("the thread running self.loop", _in_own_loop)


def runs_in(role: ThreadRole) -> Callable[[F], F]:
    """Mark a method (or function) with the thread *role* that runs it.

    In debug mode, a role with a check wraps the method so that a call from
    the wrong thread raises ``RuntimeError`` naming the method and the role.
    """

    def mark(func: F) -> F:
        func.__runs_in__ = role  # type: ignore[attr-defined]
        holds = role.holds
        if not DEBUG or holds is None:
            return func

        def check(self: Any) -> None:
            if not holds(self):
                raise RuntimeError(
                    f"{func.__qualname__}() must run in {role.description}; "
                    "hand it over with call_soon_threadsafe()"
                )

        if inspect.iscoroutinefunction(func):
            # Still a coroutine function to inspect; checked when awaited.
            @functools.wraps(func)
            async def checked_coroutine(self: Any, *args: Any, **kwargs: Any) -> Any:
                check(self)
                return await func(self, *args, **kwargs)

            return checked_coroutine  # type: ignore[return-value]

        @functools.wraps(func)
        def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(self)
            return func(self, *args, **kwargs)

        return checked  # type: ignore[return-value]

    return mark
