"""An IOThread's stop: every pending piece of work gets its outcome, then the loop is released.

Runs on the stopping IOThread's loop, after its last ordinary iteration:
the inbox is closed (late producers get ``IOThreadStopped`` or take their
handle back), what was queued runs, the remaining tasks are cancelled and
awaited, then async generators and the worker pool are shut down.  Nothing
is abandoned: a task that goes on after its cancellation, or a pool call
that does not return, holds the stop up, and after a while a warning names
it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from ._aio import AioContext
from ._call import CallSet
from ._pool import ThreadPool
from ._runs_in import LOOP, ThreadRole, runs_in

__all__ = ["shut_down"]

_logger = logging.getLogger(__name__)

#: Seconds a stopping IOThread waits for its cancelled tasks, and then for
#: its pool's running calls, before it logs a warning naming what it waits
#: for.  It goes on waiting, as ``asyncio.run()`` does: abandoning a task
#: would skip its clean-up, and a thread cannot be interrupted.
STOP_WARNING_DELAY: Final = 5.0


class _StopWatch:
    """Warns once when a stop has taken STOP_WARNING_DELAY s, naming what it waits for.

    One deadline for the whole stop, from its start: each wait alone may be
    short while together they hold the stop up (tasks that start successors
    when cancelled, then a slow pool call).
    """

    def __init__(self, iothread_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self._id = iothread_id
        self.loop = loop
        self._start = loop.time()
        self._warned = False

    @runs_in(LOOP)
    async def wait(self, waited: asyncio.Future[Any], what: Callable[[], str | None]) -> None:
        """Await *waited*; past the deadline, warn (once) that the stop waits for what().

        what() returns None when there is nothing to name after all (what was
        waited for finished as the deadline came): no warning then.
        """
        if not self._warned:
            left = self._start + STOP_WARNING_DELAY - self.loop.time()
            done, _ = await asyncio.wait([waited], timeout=max(0.0, left))
            description = None if done else what()
            if description is not None:
                self._warned = True
                _logger.warning(
                    "IOThread %r has been stopping for %.1f s; it waits for %s",
                    self._id,
                    self.loop.time() - self._start,
                    description,
                )
        await waited


#: The stopping IOThread's loop (the one *aio* serves), as the last thing it runs.
STOPPING_LOOP: Final = ThreadRole("the stopping IOThread's loop, as the last thing it runs")


@runs_in(STOPPING_LOOP)
async def shut_down(iothread_id: str, aio: AioContext, calls: CallSet, pool: ThreadPool) -> None:
    """Give every pending piece of work its outcome, then release the loop."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    watch = _StopWatch(iothread_id, loop)

    def others() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks(loop) if t is not me]

    def still_running() -> str | None:
        # All of them, not only those of the round: a task may have
        # started a successor as it was cancelled.  None when they have
        # all just finished.
        running = others()
        return f"task(s) that went on after being cancelled: {running}" if running else None

    calls.stopping = True
    aio.close_inbox()
    while True:
        # Queued callbacks run; they may start tasks, which are cancelled.
        aio.drain()
        tasks = others()
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        await watch.wait(asyncio.gather(*tasks, return_exceptions=True), still_running)
    await loop.shutdown_asyncgens()
    await watch.wait(
        asyncio.Task(loop.shutdown_default_executor(), loop=loop),  # not a task factory's
        lambda: f"its pool's running calls: {pool!r}",
    )
