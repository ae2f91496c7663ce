"""What the child of a ``fork()`` makes of the parent's IOThreads, pools and monitors.

The child has one thread, the one that forked: every IOThread, pool worker
and spawner of the parent is gone, and a lock one of them held at the fork
stays held forever.  So, in the child, before ``os.fork()`` returns there
(``os.register_at_fork``, which multiprocessing's ``fork`` start method runs
too), each object that called :func:`track` resets itself: it takes new
locks, and what ran in the parent reads as stopped (docs/design.md, "Fork").
Module-level state (the thread-locals that tell an IOThread's or a worker's
thread, ``MainLoop``'s one instance) registers its own hook where it lives.

Nothing the parent's threads used is closed or finalised in the child:
:func:`keep` holds it until the child exits.  Its descriptors are copies
sharing their open file descriptions with the parent's (an epoll instance,
the wake-up channel); closing a loop in the child would deregister the
parent's descriptors from the parent's epoll, and a read of the wake-up
channel would take the parent's wake-up.
"""

from __future__ import annotations

import os
import weakref
from typing import Final, Protocol

from ._runs_in import ThreadRole

__all__ = ["FORK_CHILD", "ForkAware", "forked_message", "keep", "track"]

#: The only thread of a forked child, inside ``os.fork()``: nothing else runs,
#: so a reset takes no lock (the locks it replaces may be held forever).
FORK_CHILD: Final = ThreadRole("the forked child's only thread, inside os.fork()")


class ForkAware(Protocol):
    """An object that resets itself in the child of a fork."""

    def _after_fork_in_child(self) -> None:
        """Take new locks; what ran in the parent reads as stopped."""
        ...


# Added to from any thread (a set's add is atomic); read only by the child's
# one thread, in the hook.
_tracked: Final[weakref.WeakSet[ForkAware]] = weakref.WeakSet()
# The child's: what the parent's threads used, never finalised here.
_kept: Final[list[object]] = []


def track(obj: ForkAware) -> None:
    """Have *obj* reset itself in the child of every later fork."""
    _tracked.add(obj)


def keep(*objs: object) -> None:
    """In the child: hold *objs* (a loop, an AioContext...) until the child exits."""
    _kept.extend(objs)


def forked_message(what: str, parent: int) -> str:
    """The error for *what*, inherited by fork from process *parent*; says what to do."""
    return (
        f"{what} belongs to process {parent}, which this process was forked from; "
        "its threads do not exist here: create a new one in this process"
    )


def _after_fork_in_child() -> None:
    for obj in list(_tracked):
        obj._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
