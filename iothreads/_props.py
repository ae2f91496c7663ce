"""Typed int64 properties with QEMU's validation and messages.

Everything here is pure: it validates values and builds messages, and owns no
state.  The objects that hold the values (``EventLoopBase`` and ``IOThread``)
call these before they change anything, so a rejected write changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from ._errors import InvalidParameterType, InvalidParameterValue

INT64_MAX: Final = 2**63 - 1

#: Defaults of the event-loop-base properties (QEMU event-loop-base.c).  64 is
#: QEMU's THREAD_POOL_MAX_THREADS_DEFAULT.
EVENT_LOOP_BASE_DEFAULTS: Final[Mapping[str, int]] = {
    "aio-max-batch": 0,
    "thread-pool-min": 0,
    "thread-pool-max": 64,
}

#: Defaults of the properties only an IOThread has (QEMU iothread.c).  32768 is
#: QEMU's IOTHREAD_POLL_MAX_NS_DEFAULT on POSIX hosts.
IOTHREAD_DEFAULTS: Final[Mapping[str, int]] = {
    "poll-max-ns": 32768,
    "poll-grow": 0,
    "poll-shrink": 0,
    **EVENT_LOOP_BASE_DEFAULTS,
}

# QEMU's id_wellformed(): a letter first, then letters, digits, '-', '.', '_'.
_ID_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")


def wire_name(attr: str) -> str:
    """``poll_max_ns`` -> ``poll-max-ns``."""
    return attr.replace("_", "-")


def attr_name(wire: str) -> str:
    """``poll-max-ns`` -> ``poll_max_ns``."""
    return wire.replace("-", "_")


def check_int64(name: str, value: object) -> int:
    """Return *value* if it is a valid non-negative int64 property value.

    Raises:
        InvalidParameterType: *value* is not an ``int`` (a ``bool`` is not), or
            exceeds INT64_MAX (QEMU's visitor reports that as a type error too).
        InvalidParameterValue: *value* is negative.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value > INT64_MAX:
        raise InvalidParameterType(f"Invalid parameter type for '{name}', expected: integer")
    if value < 0:
        raise InvalidParameterValue(f"{name} value must be in range [0, {INT64_MAX}]")
    return int(value)


#: The most workers a pool may be given (thread-pool-min and thread-pool-max).
#: QEMU bounds them only by its C ints (INT_MAX), which a process can never
#: honour: each worker is a thread of this process.  32768 is Linux's default
#: pid_max, so no default-configured host can give one process more threads,
#: and the bound is the same on every host, so a configuration valid on one is
#: valid on all (docs/design.md, "Properties and validation").  What the host
#: refuses below it is reported by the pool, not stalled on.
THREAD_POOL_LIMIT: Final = 32768


def check_thread_pool_limits(min_threads: int, max_threads: int) -> None:
    """Reject the combinations QEMU's thread pool refuses, and limits above ours.

    Raises:
        InvalidParameterValue: either limit above ``THREAD_POOL_LIMIT`` (the
            message names it), ``min > max`` or ``max == 0`` (QEMU 7.2's
            util/async.c).
    """
    for name, value in (("thread-pool-max", max_threads), ("thread-pool-min", min_threads)):
        if value > THREAD_POOL_LIMIT:
            raise InvalidParameterValue(
                f"{name} value {value} is above {THREAD_POOL_LIMIT}, the most worker "
                f"threads a pool may have; use a value in [0, {THREAD_POOL_LIMIT}]"
            )
    if min_threads > max_threads or max_threads == 0:
        raise InvalidParameterValue("bad thread-pool-min/thread-pool-max values")


def check_id(value: object) -> str:
    """Return *value* if it is a well-formed QOM object id.

    Raises:
        InvalidParameterValue: *value* is not a string starting with a letter
            followed by letters, digits, ``-``, ``.`` or ``_``.
    """
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InvalidParameterValue("Parameter 'id' expects an identifier")
    return value


def check_properties(
    defaults: Mapping[str, int],
    current: Mapping[str, int],
    updates: Mapping[str, object],
    *,
    limits: bool = True,
) -> dict[str, int]:
    """Validate *updates* (wire names) against a type's *defaults*.

    Returns the complete new property set (``current`` with ``updates`` applied)
    without touching either input, so a caller can validate first and then
    commit atomically.  ``limits=False`` leaves the thread-pool pair for a
    later check (object_add checks a duplicate id in between, as QEMU does).

    Raises:
        InvalidParameterValue: a name the type does not have
            (``Parameter 'bogus' is unexpected``), a negative value, or thread
            pool limits QEMU refuses.
        InvalidParameterType: a value that is not an int64.
    """
    new = dict(current)
    for name, value in updates.items():
        if name not in defaults:
            raise InvalidParameterValue(f"Parameter '{name}' is unexpected")
        new[name] = check_int64(name, value)
    if "thread-pool-min" in defaults and limits:
        check_thread_pool_limits(new["thread-pool-min"], new["thread-pool-max"])
    return new
