"""What a ``ThreadPool`` queues: one call, the state of its life, where its outcome goes.

Two kinds, by where the caller waits: ``FutureRequest`` (``submit()``)
resolves a ``concurrent.futures.Future`` in the delivering thread, running its
done-callbacks there; ``LoopRequest`` (``run()``) resolves an asyncio future on
the awaiting loop, through one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar

from .._runs_in import ANY, LOOP, runs_in

__all__ = ["FutureRequest", "LoopRequest", "Request", "RequestState"]

_logger = logging.getLogger(__name__)


class RequestState(enum.Enum):
    """Life of a request; each transition happens under the pool lock."""

    QUEUED = "queued"  # waiting in the queue for a worker
    RUNNING = "running"  # a worker took it
    DONE = "done"  # the function returned or raised, result delivered
    CANCELLED = "cancelled"  # withdrawn before it started: it never runs
    DISCARDED = "discarded"  # withdrawn while running: its result is dropped


class Request(ABC):
    """One call of ``fn(*args, **kwargs)`` in a copy of the submitter's context.

    ``state`` is guarded by the pool lock; the rest is immutable.
    """

    __slots__ = ("args", "context", "fn", "kwargs", "state")

    #: Whether deliver() runs the caller's callbacks in the delivering thread.
    runs_callbacks: ClassVar[bool]

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()
        self.state = RequestState.QUEUED

    @runs_in(ANY)
    def begin(self) -> bool:
        """Mark the request running; False if its caller withdrew it.

        Called under the pool lock on a request just taken off the queue, by
        the thread that hands it to a worker (or fails it: no worker is
        left).  Whoever withdraws a request under the lock also takes it off
        the queue, so here it is still queued; only a ``submit()`` caller
        withdraws unseen, by cancelling its future (see FutureRequest).
        """
        assert self.state is RequestState.QUEUED
        self.state = RequestState.RUNNING
        return True

    @runs_in(ANY)
    def deliver(self, result: Any, exc: BaseException | None) -> None:
        """Hand the outcome to the caller, without the pool lock.  Never raises.

        The delivering thread is a pool thread: the worker that ran the
        function, or the thread that met a failed thread start.  A
        done-callback that raises a BaseException (SystemExit...) goes through
        ``Future.set_result()``, which catches only Exception: logged here, it
        does not end the pool thread (a worker would stay counted with no
        thread).
        """
        try:
            self._hand_over(result, exc)
        except BaseException:
            _logger.critical("delivering the outcome of %r raised", self.fn, exc_info=True)

    @abstractmethod
    def _hand_over(self, result: Any, exc: BaseException | None) -> None:
        """Resolve the caller's future, the way this kind of request does."""

    @abstractmethod
    @runs_in(ANY)
    def withdraw(self) -> None:
        """Tell the caller the request will never run.  Called without the pool lock."""


class FutureRequest(Request):
    """A ``submit()``: the outcome goes to a ``concurrent.futures.Future``."""

    __slots__ = ("future",)
    runs_callbacks = True  # the future's done-callbacks, in set_result()

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        super().__init__(fn, args, kwargs)
        self.future: Future[Any] = Future()

    @runs_in(ANY)
    def begin(self) -> bool:
        # The caller withdraws a submit() by cancelling its future, which the
        # pool only learns here.  The future's own lock nests inside the pool
        # lock; no future callback runs on this path.
        if not self.future.set_running_or_notify_cancel():
            self.state = RequestState.CANCELLED
            return False
        return super().begin()

    def _hand_over(self, result: Any, exc: BaseException | None) -> None:
        if exc is None:
            self.future.set_result(result)
        else:
            self.future.set_exception(exc)

    @runs_in(ANY)
    def withdraw(self) -> None:
        self.future.cancel()


class LoopRequest(Request):
    """A ``run()``: the outcome resolves an asyncio future on the awaiting loop."""

    __slots__ = ("future", "loop")
    runs_callbacks = False  # the awaiting loop runs them

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]
    ):
        super().__init__(fn, args, {})
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def _hand_over(self, result: Any, exc: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._resolve, result, exc)
        except RuntimeError:
            pass  # the awaiting loop is closed: nobody is left to take the outcome

    @runs_in(ANY)
    def withdraw(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.future.cancel)
        except RuntimeError:
            pass  # the awaiting loop is closed: nobody is left to tell

    @runs_in(LOOP)
    def _resolve(self, result: Any, exc: BaseException | None) -> None:
        """Complete the future unless its task was cancelled meanwhile."""
        future = self.future
        if future.done():
            return
        if exc is None:
            future.set_result(result)
        elif isinstance(exc, StopIteration):
            # asyncio refuses StopIteration in a future (it would end the awaiting
            # coroutine silently); Python 3.12+ converts it the same way.
            wrapped = RuntimeError("function raised StopIteration")
            wrapped.__cause__ = exc
            future.set_exception(wrapped)
        else:
            future.set_exception(exc)
