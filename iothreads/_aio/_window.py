"""The adaptive polling window: pure arithmetic, and the spin step's yield and guard.

QEMU's ``aio_poll`` (util/aio-posix.c, ``adjust_polling_time``) grows the busy
poll window while the loop keeps being woken a little after it would have gone
to sleep, and shrinks it when it sleeps for long (docs/design.md, "The polling
window").  ``PollWindow`` is that rule and nothing else, so it can be tested by
walking exact sequences; the AioContext owns one window and feeds it the
measured block time after each iteration.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._runs_in import ThreadRole, runs_in

__all__ = ["POLL_START_NS", "PollWindow", "involuntary_switches", "yield_cpu"]

#: First non-zero window.  QEMU starts growing from 4 us (aio-posix.c:
#: "4 us is a reasonable starting point").
POLL_START_NS: Final = 4000

#: One spin step's yield: sched_yield(2) releases the GIL and lets a thread
#: waiting for this CPU run; ``time.sleep(0)`` would be a 72 us sleep on the
#: machines measured (docs/design.md, "Measurements").  Windows has none;
#: there, the spin's other system calls are its only GIL releases.
yield_cpu: Final[Callable[[], None]] = getattr(os, "sched_yield", lambda: None)


def _switch_counter() -> Callable[[], int] | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows, where the suite does not run
        return None
    thread = getattr(resource, "RUSAGE_THREAD", None)
    if thread is None:  # pragma: no cover - not Linux, where the suite runs
        return None
    getrusage = resource.getrusage
    return lambda: getrusage(thread).ru_nivcsw


#: The calling thread's involuntary context switches so far, which a yield
#: that ran another thread on this CPU adds one to: what tells a spin that
#: it shares its CPU (the guard, docs/design.md, "The polling window").
#: None where the kernel does not count them per thread (RUSAGE_THREAD is
#: Linux's): there the spin has no guard.
involuntary_switches: Final[Callable[[], int] | None] = _switch_counter()


#: The thread of the loop whose AioContext owns the window.
CONTEXT_LOOP: Final = ThreadRole("the thread of the loop whose AioContext owns the window")


@dataclass
class PollWindow:
    """The current polling window ``poll_ns`` and the parameters that move it,
    owned by one AioContext."""

    poll_max_ns: int = 32768
    poll_grow: int = 0
    poll_shrink: int = 0
    poll_ns: int = 0

    @runs_in(CONTEXT_LOOP)
    def reset(self, poll_max_ns: int, poll_grow: int, poll_shrink: int) -> None:
        """Take new parameters; like QEMU, a change restarts the window from 0."""
        self.poll_max_ns = poll_max_ns
        self.poll_grow = poll_grow
        self.poll_shrink = poll_shrink
        self.poll_ns = 0

    @runs_in(CONTEXT_LOOP)
    def adjust(self, block_ns: int) -> int:
        """Move the window after an iteration that blocked for *block_ns*.

        *block_ns* runs from the start of the iteration's poll phase to the
        moment the loop had work again (polling plus sleeping).  Returns the
        new ``poll_ns``.
        """
        if not self.poll_max_ns:
            self.poll_ns = 0
        elif block_ns <= self.poll_ns:
            pass  # the window caught the event: it is the right size
        elif block_ns > self.poll_max_ns:
            # Slept too long for polling to ever have helped: shrink.
            self.poll_ns = self.poll_ns // self.poll_shrink if self.poll_shrink else 0
        elif block_ns < self.poll_max_ns:
            # The event came a little after the window closed: grow.  (QEMU
            # also asks poll_ns < poll_max_ns, which always holds here: the
            # window is below block_ns, itself below poll_max_ns.)
            grow = self.poll_grow or 2
            self.poll_ns = self.poll_ns * grow if self.poll_ns else POLL_START_NS
            self.poll_ns = min(self.poll_ns, self.poll_max_ns)
        return self.poll_ns
