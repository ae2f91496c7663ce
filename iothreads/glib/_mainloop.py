"""The main loop: a thread running a context's iterations until told to quit."""

from __future__ import annotations

from .._runs_in import ANY, runs_in
from ._context import MainContext

__all__ = ["MainLoop"]


class MainLoop:
    """Runs a context's iterations until :meth:`quit`, as ``GMainLoop``."""

    def __init__(self, context: MainContext | None = None) -> None:
        self._context = context if context is not None else MainContext.default()
        self._running = False  # guarded by the context lock

    def __repr__(self) -> str:
        return f"<MainLoop running={self._running} context={self._context!r}>"

    @runs_in(ANY)
    def get_context(self) -> MainContext:
        """The context this loop runs."""
        return self._context

    @runs_in(ANY)
    def is_running(self) -> bool:
        """Whether :meth:`run` is in progress (or waiting for the context)."""
        with self._context._lock:
            return self._running

    @runs_in(ANY)
    def run(self) -> None:
        """Iterate the context until :meth:`quit`.

        If another thread owns the context (its own loop is running, or an
        IOThread drives it), this thread does not iterate it: like
        ``g_main_loop_run`` it waits, without dispatching anything, until it
        can own the context or until :meth:`quit`.

        Raises:
            RuntimeError: called from a source's ``prepare()``/``check()``.
        """
        ctx = self._context
        owner = ctx.acquire()
        if owner and ctx._in_check_or_prepare:
            # As g_main_loop_run: refused before the loop is marked running,
            # so a refused run() leaves it (and an outer run() of it) as it was.
            ctx.release()
            raise RuntimeError("MainLoop.run() called from within a source's prepare() or check()")
        with ctx._lock:
            self._running = True
        try:
            # quit() while waiting makes run() return without ever owning the context.
            if not owner and not ctx._wait_for_ownership(lambda: self._running):
                return
            try:
                while self.is_running():
                    ctx.iteration(True)
            finally:
                ctx.release()
        except BaseException:
            # A KeyboardInterrupt (or any BaseException a callback let
            # through), while waiting for the context or running it, ends
            # run(): the loop is no longer running, so a later run() starts
            # afresh and is_running() does not lie meanwhile.
            with ctx._lock:
                self._running = False
            raise

    @runs_in(ANY)
    def quit(self) -> None:
        """Make :meth:`run` return after the current iteration."""
        ctx = self._context
        with ctx._lock:
            self._running = False
            ctx._wakeup.signal_locked()
            ctx._cond.notify_all()
