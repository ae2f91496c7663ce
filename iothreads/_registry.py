"""The ``/objects`` container of user objects (QEMU's ``object_get_objects_root``).

It sits below the object tree's API (``_objects``) so that an IOThread can
register itself when it starts without importing the layer above it
(docs/design.md, "The object tree").
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from . import _fork
from ._errors import InvalidParameterValue
from ._runs_in import ANY, runs_in

if TYPE_CHECKING:
    from ._event_loop_base import EventLoopBase

__all__ = ["USER_OBJECTS", "ObjectContainer"]


class ObjectContainer:
    """Objects by id, in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[str, EventLoopBase] = {}  # guarded by _lock
        _fork.track(self)

    @runs_in(_fork.FORK_CHILD)
    def _after_fork_in_child(self) -> None:
        """In a forked child: empty, with a new lock.

        The objects it held are the parent's (stopped here): the child's tree
        holds the child's own, under any id (docs/design.md, "Fork").
        """
        self._lock = threading.Lock()
        self._children = {}

    @runs_in(ANY)
    def add(self, obj: EventLoopBase) -> None:
        """Add *obj* under its id.

        Raises:
            InvalidParameterValue: the id is taken (QEMU's wording).
        """
        with self._lock:
            self._check_free_locked(obj.id)
            self._children[obj.id] = obj

    @runs_in(ANY)
    def check_free(self, id: str) -> None:
        """Raise now what :meth:`add` would raise for *id*.

        Raises:
            InvalidParameterValue: the id is taken (QEMU's wording).
        """
        with self._lock:
            self._check_free_locked(id)

    def _check_free_locked(self, id: str) -> None:
        if id in self._children:
            raise InvalidParameterValue(
                f"attempt to add duplicate property '{id}' to object (type 'container')"
            )

    @runs_in(ANY)
    def remove(self, obj: EventLoopBase) -> bool:
        """Remove *obj* if it is the child under its id; False if it is not."""
        with self._lock:
            if self._children.get(obj.id) is not obj:
                return False
            del self._children[obj.id]
            return True

    @runs_in(ANY)
    def get(self, id: str) -> EventLoopBase | None:
        with self._lock:
            return self._children.get(id)

    @runs_in(ANY)
    def snapshot(self) -> list[EventLoopBase]:
        """The children in the order they were added."""
        with self._lock:
            return list(self._children.values())


#: The one ``/objects`` container of the process.
USER_OBJECTS: Final = ObjectContainer()
