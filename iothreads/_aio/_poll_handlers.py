"""QEMU-style poll handlers: cheap readiness checks consulted while a loop spins.

QEMU's ``aio_set_event_notifier_poll`` gives a handler ``io_poll`` (is there
work?), ``io_poll_ready`` (run it), and ``io_poll_begin``/``io_poll_end``,
which bracket a polling phase so the handler can silence its other
notification channel meanwhile.  ``PollHandlerSet`` is one loop's set of them:
registration from any thread, the phase brackets and the ready list in the
loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from .._runs_in import ANY, LOOP, runs_in

__all__ = ["PollHandler"]  # PollHandlerSet is the context's own


class PollHandler:
    """A registered QEMU-style poll handler; ``remove()`` unregisters it.

    ``poll()`` is a cheap readiness check called while the loop spins;
    ``ready()`` runs when ``poll()`` said yes; ``begin``/``end`` bracket a
    polling phase (to silence another notification channel meanwhile), and
    always come in pairs: a handler added during a phase has its first
    ``begin()`` at the next one, and one removed during a phase gets no
    ``end()``, since it is not called again.
    """

    __slots__ = ("_in_ready", "_set", "begin", "end", "poll", "ready")

    def __init__(
        self,
        handler_set: PollHandlerSet,
        poll: Callable[[], bool],
        ready: Callable[[], object],
        begin: Callable[[], object] | None,
        end: Callable[[], object] | None,
    ) -> None:
        self._set = handler_set
        self.poll = poll
        self.ready = ready
        self.begin = begin
        self.end = end
        # True while ready() runs: a handler is never re-entered from it.
        self._in_ready = False

    @runs_in(ANY)
    def remove(self) -> None:
        """Unregister the handler; it is not called again."""
        self._set.remove(self)


class PollHandlerSet:
    """The poll handlers of one loop, and the state of its polling phase."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # The tuple is replaced, never mutated, so the spin iterates a
        # consistent snapshot while other threads add or remove.
        self._handlers: tuple[PollHandler, ...] = ()
        # Serialises the rewrites of _handlers (add and remove may come from
        # different threads at once); readers need no lock.
        self._lock = threading.Lock()
        #: Loop thread only: handlers whose poll() said yes, not yet run.
        #: The inbox counts them as work (the context reads the list too,
        #: where a call to ask would cost its wake-up path): it is mutated
        #: in place, never replaced.
        self.ready_handlers: list[PollHandler] = []
        # Loop thread only: the handlers whose begin() opened the current
        # phase; only they get its end() (brackets come in pairs).
        self._bracketed: tuple[PollHandler, ...] = ()

    @runs_in(ANY)
    def add(
        self,
        poll: Callable[[], bool],
        ready: Callable[[], object],
        begin: Callable[[], object] | None,
        end: Callable[[], object] | None,
    ) -> PollHandler:
        handler = PollHandler(self, poll, ready, begin, end)
        with self._lock:
            self._handlers = (*self._handlers, handler)
        return handler

    @runs_in(ANY)
    def remove(self, handler: PollHandler) -> None:
        with self._lock:
            self._handlers = tuple(h for h in self._handlers if h is not handler)

    @runs_in(ANY)
    def registered(self) -> bool:
        """True while any handler is registered."""
        return bool(self._handlers)

    @runs_in(LOOP)
    def poll(self) -> bool:
        """One spin step over the handlers; True if one is ready to run."""
        for handler in self._handlers:
            if handler._in_ready or handler in self.ready_handlers:
                continue
            if self._call(handler.poll, "poll"):
                self.ready_handlers.append(handler)
        return bool(self.ready_handlers)

    @runs_in(LOOP)
    def run_ready(self) -> None:
        """Run ``ready()`` of every handler found ready, unless removed meanwhile."""
        if not self.ready_handlers:
            return
        ready = self.ready_handlers.copy()
        self.ready_handlers.clear()
        for handler in ready:
            if handler._in_ready or handler not in self._handlers:
                continue
            handler._in_ready = True
            try:
                self._call(handler.ready, "ready")
            finally:
                handler._in_ready = False

    @runs_in(LOOP)
    def begin_phase(self) -> None:
        """Open a polling phase: ``begin()`` on every registered handler."""
        opened = []
        for handler in self._handlers:
            # As QEMU skips deleted nodes: a handler removed by an earlier
            # begin() is not called again.
            if handler not in self._handlers:
                continue
            opened.append(handler)
            if handler.begin is not None:
                self._call(handler.begin, "begin")
        self._bracketed = tuple(opened)

    @runs_in(LOOP)
    def end_phase(self, *, recheck: bool = True) -> None:
        """Close the phase: ``end()`` on the handlers it opened that are still
        registered; then, with *recheck*, poll once more.

        QEMU re-checks after io_poll_end: an event that arrived while the
        other channel was silenced must not wait for that channel.
        """
        opened, self._bracketed = self._bracketed, ()
        for handler in opened:
            if handler.end is None:
                continue
            if handler in self._handlers:  # an end() may remove another handler
                self._call(handler.end, "end")
        if recheck:
            self.poll()

    @runs_in(LOOP)
    def close(self) -> None:
        """Unregister everything.  A phase cut short gets its ``end()`` calls."""
        self.end_phase(recheck=False)
        with self._lock:
            self._handlers = ()
        self.ready_handlers.clear()

    def _call(self, method: Callable[[], object], name: str) -> object:
        """Call a handler's method; report what it raises, never raise.

        A poll handler runs inside the loop's select() or poller: an exception
        escaping it would stop the loop itself, or leave the polling phase
        half done.  So every one is reported, SystemExit and
        KeyboardInterrupt too (docs/design.md, "BaseException in an
        IOThread").  Returns None after an error.
        """
        try:
            return method()
        except BaseException as exc:
            self.loop.call_exception_handler(
                {"message": f"Exception in poll handler {name}()", "exception": exc}
            )
            return None
