"""Who may run a context: one thread at a time owns it.

Any thread may attach and destroy sources, but only the context's owner, the
thread that acquired it (recursively, as ``g_main_context_acquire``), runs its
iterations; another thread that wants to run it waits for it, or gives up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from .._runs_in import ANY, ThreadRole, runs_in

__all__ = ["OWNER", "ContextOwnership"]


def _owns_context(obj: Any) -> bool:
    """Whether the calling thread owns *obj*, a context, or the context *obj*
    (a source) is attached to; an unattached source has no context to own."""
    context = obj if isinstance(obj, ContextOwnership) else obj.get_context()
    return context is None or context.is_owner()


#: The thread that owns the context (``MainContext.acquire()``): the one that
#: runs its iterations and its sources' hooks.
OWNER: Final = ThreadRole("the thread that owns the context", _owns_context)


class ContextOwnership:
    """The ownership of a context, as ``GMainContext``'s owner and owner count.

    The base of ``MainContext``: the lock made here guards the ownership and
    every other field of the context, of its sources and of its main loops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # notified when ownership frees
        self._owner: int | None = None  # thread ident of the owner
        self._owner_count = 0

    @runs_in(ANY)
    def acquire(self) -> bool:
        """Become (recursively) the owner; ``False`` if another thread owns it."""
        me = threading.get_ident()
        with self._lock:
            if self._owner is None:
                self._owner = me
            elif self._owner != me:
                return False
            self._owner_count += 1
            return True

    @runs_in(OWNER)
    def release(self) -> None:
        """Undo one :meth:`acquire`.

        Raises:
            RuntimeError: the calling thread does not own the context.
        """
        with self._lock:
            if self._owner != threading.get_ident():
                raise RuntimeError(
                    f"{self!r} released by thread {threading.get_ident()}, "
                    f"but its owner is {self._owner}"
                )
            self._owner_count -= 1
            if self._owner_count == 0:
                self._owner = None
                self._cond.notify_all()

    @runs_in(ANY)
    def is_owner(self) -> bool:
        """Whether the calling thread owns the context."""
        with self._lock:
            return self._owner == threading.get_ident()

    @runs_in(ANY)
    def _wait_for_ownership(self, keep_waiting: Callable[[], bool]) -> bool:
        """Block until the calling thread owns the context, or *keep_waiting* is false.

        *keep_waiting* is evaluated under the context lock.
        """
        me = threading.get_ident()
        with self._cond:
            while True:
                if self._owner is None or self._owner == me:
                    self._owner = me
                    self._owner_count += 1
                    return True
                if not keep_waiting():
                    return False
                self._cond.wait()
