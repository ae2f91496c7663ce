"""The QMP commands: their table, their arguments checked as QEMU's QAPI
visitor does, and the dispatch of one request (QEMU's ``qmp_dispatch``).

The commands manage the object tree through the public objects API only
(``object_add``, ``qom_set``, ``query_iothreads``...).  They see parsed JSON
values, never bytes: the wire format is ``_wire``'s, the connections
``_server``'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from .._objects import (
    object_add,
    object_del,
    qom_get,
    qom_list,
    qom_list_properties,
    qom_list_types,
    qom_set,
    query_iothread_stats,
    query_iothreads,
    query_thread_pools,
)
from ._wire import QMPError

# The monitor reaches the commands through dispatch(); nothing here is public.
__all__: list[str] = []


@dataclass
class ClientState:
    """What the commands remember about one client."""

    #: qmp_capabilities has succeeded: the other commands are open.
    negotiated: bool = False


# -- arguments, QAPI style ------------------------------------------------------------


class _JsonType(enum.Enum):
    """The types of the commands' arguments; ``name.lower()`` is QAPI's name
    for the type, as the error messages spell it."""

    STRING = str
    BOOLEAN = bool
    ARRAY = list
    ANY = object

    def accepts(self, value: object) -> bool:
        python_type: type = self.value
        return isinstance(value, python_type)


@dataclass(frozen=True)
class _Param:
    name: str
    type: _JsonType
    required: bool = True


def _check_args(
    params: tuple[_Param, ...], args: Mapping[str, Any], *, extra: bool = False
) -> None:
    """Check *args* as QEMU's input visitor does: declared members in order
    (missing, then wrong type), then anything undeclared; with *extra*,
    undeclared ones are left for the command to judge.

    Raises:
        QMPError: ``Parameter 'x' is missing``, ``Invalid parameter type for
            'x', expected: string``, ``Parameter 'x' is unexpected``.
    """
    for p in params:
        if p.name not in args:
            if p.required:
                raise QMPError(f"Parameter '{p.name}' is missing")
        elif not p.type.accepts(args[p.name]):
            raise QMPError(
                f"Invalid parameter type for '{p.name}', expected: {p.type.name.lower()}"
            )
    if not extra:
        declared = {p.name for p in params}
        for name in args:
            if name not in declared:
                raise QMPError(f"Parameter '{name}' is unexpected")


# -- the commands ----------------------------------------------------------------------


@functools.cache
def version() -> dict[str, Any]:
    """query-version in QEMU's shape, with this package's version (the
    greeting carries it too)."""
    try:
        package = metadata.version("iothreads")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        package = "0.0.0"
    m = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", package)
    major, minor, micro = (int(g or 0) for g in m.groups()) if m else (0, 0, 0)
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": f"iothreads {package}",
    }


def _hyphenated(stats: Any) -> dict[str, Any]:
    """A statistics dataclass as a QMP dict: ``poll_ns`` -> ``poll-ns``."""
    return {k.replace("_", "-"): v for k, v in dataclasses.asdict(stats).items()}


#: A command's body: its arguments, checked, in; its ``return`` value out.
_Handler = Callable[[ClientState, dict[str, Any]], object]


@dataclass(frozen=True)
class _Command:
    handler: _Handler
    params: tuple[_Param, ...] = ()
    #: takes undeclared arguments too (object-add: the type's properties)
    extra: bool = False
    #: may block on other threads (it starts or joins one): dispatch() runs
    #: it in a worker thread, so that the monitor's loop goes on serving the
    #: other clients meanwhile
    blocking: bool = False


def _cmd_qmp_capabilities(client: ClientState, args: dict[str, Any]) -> object:
    enable = args.get("enable", [])
    for i, cap in enumerate(enable):
        if not isinstance(cap, str):
            raise QMPError(f"Invalid parameter type for 'enable[{i}]', expected: string")
        if cap != "oob":  # the only capability QMP defines
            raise QMPError(f"Parameter 'enable[{i}]' does not accept value '{cap}'")
    # QEMU's qmp_qmp_capabilities: once negotiated, nothing else is looked at.
    if client.negotiated:
        raise QMPError(
            "Capabilities negotiation is already complete, command ignored", "CommandNotFound"
        )
    if enable:
        # The greeting offers no capability (no out-of-band execution here);
        # QEMU names every one asked for, repeats included.
        raise QMPError(f"Capability {', '.join(enable)} not available")
    client.negotiated = True
    return {}


def _cmd_query_version(client: ClientState, args: dict[str, Any]) -> object:
    return version()


def _cmd_query_commands(client: ClientState, args: dict[str, Any]) -> object:
    return [{"name": name} for name in _COMMANDS]


def _cmd_query_iothreads(client: ClientState, args: dict[str, Any]) -> object:
    return [info.to_qmp() for info in query_iothreads()]


#: The QOM type whose members QAPI visits first for every object-add type
#: (QEMU's EventLoopBaseProperties is the base of IothreadProperties and
#: MainLoopProperties), and the types object-add creates are its descendants.
_OBJECT_BASE: Final = "event-loop-base"


def _is_int64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < 1 << 63


def _cmd_object_add(client: ClientState, args: dict[str, Any]) -> object:
    # QEMU's object-add argument visitor (ObjectOptions) before anything is
    # made: qom-type (an enum), id, the type's members in schema order (its
    # base type's first), then anything undeclared.  The id's form, the
    # values' ranges and the pool limits are checked by object_add() next.
    _check_args((_Param("qom-type", _JsonType.STRING),), args, extra=True)
    qom_type = args["qom-type"]
    if qom_type not in {t.name for t in qom_list_types(_OBJECT_BASE)}:
        raise QMPError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
    _check_args((_Param("id", _JsonType.STRING),), args, extra=True)
    members = [p.name for p in qom_list_properties(_OBJECT_BASE) if p.name != "type"]
    members += [
        p.name for p in qom_list_properties(qom_type) if p.name != "type" and p.name not in members
    ]
    for name in members:
        if name in args and not _is_int64(args[name]):
            raise QMPError(f"Invalid parameter type for '{name}', expected: integer")
    props = {k: v for k, v in args.items() if k not in ("qom-type", "id")}
    for name in props:
        # Wire names only: object_add() would also take attribute spellings.
        if name not in members:
            raise QMPError(f"Parameter '{name}' is unexpected")
    object_add(qom_type, args["id"], **props)
    return {}


def _cmd_object_del(client: ClientState, args: dict[str, Any]) -> object:
    object_del(args["id"])
    return {}


def _cmd_qom_get(client: ClientState, args: dict[str, Any]) -> object:
    return qom_get(args["path"], args["property"])


def _cmd_qom_set(client: ClientState, args: dict[str, Any]) -> object:
    qom_set(args["path"], args["property"], args["value"])
    return {}


def _cmd_qom_list(client: ClientState, args: dict[str, Any]) -> object:
    return [p.to_qmp() for p in qom_list(args["path"])]


def _cmd_qom_list_types(client: ClientState, args: dict[str, Any]) -> object:
    types = qom_list_types(args.get("implements"), args.get("abstract", False))
    return [t.to_qmp() for t in types]


def _cmd_qom_list_properties(client: ClientState, args: dict[str, Any]) -> object:
    return [p.to_qmp() for p in qom_list_properties(args["typename"])]


def _cmd_x_query_iothread_stats(client: ClientState, args: dict[str, Any]) -> object:
    return [{"id": id, **_hyphenated(stats)} for id, stats in query_iothread_stats()]


def _cmd_x_query_thread_pools(client: ClientState, args: dict[str, Any]) -> object:
    return [{"id": id, **_hyphenated(stats)} for id, stats in query_thread_pools()]


_PATH = _Param("path", _JsonType.STRING)
_PROPERTY = _Param("property", _JsonType.STRING)
_COMMANDS: Final[Mapping[str, _Command]] = {
    "qmp_capabilities": _Command(
        _cmd_qmp_capabilities, (_Param("enable", _JsonType.ARRAY, required=False),)
    ),
    "query-version": _Command(_cmd_query_version),
    "query-commands": _Command(_cmd_query_commands),
    "query-iothreads": _Command(_cmd_query_iothreads),
    # Its handler checks its arguments itself: which are declared depends on qom-type.
    "object-add": _Command(_cmd_object_add, extra=True, blocking=True),
    "object-del": _Command(_cmd_object_del, (_Param("id", _JsonType.STRING),), blocking=True),
    "qom-get": _Command(_cmd_qom_get, (_PATH, _PROPERTY)),
    "qom-set": _Command(_cmd_qom_set, (_PATH, _PROPERTY, _Param("value", _JsonType.ANY))),
    "qom-list": _Command(_cmd_qom_list, (_PATH,)),
    "qom-list-types": _Command(
        _cmd_qom_list_types,
        (
            _Param("implements", _JsonType.STRING, required=False),
            _Param("abstract", _JsonType.BOOLEAN, required=False),
        ),
    ),
    "qom-list-properties": _Command(
        _cmd_qom_list_properties, (_Param("typename", _JsonType.STRING),)
    ),
    "x-query-iothread-stats": _Command(_cmd_x_query_iothread_stats),
    "x-query-thread-pools": _Command(_cmd_x_query_thread_pools),
}


# -- one request ----------------------------------------------------------------------


async def dispatch(client: ClientState, request: dict[str, Any]) -> object:
    """Check the request's members, find the command, check its arguments,
    run it; return its ``return`` value.

    A command that may block runs in a worker thread (``asyncio.to_thread``);
    the others run on the calling loop.

    Raises:
        QMPError, IOThreadsError, IOThreadStopped: the command's error.
    """
    for key, value in request.items():
        if key == "execute":
            if not isinstance(value, str):
                raise QMPError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QMPError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise QMPError(f"QMP input member '{key}' is unexpected")
    if "execute" not in request:
        raise QMPError("QMP input lacks member 'execute'")
    name: str = request["execute"]
    command = _COMMANDS.get(name)
    if not client.negotiated and name != "qmp_capabilities":
        raise QMPError(
            "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound"
        )
    if command is None:
        raise QMPError(f"The command {name} has not been found", "CommandNotFound")
    args: dict[str, Any] = request.get("arguments", {})
    _check_args(command.params, args, extra=command.extra)
    if command.blocking:
        return await asyncio.to_thread(command.handler, client, args)
    return command.handler(client, args)
