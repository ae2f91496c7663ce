"""The cross-thread call protocol of ``io.run`` and ``io.submit``.

A call is started in the IOThread (a plain function is called there, a
coroutine becomes a task on its loop, started eagerly from Python 3.12) and
its outcome goes back to the caller.  One class per kind of caller:

* ``LoopCall`` (``io.run``): the caller awaits on a loop of its own.  If the
  awaiting task is cancelled, the call cancels the inner work **and waits for
  it to finish** before the caller sees ``CancelledError`` (unless the caller
  chose ``abandon_on_cancel``); a call cancelled before it started never runs.
* ``FutureCall`` (``io.submit``): the caller holds a
  ``concurrent.futures.Future``.  Cancelling the future before the call
  started keeps it from ever running; later, a plain function's future is
  running (``cancel()`` returns False), and a coroutine's cancels its task.

Either way every call gets exactly one outcome; one cancelled by the
IOThread's own stop gets ``IOThreadStopped`` (docs/design.md, "Threading
rules").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from ._aio import context_of
from ._errors import IOThreadStopped
from ._runs_in import ANY, LOOP, ThreadRole, runs_in

if TYPE_CHECKING:
    from ._aio import AioContext

__all__ = ["CallSet", "FutureCall", "LoopCall", "check_runnable", "close_unstarted"]

#: The loop that awaits a LoopCall's outcome.
CALLER_LOOP = ThreadRole(
    "the caller's loop", lambda call: asyncio._get_running_loop() is call.caller_loop
)


#: The thread of the IOThread whose calls a CallSet holds.
CALLS_OWNER = ThreadRole("the thread of the IOThread that runs the calls")


def _new_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, None],
    name: str,
    context: contextvars.Context,
) -> asyncio.Task[None]:
    """A task for a call's coroutine; on Python 3.12 and newer started
    eagerly, unless *loop* has a task factory (which then decides).

    The call starts in its turn in the inbox, and so does its coroutine's
    first step, as under ``asyncio.eager_task_factory``: one that ends
    without waiting (a lookup, a ``put_nowait``) has its result on the way
    before the loop runs anything else, not after another pass of the
    loop's ready callbacks.  (Eager tasks came in 3.12.)
    """
    if sys.version_info >= (3, 12) and loop.get_task_factory() is None:
        return asyncio.Task(coro, loop=loop, name=name, context=context, eager_start=True)  # 3.12+
    return loop.create_task(coro, name=name, context=context)


def check_runnable(func: Any, args: tuple[Any, ...]) -> None:
    """What run() and submit() accept: a callable, or a coroutine object alone.

    Raises:
        TypeError: anything else, or a coroutine object given arguments.
    """
    if inspect.iscoroutine(func):
        if args:
            raise TypeError(
                f"a coroutine object takes no arguments, got {len(args)}: pass the "
                "coroutine function and its arguments instead"
            )
    elif not callable(func):
        raise TypeError(f"expected a callable or a coroutine object, not {func!r}")


def close_unstarted(func: Any) -> None:
    """Close *func* if it is a coroutine object that will never run (refused,
    or withdrawn before its start); else Python warns, when it is collected,
    that it was never awaited."""
    if inspect.iscoroutine(func):
        func.close()


class CallSet:
    """The calls of one IOThread whose tasks still run; owned by the IOThread.

    asyncio holds a task only weakly, and a ``submit()`` whose future the
    caller dropped holds it no more: without this set, a task waiting on
    nothing else would be garbage-collected mid-run, and the stop would
    never cancel it (its clean-up would get GeneratorExit at collection).
    """

    def __init__(self, owner: str) -> None:
        #: who runs the calls, for error messages ("IOThread 'io0'")
        self.owner = owner
        #: the tasks of calls still running, and their calls (the IOThread only)
        self.tasks: dict[asyncio.Task[Any], _Call] = {}
        #: set by the IOThread's shutdown: cancellations from now on are its own
        self.stopping = False
        #: SystemExit and KeyboardInterrupt delivered since the loop last let
        #: one out (the IOThread only)
        self.delivered_escapes: list[BaseException] = []

    @runs_in(CALLS_OWNER)
    def outcome_of_a_call(self, exc: BaseException) -> bool:
        """True when *exc*, let out of the loop, ended one of the calls' tasks:
        its caller gets it.

        asyncio's task keeps a SystemExit or KeyboardInterrupt as its
        outcome and also lets it out of the loop: the stdlib loop at once,
        before the task's done callbacks (which deliver it) ran; uvloop at
        the end of the iteration, after them, and only the last of several.
        """
        delivered, self.delivered_escapes = self.delivered_escapes, []
        return any(e is exc for e in delivered) or any(
            task.done() and not task.cancelled() and task.exception() is exc for task in self.tasks
        )

    @runs_in(CALLS_OWNER)
    def abandon(self) -> None:
        """The IOThread's loop ended before these calls' tasks did, and will
        not run again: each caller gets ``IOThreadStopped``."""
        tasks, self.tasks = self.tasks, {}
        for call in tasks.values():
            call._deliver(
                None, IOThreadStopped(f"{self.owner} ended before the call completed"), False
            )


class _Call(ABC):
    """One call of *func* on an IOThread; the subclasses deliver the outcome."""

    __slots__ = ("aio", "args", "calls", "cancel_requested", "context", "func", "task")

    @runs_in(ANY)
    def __init__(self, calls: CallSet, aio: AioContext, func: Any, args: tuple[Any, ...]) -> None:
        """Check what the caller hands over, in its own thread.

        Raises:
            TypeError: *func* is neither callable nor a coroutine object, or
                is a coroutine object given arguments.
        """
        check_runnable(func, args)
        self.calls = calls
        self.aio = aio
        self.func = func
        self.args = args
        self.context = contextvars.copy_context()
        self.task: asyncio.Task[Any] | None = None
        # Set in the IOThread when the caller asked for the cancellation.
        self.cancel_requested = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The IOThread's loop, where the call runs."""
        return self.aio.loop

    @runs_in(LOOP)
    def start(self) -> None:
        if self._withdrawn():
            close_unstarted(self.func)
            return
        try:
            func = self.func
            result = func if inspect.iscoroutine(func) else self.context.run(func, *self.args)
        except BaseException as exc:
            self._finish(None, exc)
            return
        if not inspect.iscoroutine(result):
            self._finish(result, None)
            return
        runner = self._run_task(result)
        try:
            # Named after the caller's coroutine, which the task's repr (in
            # the stop's warning, in asyncio's) would not show otherwise.
            task = _new_task(self.loop, runner, result.__qualname__, self.context)
        except BaseException as exc:
            # A task factory's error; or a KeyboardInterrupt or SystemExit
            # out of an eager first step: asyncio lets those out of the task
            # as well as keeping them as its outcome.
            runner.close()
            result.close()
            self._finish(None, exc)
            started = self.task  # set by the first step, if one ran
            if started is not None and started.done() and not started.cancelled():  # 3.12+
                started.exception()  # delivered: not one "never retrieved"
            return
        if task.done():  # 3.12+: an eager start ran it to its end
            self._task_done(task)
            return
        self.task = task
        self.calls.tasks[task] = self
        task.add_done_callback(self._task_done)

    async def _run_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        """The task's coroutine: *coro*, then its result delivered in the
        same step, and the done callback withdrawn.

        asyncio calls a done callback one loop iteration after the step that
        ended the task, and that iteration was on every result's way to the
        caller; an exception or a cancellation still goes that way
        (``_task_done``).  The task is asyncio's own record of itself:
        started eagerly, this runs before ``create_task`` returns, and
        before ``start()`` has registered the task or its callback.
        """
        task = self.task = cast("asyncio.Task[None]", asyncio.current_task())  # never None
        self._finish(await coro, None)
        task.remove_done_callback(self._task_done)
        self.calls.tasks.pop(task, None)

    @runs_in(LOOP)
    def cancel(self) -> None:
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()

    @runs_in(LOOP)
    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.calls.tasks.pop(task, None)
        if task.cancelled():
            self._finish(None, None, cancelled=True)
            return
        exc = task.exception()
        if exc is None:
            return  # 3.12+: an eager first step delivered it (_run_task)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.calls.delivered_escapes.append(exc)  # see outcome_of_a_call
        self._finish(None, exc)

    @runs_in(LOOP)
    def _finish(self, result: Any, exc: BaseException | None, cancelled: bool = False) -> None:
        if cancelled and not self.cancel_requested and self.calls.stopping:
            # Nobody asked for this cancel: the IOThread's stop did it.
            exc = IOThreadStopped(f"{self.calls.owner} stopped before the call completed")
            cancelled = False
        self._deliver(result, exc, cancelled)

    @abstractmethod
    @runs_in(LOOP)
    def _withdrawn(self) -> bool:
        """True when the caller gave up before the start: the call never runs."""

    @abstractmethod
    @runs_in(LOOP)
    def _deliver(self, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        """Hand the outcome to the caller."""


class LoopCall(_Call):
    """A call awaited on the caller's own loop (``io.run``)."""

    __slots__ = (
        "abandon_on_cancel",
        "abandoned",
        "caller_loop",
        "delivered",
        "finished",
        "outcome",
    )

    def __init__(
        self,
        calls: CallSet,
        aio: AioContext,
        func: Any,
        args: tuple[Any, ...],
        caller_loop: asyncio.AbstractEventLoop,
        abandon_on_cancel: bool,
    ) -> None:
        super().__init__(calls, aio, func, args)
        self.caller_loop = caller_loop
        # A cancelled caller leaves at once instead of waiting for the work.
        self.abandon_on_cancel = abandon_on_cancel
        self.outcome: asyncio.Future[Any] = caller_loop.create_future()
        # Caller's loop only: the outcome arrived, and the future a cancelled
        # caller waits on for the inner work to finish.
        self.delivered = False
        self.finished: asyncio.Future[None] | None = None
        # Set by a cancelled caller: start() then does nothing.
        self.abandoned = False

    @runs_in(CALLER_LOOP)
    async def result(self) -> Any:
        """Await the outcome; if cancelled, cancel the inner work and wait for it
        (unless ``abandon_on_cancel``: then the caller leaves at once, and
        work already running goes on without it).

        Raises:
            IOThreadStopped: the IOThread stopped before the work completed.
            BaseException: whatever the work raised.
        """
        try:
            return await self.outcome
        except asyncio.CancelledError:
            if self.delivered:
                raise  # the inner work itself ended cancelled
            # The caller was cancelled: cancel the inner work, wait for it.
            # If the call has not started yet, it never will.
            self.abandoned = True
            try:
                self.aio.call_soon_threadsafe(self.cancel)
            except IOThreadStopped:
                pass  # the loop's shutdown cancels it and delivers
            if self.abandon_on_cancel:
                raise  # the outcome, when it comes, finds nobody waiting
            # Set before the next await: _resolve, on this loop too, runs later.
            self.finished = finished = self.caller_loop.create_future()
            while not finished.done():
                try:
                    await asyncio.shield(finished)
                except asyncio.CancelledError:
                    continue  # cancelled again: keep waiting, then re-raise
            raise

    def _withdrawn(self) -> bool:
        if not self.abandoned:
            return False
        self.cancel_requested = True
        self._finish(None, None, cancelled=True)  # releases the waiting caller
        return True

    def _deliver(self, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        # Through the inbox of the context serving the caller's loop where
        # one does (an IOThread's, a main-loop's that polls): no wake-up
        # while that loop is awake, and a spin there catches the reply.
        # Its inbox refuses once closed; the loop's own channel remains.
        reply_to = context_of(self.caller_loop)
        if reply_to is not None:
            try:
                reply_to.call_soon_threadsafe(self._resolve, result, exc, cancelled)
                return
            except IOThreadStopped:
                pass
        try:
            self.caller_loop.call_soon_threadsafe(self._resolve, result, exc, cancelled)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is left to tell

    @runs_in(CALLER_LOOP)
    def _resolve(self, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        self.delivered = True
        outcome = self.outcome
        if not outcome.done():
            if cancelled:
                outcome.cancel()
            elif exc is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(result)
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)


class FutureCall(_Call):
    """A call whose outcome goes to a ``concurrent.futures.Future`` (``io.submit``).

    The future keeps ``concurrent.futures``' contract, as
    ``ThreadPoolExecutor``'s does, for a plain function: it is marked running
    (``set_running_or_notify_cancel()``, in the IOThread) right before the
    call, so ``cancel()`` succeeds only while the call is queued, and a call
    cancelled then never runs.  A coroutine keeps asyncio's contract, as
    ``run_coroutine_threadsafe``'s future does: the future stays pending
    while the task runs, and cancelling it cancels the task.
    """

    __slots__ = ("future", "plain")

    def __init__(self, calls: CallSet, aio: AioContext, func: Any, args: tuple[Any, ...]) -> None:
        super().__init__(calls, aio, func, args)
        # Decided before the call, from what the caller handed over: a plain
        # function's future runs, a coroutine's stays cancellable.
        self.plain = not (
            inspect.iscoroutine(func)
            or inspect.iscoroutinefunction(func)
            or inspect.iscoroutinefunction(type(func).__call__)
        )
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.future.add_done_callback(self._on_future_done)

    def _withdrawn(self) -> bool:
        # Cancelled while queued: that is its outcome.  Otherwise a plain
        # function's future is running from here on: cancel() returns False.
        if self.plain:
            return not self.future.set_running_or_notify_cancel()
        return self.future.cancelled()

    def _deliver(self, result: Any, exc: BaseException | None, cancelled: bool) -> None:
        future = self.future
        if cancelled and future.running():
            # A running future cannot be cancelled (a plain function whose
            # coroutine's task ended cancelled): result() raises the same.
            exc, cancelled = concurrent.futures.CancelledError(), False
        try:
            if cancelled:
                future.cancel()
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile by its owner: that is its outcome

    @runs_in(ANY)
    def _on_future_done(self, future: concurrent.futures.Future[Any]) -> None:
        # In the thread that completed or cancelled the future.
        if future.cancelled() and not self.cancel_requested:
            try:
                self.aio.call_soon_threadsafe(self.cancel)
            except IOThreadStopped:
                pass  # the loop's shutdown cancels the task itself
