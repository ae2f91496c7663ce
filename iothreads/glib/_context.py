"""The context: GMainContext's source set, its thread defaults, and its iteration.

An iteration runs in GLib's steps: prepare -> query -> poll -> check ->
dispatch.  A foreign loop that owns the context may run the steps itself
(``AsyncioDriver`` does); :meth:`MainContext.iteration` runs them all with
poll(2).

Locking: every field of a context, of its attached sources and of its main
loops is guarded by the context's ``_lock``, unless a comment says otherwise.
User code (``prepare``, ``check``, ``dispatch``, ``finalize``, callbacks) never
runs under that lock.  Fields marked "owner only" are touched only by the
thread that owns (has acquired) the context.  Before it is attached, a source
belongs to the thread that created it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from typing import Any, Final, TypeVar

from .._runs_in import ANY, ThreadRole, runs_in
from ._checks import check_callable, check_int
from ._constants import _ALWAYS_REPORTED, _MAX_INT, _US_PER_MS, PRIORITY_DEFAULT, IOCondition
from ._ownership import OWNER, ContextOwnership
from ._poll import _poll_fds, _Wakeup, get_monotonic_time
from ._source import Idle, Source, _SourceFunc

__all__ = ["MainContext"]

_logger = logging.getLogger(__package__)

#: The thread that pushed the context as its thread default.  Not checked:
#: the stack is per thread, and pop_thread_default() checks the calling
#: thread's own.
_PUSHER: Final = ThreadRole("the thread that pushed the context as its thread default")


_T = TypeVar("_T")


def _run_steps(steps: Generator[None, None, _T]) -> _T:
    """Run *steps* (an iteration step that can pause) to its end; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: _T = stop.value
            return result


class _ThreadDefaults(threading.local):
    stack: list[MainContext]

    def __init__(self) -> None:
        self.stack = []


_thread_defaults = _ThreadDefaults()
_DEFAULT_LOCK = threading.Lock()
_default_context: MainContext | None = None  # guarded by _DEFAULT_LOCK


class MainContext(ContextOwnership):
    """A set of sources and the machinery to run them, as ``GMainContext``.

    Any thread may attach and destroy sources and call :meth:`wakeup`; one
    thread at a time owns the context (:meth:`acquire`) and runs its
    iterations.  The wake-up pipe is created by the first poll (:meth:`fileno`)
    and closed by ``AsyncioDriver.close()``, or when the context is
    garbage-collected.

    An IOThread's context is closed when the IOThread stops
    (``AsyncioDriver.close()``): its sources are destroyed and finalised, and
    from then on :meth:`Source.attach` refuses new ones, since no IOThread
    would ever run them.  A ``MainLoop`` may still run the closed context
    until it is quit.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sources: dict[int, Source] = {}  # attached, not destroyed, in attach order
        self._sorted: list[Source] | None = None  # _sources by priority; None = stale
        # Why attach() refuses new sources (the IOThread that drives the
        # context stops, or stopped), or None while it accepts them.
        self._refusal: str | None = None
        self._wakeup = _Wakeup()
        self._poll_changed = False  # fds changed since query(): revents are stale
        self._time = get_monotonic_time()  # the iteration's cached clock
        self._timeout = -1  # owner only: computed by prepare(), returned by query()
        self._pending: deque[Source] = deque()  # owner only: chosen by check()
        self._in_check_or_prepare = 0  # owner only
        # Set once by an IOThread before it drives the context: there a
        # SystemExit or KeyboardInterrupt out of a source is logged like any
        # error (docs/design.md, "BaseException in an IOThread").
        self._serves_through_base_exceptions = False

    def __repr__(self) -> str:
        return f"<MainContext at {id(self):#x} sources={len(self._sources)}>"

    # -- the global and thread-default contexts -------------------------

    @classmethod
    @runs_in(ANY)
    def default(cls) -> MainContext:
        """The process-wide default context (created on first use)."""
        global _default_context
        with _DEFAULT_LOCK:
            if _default_context is None:
                _default_context = cls()
            return _default_context

    @staticmethod
    @runs_in(ANY)
    def get_thread_default() -> MainContext | None:
        """The calling thread's pushed context; ``None`` means the global default."""
        # Reads only the calling thread's stack, and _default_context
        # without its lock: it is set once, never changed.
        stack = _thread_defaults.stack
        if not stack or stack[-1] is _default_context:
            return None
        return stack[-1]

    @staticmethod
    @runs_in(ANY)
    def ref_thread_default() -> MainContext:
        """The calling thread's pushed context, else the global default."""
        stack = _thread_defaults.stack
        return stack[-1] if stack else MainContext.default()

    @runs_in(ANY)
    def push_thread_default(self) -> None:
        """Acquire this context and make it the calling thread's default.

        Raises:
            RuntimeError: another thread owns this context.
        """
        if not self.acquire():
            raise RuntimeError(f"cannot push {self!r}: it is owned by thread {self._owner}")
        _thread_defaults.stack.append(self)

    @runs_in(_PUSHER)
    def pop_thread_default(self) -> None:
        """Undo :meth:`push_thread_default` and release this context.

        Raises:
            RuntimeError: this context is not the calling thread's top default.
        """
        stack = _thread_defaults.stack
        if not stack or stack[-1] is not self:
            top = stack[-1] if stack else None
            raise RuntimeError(f"cannot pop {self!r}: the thread's default is {top!r}")
        stack.pop()
        self.release()

    @runs_in(_PUSHER)
    def _discard_thread_default(self) -> None:
        """Take every push of this context off the calling thread's stack,
        releasing it once per push; contexts pushed above it stay pushed.

        For a thread that is shutting down (``AsyncioDriver.close()`` at an
        IOThread's stop): unlike :meth:`pop_thread_default` it never raises,
        so code in that thread that pushed a context and never popped it (or
        popped once too often) cannot break the shutdown; the imbalance is
        logged.
        """
        stack = _thread_defaults.stack
        if not stack or stack[-1] is not self:
            _logger.warning(
                "%r is not the thread's top default context (the stack is %r): "
                "a push_thread_default() without its pop_thread_default()?",
                self,
                stack,
            )
        pushes = [i for i, context in enumerate(stack) if context is self]
        for i in reversed(pushes):
            del stack[i]
            self.release()

    # -- wake-ups --------------------------------------------------------

    @runs_in(ANY)
    def fileno(self) -> int:
        """The wake-up descriptor: readable when the context must run again.

        A foreign loop driving the context watches it beside the fds from
        :meth:`query`; :meth:`check` drains it.
        """
        with self._lock:
            return self._wakeup.fileno_locked()

    @runs_in(ANY)
    def _close_waker(self) -> None:
        """Close the wake-up pipe now; it is re-created on next need.

        Only while no thread polls it: by the owner, or when nothing runs the
        context.
        """
        with self._lock:
            self._wakeup.close_locked()

    @runs_in(ANY)
    def wakeup(self) -> None:
        """Make the current or next poll of the context return at once."""
        with self._lock:
            self._wakeup.signal_locked()

    # -- the iteration, in GLib's steps ----------------------------------

    def _require_owner(self, what: str) -> None:
        """Check that the calling thread may run the step *what* of an iteration.

        Raises:
            RuntimeError: the calling thread does not own the context, or
                *what* is called from a source's ``prepare()``/``check()``.
        """
        with self._lock:
            owner = self._owner
        if owner != threading.get_ident():
            raise RuntimeError(
                f"MainContext.{what}() needs the context acquired by the calling thread "
                f"{threading.get_ident()}; its owner is {owner}"
            )
        if self._in_check_or_prepare:
            raise RuntimeError(
                f"MainContext.{what}() called from within a source's prepare() or check()"
            )

    def _sorted_locked(self) -> list[Source]:
        # caller holds self._lock; the list returned is never mutated, only replaced
        if self._sorted is None:
            # sorted() is stable: attach order within one priority.
            self._sorted = sorted(self._sources.values(), key=lambda s: s._priority)
        return self._sorted

    def _serve_through_base_exceptions(self) -> None:
        """From now on a SystemExit or KeyboardInterrupt out of a source is
        logged and destroys it, like an Exception (an IOThread's context)."""
        self._serves_through_base_exceptions = True

    def _contained(self, exc: BaseException) -> bool:
        """True when *exc*, out of a source, is logged rather than let through."""
        return isinstance(exc, Exception) or self._serves_through_base_exceptions

    def _call_prepare(self, source: Source) -> tuple[bool, int]:
        # Without the lock: user code, which may not iterate the context.
        self._in_check_or_prepare += 1
        try:
            ready, timeout = source.prepare()
            return bool(ready), int(timeout)
        except BaseException as exc:
            if not self._contained(exc):
                raise
            _logger.exception("prepare() of %r raised; destroying it", source)
            source.destroy()
            return False, -1
        finally:
            self._in_check_or_prepare -= 1

    def _call_check(self, source: Source) -> bool:
        # Without the lock: user code, which may not iterate the context.
        self._in_check_or_prepare += 1
        try:
            return bool(source.check())
        except BaseException as exc:
            if not self._contained(exc):
                raise
            _logger.exception("check() of %r raised; destroying it", source)
            source.destroy()
            return False
        finally:
            self._in_check_or_prepare -= 1

    def _unblocked(self, sources: list[Source]) -> Iterator[tuple[Source, bool, int, int]]:
        """Each of *sources* neither destroyed nor blocked, with its ready flag,
        priority and ready time, read under the lock (prepare() and check()).
        """
        # Takes the lock for each source, never across a yield.
        for source in sources:
            with self._lock:
                if source._destroyed or source._blocked:
                    continue
                state = source._ready, source._priority, source._ready_time
            yield source, *state

    @runs_in(OWNER)
    def prepare(self) -> tuple[bool, int]:
        """Prepare every source; return (any ready?, highest ready priority).

        The priority is ``2**31 - 1`` (G_MAXINT) when none is ready.

        Raises:
            RuntimeError: the calling thread does not own the context, or this
                is called from a source's ``prepare()``/``check()``.
        """
        return _run_steps(self._prepare_steps(None))

    @runs_in(OWNER)
    def _prepare_steps(self, step: int | None) -> Generator[None, None, tuple[bool, int]]:
        """:meth:`prepare`, pausing (yielding) after each *step* sources if
        *step* is not None.  Raises at its first ``next()``, as prepare()."""
        self._require_owner("prepare")
        with self._lock:
            # From here until check(), a change by any thread must wake the poll.
            self._wakeup.waiting = True
            now = self._time = get_monotonic_time()
            sources = self._sorted_locked()
        timeout = -1
        current = _MAX_INT
        n_ready = 0
        for i, (source, ready, priority, ready_time) in enumerate(self._unblocked(sources), 1):
            if n_ready and priority > current:
                break
            if not ready:
                ready, source_timeout = self._call_prepare(source)
                if not ready and ready_time != -1:
                    if ready_time <= now:
                        ready = True
                    else:
                        # Rounded up so that the poll never wakes early.
                        until = -(-(ready_time - now) // _US_PER_MS)
                        source_timeout = until if source_timeout < 0 else min(source_timeout, until)
                if ready:
                    with self._lock:
                        ready = source._ready = not source._destroyed
                elif source_timeout >= 0:
                    timeout = source_timeout if timeout < 0 else min(timeout, source_timeout)
            if ready:
                n_ready += 1
                current = priority
            if step is not None and i % step == 0:
                yield
        self._timeout = 0 if n_ready else min(timeout, _MAX_INT)
        return n_ready > 0, current

    @runs_in(OWNER)
    def query(self, max_priority: int) -> tuple[int, list[tuple[int, IOCondition]]]:
        """The poll timeout (ms, -1 = infinite) and the ``(fd, events)`` to poll.

        Only sources of priority ``<= max_priority`` contribute fds; events of
        one fd are merged.  The wake-up descriptor (:meth:`fileno`) is not in
        the list: poll it too.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        self._require_owner("query")
        merged: dict[int, IOCondition] = {}
        with self._lock:
            self._poll_changed = False
            for source in self._sorted_locked():
                if source._priority > max_priority:
                    break
                if source._destroyed or source._blocked:
                    continue
                for tag in source._fds:
                    if tag.events:
                        merged[tag.fd] = merged.get(tag.fd, IOCondition(0)) | tag.events
        return self._timeout, list(merged.items())

    @runs_in(OWNER)
    def check(self, max_priority: int, fds: Iterable[tuple[int, int]]) -> bool:
        """Record the poll results *fds* (``(fd, revents)``); choose what to dispatch.

        Returns whether any source is ready.  Drains the wake-up descriptor.

        Raises:
            RuntimeError: the calling thread does not own the context, or this
                is called from a source's ``prepare()``/``check()``.
        """
        return _run_steps(self._check_steps(max_priority, fds, None))

    @runs_in(OWNER)
    def _check_steps(
        self, max_priority: int, fds: Iterable[tuple[int, int]], step: int | None
    ) -> Generator[None, None, bool]:
        """:meth:`check`, pausing (yielding) after each *step* sources if
        *step* is not None.  Raises at its first ``next()``, as check()."""
        self._require_owner("check")
        revents: dict[int, int] = {}
        for fd, events in fds:
            revents[fd] = revents.get(fd, 0) | events
        with self._lock:
            self._wakeup.consume_locked()
            self._pending = deque()
            if self._poll_changed:
                # The fd set changed during the poll: these revents may be stale
                # (GLib returns FALSE here too); the next iteration polls afresh.
                return False
            now = self._time = get_monotonic_time()
            sources = self._sorted_locked()
            for source in sources:
                for tag in source._fds:
                    mask = int(tag.events) | _ALWAYS_REPORTED if tag.events else 0
                    tag.revents = IOCondition(revents.get(tag.fd, 0) & mask)
        pending: list[Source] = []
        for i, (source, ready, priority, ready_time) in enumerate(self._unblocked(sources), 1):
            if pending and priority > max_priority:
                break
            if not ready:
                ready = (
                    self._call_check(source)
                    or any(tag.revents for tag in source._fds)
                    or (ready_time != -1 and ready_time <= now)
                )
                if ready:
                    with self._lock:
                        ready = source._ready = not source._destroyed
            if ready:
                pending.append(source)
                # Never dispatch a source less urgent than the first one chosen.
                max_priority = priority
            if step is not None and i % step == 0:
                yield
        with self._lock:
            # Timed sources take each other's places in deadline order; the
            # others keep attach order.
            slots = [i for i, s in enumerate(pending) if s._ready_time != -1]
            timed = sorted((pending[i] for i in slots), key=lambda s: s._ready_time)
        for i, source in zip(slots, timed, strict=True):
            pending[i] = source
        self._pending = deque(pending)
        return bool(pending)

    @runs_in(OWNER)
    def dispatch(self) -> None:
        """Dispatch the sources chosen by the last :meth:`check`.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        self._require_owner("dispatch")
        self._dispatch_some(len(self._pending))

    @runs_in(OWNER)
    def _dispatch_some(self, limit: int) -> bool:
        """Dispatch at most *limit* of the sources the last :meth:`check`
        chose, in their order; return whether some are left for a later call.

        For a driver that shares its thread (``AsyncioDriver``): what is left
        stays chosen, as it would be in the middle of :meth:`dispatch`.
        """
        # A nested iteration run by a source replaces self._pending: take
        # this call's share first.
        chosen = self._pending
        pending = [chosen.popleft() for _ in range(min(limit, len(chosen)))]
        for source in pending:
            with self._lock:
                # A source destroyed by now, or dispatched by a nested
                # iteration since check(), is skipped.
                if source._destroyed or not source._ready:
                    continue
                source._ready = False
                blocked_here = not source._can_recurse
                if blocked_here:
                    source._blocked = True
                source._in_call += 1
                callback, args = source._callback, source._args
            # None: a BaseException (KeyboardInterrupt...) went through; the
            # source is left as it was.
            keep: bool | None = None
            try:
                keep = bool(source.dispatch(callback, args))
            except BaseException as exc:
                if not self._contained(exc):
                    raise
                _logger.exception("dispatch of %r raised; destroying it", source)
                keep = False
            finally:
                with self._lock:
                    source._in_call -= 1
                    if blocked_here:
                        source._blocked = False
                    if keep is False:
                        source._destroy_locked(self)
                    finalize = source._take_finalize_locked()
                if finalize:
                    source._run_finalize()
        return bool(self._pending)

    def _poll(self, timeout: int, fds: list[tuple[int, IOCondition]]) -> list[tuple[int, int]]:
        if timeout == 0 and not fds:
            return []
        return _poll_fds([(self.fileno(), IOCondition.IN), *fds], timeout)

    def _iterate(self, block: bool, dispatch: bool) -> bool:
        """One GLib iteration (g_main_context_iterate); if another thread
        owns the context, wait for it when *block*, else return ``False``.

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        if not self.acquire():
            if not block:
                return False
            self._wait_for_ownership(lambda: True)
        # Between its prepare() and check(), a foreign driver (the
        # AsyncioDriver) relies on the wake-up's waiting flag to be woken by
        # changes; an iteration run meanwhile on its thread clears it in check().
        with self._lock:
            outer_waiting = self._wakeup.waiting
        try:
            _, max_priority = self.prepare()
            timeout, fds = self.query(max_priority)
            revents = self._poll(timeout if block else 0, fds)
            some_ready = self.check(max_priority, revents)
            if dispatch and some_ready:
                self.dispatch()
            return some_ready
        finally:
            if outer_waiting:
                with self._lock:
                    # Wake the outer driver: what it prepared may be stale
                    # (sources attached here without a wake-up), and let
                    # later changes wake it again.
                    self._wakeup.waiting = True
                    self._wakeup.signal_locked()
            self.release()

    @runs_in(ANY)
    def iteration(self, may_block: bool = True) -> bool:
        """Run one iteration; return whether any source was dispatched.

        With *may_block*, wait for the context if another thread owns it and
        poll until something is ready; else return ``False`` at once if the
        context is owned elsewhere.

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        return self._iterate(may_block, dispatch=True)

    @runs_in(ANY)
    def pending(self) -> bool:
        """Whether any source is ready (prepares and checks, dispatches nothing).

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        return self._iterate(block=False, dispatch=False)

    # -- sources ---------------------------------------------------------

    @runs_in(ANY)
    def find_source_by_id(self, source_id: int) -> Source | None:
        """The attached, not destroyed source with that id, else ``None``."""
        with self._lock:
            return self._sources.get(source_id)

    @runs_in(ANY)
    def invoke_full(self, priority: int, function: _SourceFunc, *args: Any) -> None:
        """Run ``function(*args)`` in the owner thread of the context.

        As ``g_main_context_invoke_full``: if the calling thread owns the
        context, or the context is its thread default and can be acquired,
        *function* runs at once (again while it returns a true value);
        otherwise an idle source at *priority* runs it from the context.

        Raises:
            TypeError: *function* is not callable or *priority* not an int.
            RuntimeError: *function* has to be queued, and the context
                belongs to an IOThread whose stop() has begun.
        """
        check_callable(function)
        check_int("priority", priority)
        if self.is_owner():
            while function(*args):
                pass
            return
        if self is MainContext.ref_thread_default() and self.acquire():
            try:
                while function(*args):
                    pass
            finally:
                self.release()
            return
        source = Idle(priority)
        source.set_callback(function, *args)
        source.attach(self)

    @runs_in(ANY)
    def invoke(self, function: _SourceFunc, *args: Any, priority: int = PRIORITY_DEFAULT) -> None:
        """:meth:`invoke_full` at *priority* (default ``PRIORITY_DEFAULT``).

        Raises:
            TypeError: *function* is not callable or *priority* not an int.
        """
        self.invoke_full(priority, function, *args)

    @runs_in(ANY)
    def _refuse_attach(self, reason: str) -> None:
        """Make :meth:`Source.attach` raise from now on, saying *reason*.

        The sources attached already stay, and run while the context is run.
        """
        with self._lock:
            self._refusal = reason

    @runs_in(OWNER)
    def _close(self) -> None:
        """Refuse new sources from now on, then destroy (and so finalise) every attached one.

        Closing first means that a source attached by another thread
        meanwhile is either among those destroyed here or refused: none is
        left attached to a context nothing runs any more.
        """
        self._refuse_attach("was closed when its IOThread stopped")
        self._destroy_all()

    @runs_in(ANY)
    def _destroy_all(self) -> None:
        """Destroy (and so finalise) every attached source."""
        with self._lock:
            sources = list(self._sources.values())
        for source in sources:
            source.destroy()
