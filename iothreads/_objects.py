"""The object tree: ``/objects/<id>``, QOM-style access, query-iothreads.

This is the in-process API a QMP monitor calls; it knows no JSON.  User
objects live under ``/objects`` (the container is ``_registry``'s; an IOThread
registers itself when it starts and removes it when it stops); internal
iothreads (``iothread_create``) never appear there.  Every error is worded as
QEMU 7.2 words it and carries its QMP class (``IOThreadsError.qmp_class``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._aio import AioContextStatistics
from ._errors import (
    DeviceNotFound,
    InvalidParameterValue,
    IOThreadsError,
    IOThreadStopped,
    ObjectNotFound,
    PropertyNotFound,
)
from ._event_loop_base import EventLoopBase, MainLoop
from ._iothread import IOThread
from ._pool import ThreadPoolStatistics
from ._props import attr_name, check_id, check_properties, wire_name
from ._registry import USER_OBJECTS

__all__ = [
    "IOThreadInfo",
    "ObjectPropertyInfo",
    "ObjectTypeInfo",
    "iothread_by_id",
    "iothread_create",
    "iothread_destroy",
    "object_add",
    "object_del",
    "qom_get",
    "qom_list",
    "qom_list_properties",
    "qom_list_types",
    "qom_set",
    "query_iothread_stats",
    "query_iothreads",
    "query_thread_pools",
]

_OBJECTS_PATH: Final = "/objects"


@dataclass(frozen=True)
class IOThreadInfo:
    """One entry of ``query_iothreads()`` (QMP's IOThreadInfo)."""

    id: str
    thread_id: int
    poll_max_ns: int
    poll_grow: int
    poll_shrink: int
    aio_max_batch: int

    def to_qmp(self) -> dict[str, Any]:
        """The QMP wire form: exactly the six keys QEMU reports."""
        return {
            "id": self.id,
            "thread-id": self.thread_id,
            "poll-max-ns": self.poll_max_ns,
            "poll-grow": self.poll_grow,
            "poll-shrink": self.poll_shrink,
            "aio-max-batch": self.aio_max_batch,
        }


@dataclass(frozen=True)
class ObjectPropertyInfo:
    """One entry of ``qom_list()`` (QMP's ObjectPropertyInfo)."""

    name: str
    type: str

    def to_qmp(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True)
class ObjectTypeInfo:
    """One entry of ``qom_list_types()`` (QMP's ObjectTypeInfo)."""

    name: str
    parent: str | None = None
    abstract: bool = False

    def to_qmp(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name}
        if self.abstract:
            info["abstract"] = True
        if self.parent is not None:
            info["parent"] = self.parent
        return info


#: The QOM types this runtime has: QEMU's root ``object``, the ``container``
#: that ``/objects`` is, and the event loop types (type -> its class, if any).
_TYPE_INFO: Final[Mapping[str, tuple[ObjectTypeInfo, type[EventLoopBase] | None]]] = {
    "object": (ObjectTypeInfo("object", abstract=True), None),
    "container": (ObjectTypeInfo("container", "object"), None),
    EventLoopBase.qom_type: (
        ObjectTypeInfo(EventLoopBase.qom_type, "object", abstract=True),
        EventLoopBase,
    ),
    IOThread.qom_type: (ObjectTypeInfo(IOThread.qom_type, EventLoopBase.qom_type), IOThread),
    MainLoop.qom_type: (ObjectTypeInfo(MainLoop.qom_type, EventLoopBase.qom_type), MainLoop),
}

#: The types object_add creates.
_USER_CREATABLE: Final[Mapping[str, type[EventLoopBase]]] = {
    IOThread.qom_type: IOThread,
    MainLoop.qom_type: MainLoop,
}


def query_iothreads() -> list[IOThreadInfo]:
    """The user IOThreads under ``/objects``, in the order they were added."""
    infos = []
    for obj in USER_OBJECTS.snapshot():
        if isinstance(obj, IOThread):
            p = obj.properties()
            infos.append(
                IOThreadInfo(
                    id=obj.id,
                    thread_id=obj.thread_id,
                    poll_max_ns=p["poll-max-ns"],
                    poll_grow=p["poll-grow"],
                    poll_shrink=p["poll-shrink"],
                    aio_max_batch=p["aio-max-batch"],
                )
            )
    return infos


def query_iothread_stats() -> list[tuple[str, AioContextStatistics]]:
    """Each running user IOThread's id and its AioContext statistics."""
    out = []
    for obj in USER_OBJECTS.snapshot():
        if isinstance(obj, IOThread):
            try:
                out.append((obj.id, obj.aio_context.statistics()))
            except IOThreadStopped:
                pass  # stopped since it was listed: it has no figures any more
    return out


def query_thread_pools() -> list[tuple[str, ThreadPoolStatistics]]:
    """Each user object's id and its pool's statistics, for those that have a
    pool now (a main-loop has one once installed on the application's loop)."""
    out = []
    for obj in USER_OBJECTS.snapshot():
        pool = obj.thread_pool
        if pool is not None:
            out.append((obj.id, pool.statistics()))
    return out


def qom_list_types(implements: str | None = None, abstract: bool = False) -> list[ObjectTypeInfo]:
    """The QOM types, optionally those implementing *implements* (the type
    itself or a descendant), abstract ones only when *abstract* is true."""
    out = []
    for info, _cls in _TYPE_INFO.values():
        if info.abstract and not abstract:
            continue
        if implements is not None and implements not in _ancestry(info):
            continue
        out.append(info)
    return out


def qom_list_properties(typename: str) -> list[ObjectPropertyInfo]:
    """The properties an object of QOM type *typename* has.

    Raises:
        DeviceNotFound: no such type (QEMU's ``Class 'X' not found``).
    """
    entry = _TYPE_INFO.get(typename)
    if entry is None:
        raise DeviceNotFound(f"Class '{typename}' not found")
    cls = entry[1]
    return _properties_of(cls.property_defaults if cls is not None else {})


def _ancestry(info: ObjectTypeInfo) -> list[str]:
    names = [info.name]
    while info.parent is not None:
        info = _TYPE_INFO[info.parent][0]
        names.append(info.name)
    return names


def _properties_of(defaults: Mapping[str, int]) -> list[ObjectPropertyInfo]:
    return [ObjectPropertyInfo("type", "string"), *(ObjectPropertyInfo(n, "int") for n in defaults)]


def iothread_by_id(id: str) -> IOThread | None:
    """The user IOThread with this id, or None (internal ones are not found)."""
    obj = USER_OBJECTS.get(id)
    return obj if isinstance(obj, IOThread) else None


def iothread_create(id: str, **props: int) -> IOThread:
    """Create and start an internal IOThread, invisible under ``/objects``.

    As QEMU's ``iothread_create()``: for the runtime's own use (the monitor
    runs on one).  Stop it with :func:`iothread_destroy`.

    Raises:
        InvalidParameterValue, InvalidParameterType: as the IOThread constructor.
    """
    io = IOThread(id, **props)  # type: ignore[arg-type]
    io._user_object = False
    io.start()
    return io


def iothread_destroy(io: IOThread) -> None:
    """Stop an IOThread of either kind and forget it."""
    io.stop()


def object_add(qom_type: str, id: str | None = None, **props: object) -> EventLoopBase:
    """Create a user object under ``/objects/<id>`` and start it.

    *props* take wire names (``**{"poll-max-ns": 0}``) or attribute names
    (``poll_max_ns=0``).

    Raises:
        InvalidParameterValue: unknown type, missing or malformed id, a
            duplicate id, an unknown property, a bad value.
        InvalidParameterType: a value that is not an int64.
    """
    cls = _USER_CREATABLE.get(qom_type)
    if cls is None:
        raise InvalidParameterValue(f"Parameter 'qom-type' does not accept value '{qom_type}'")
    if id is None:
        raise InvalidParameterValue("Parameter 'id' is missing")
    check_id(id)
    wire_props = {wire_name(k): v for k, v in props.items()}
    # Validate before anything exists, in QEMU's order: the id's form, each
    # property, a duplicate id, then the thread-pool limits as a pair.
    defaults = cls.property_defaults
    check_properties(defaults, defaults, wire_props, limits=False)
    USER_OBJECTS.check_free(id)
    check_properties(defaults, defaults, wire_props)
    kwargs = {attr_name(k): v for k, v in wire_props.items()}
    if cls is IOThread:
        io = IOThread(id, **kwargs)  # type: ignore[arg-type]
        io.start()  # registers it under /objects
        return io
    main_loop = MainLoop(id=id, **kwargs)  # type: ignore[arg-type]
    try:
        USER_OBJECTS.add(main_loop)
    except BaseException:
        main_loop.close()
        raise
    return main_loop


def object_del(id: str) -> None:
    """Stop and remove the user object ``/objects/<id>``.

    Of concurrent deletes of one id exactly one succeeds; the others raise
    ObjectNotFound, as QEMU's second delete does.

    Raises:
        ObjectNotFound: no user object has this id.
        RuntimeError: called from the IOThread's own thread or worker pool.
    """
    obj = USER_OBJECTS.get(id)
    if isinstance(obj, MainLoop):
        # QEMU: the main loop cannot go while the process runs on it.
        raise IOThreadsError(f"object '{id}' is in use, can not be deleted")
    if not isinstance(obj, IOThread) or not obj._delete():
        raise ObjectNotFound(f"object '{id}' not found")


def _resolve(path: str) -> EventLoopBase | None:
    """``/objects/<id>``, or a bare ``<id>`` (QEMU resolves partial paths);
    None stands for the ``/objects`` container itself.  Empty path parts are
    skipped, as QEMU does (``/objects//io0/`` is ``/objects/io0``)."""
    parts = [p for p in path.split("/") if p]
    if path.startswith("/") and parts[:1] == ["objects"]:
        parts = parts[1:]
        if not parts:
            return None
    obj = USER_OBJECTS.get(parts[0]) if len(parts) == 1 else None
    if obj is None:
        raise DeviceNotFound(f"Device '{path}' not found")
    return obj


def qom_get(path: str, prop: str) -> int | str:
    """Read property *prop* (wire name, or ``type``) of the object at *path*.

    Raises:
        DeviceNotFound: no object at *path*.
        PropertyNotFound: the object's type has no property *prop*.
    """
    obj = _resolve(path)
    if obj is None:  # the /objects container: its one property is its type
        if prop == "type":
            return "container"
        raise PropertyNotFound(f"Property 'container.{prop}' not found")
    if prop == "type":
        return obj.qom_type
    return obj.get_property(prop)


def qom_set(path: str, prop: str, value: object) -> None:
    """Write property *prop* (wire name) of the object at *path*, live.

    Raises:
        DeviceNotFound: no object at *path*.
        PropertyNotFound: the object's type has no property *prop*.
        InvalidParameterValue, InvalidParameterType: a rejected value; the
            object is left exactly as it was.
    """
    obj = _resolve(path)
    if prop == "type":  # read-only on every object, the container too
        raise IOThreadsError("Insufficient permission to perform this operation")
    if obj is None:
        raise PropertyNotFound(f"Property 'container.{prop}' not found")
    obj.set_property(prop, value)


def qom_list(path: str) -> list[ObjectPropertyInfo]:
    """The properties of the object at *path*; of ``/objects``, its children.

    Raises:
        DeviceNotFound: no object at *path*.
    """
    obj = _resolve(path)
    if obj is None:
        return [
            ObjectPropertyInfo("type", "string"),
            *(ObjectPropertyInfo(o.id, f"child<{o.qom_type}>") for o in USER_OBJECTS.snapshot()),
        ]
    return _properties_of(obj.property_defaults)
