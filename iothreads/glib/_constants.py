"""GLib's constants: priorities, callback results, poll conditions, and the units they use."""

from __future__ import annotations

import enum
import select
from typing import Final

__all__ = [
    "IO_ERR",
    "IO_HUP",
    "IO_IN",
    "IO_NVAL",
    "IO_OUT",
    "IO_PRI",
    "PRIORITY_DEFAULT",
    "PRIORITY_DEFAULT_IDLE",
    "PRIORITY_HIGH",
    "PRIORITY_HIGH_IDLE",
    "PRIORITY_LOW",
    "SOURCE_CONTINUE",
    "SOURCE_REMOVE",
    "IOCondition",
]

# GLib's G_PRIORITY_* values (gmain.h); lower is more urgent.
PRIORITY_HIGH: Final = -100
PRIORITY_DEFAULT: Final = 0
PRIORITY_HIGH_IDLE: Final = 100
PRIORITY_DEFAULT_IDLE: Final = 200
PRIORITY_LOW: Final = 300

SOURCE_CONTINUE: Final = True
SOURCE_REMOVE: Final = False


class IOCondition(enum.IntFlag):
    """Poll conditions; the values are the host's ``POLL*`` bits, as in GLib."""

    IN = select.POLLIN
    OUT = select.POLLOUT
    PRI = select.POLLPRI
    ERR = select.POLLERR
    HUP = select.POLLHUP
    NVAL = select.POLLNVAL


# PyGObject also exports the flags as module constants.
IO_IN: Final = IOCondition.IN
IO_OUT: Final = IOCondition.OUT
IO_PRI: Final = IOCondition.PRI
IO_ERR: Final = IOCondition.ERR
IO_HUP: Final = IOCondition.HUP
IO_NVAL: Final = IOCondition.NVAL

_ALL_CONDITIONS: Final = int(
    IOCondition.IN
    | IOCondition.OUT
    | IOCondition.PRI
    | IOCondition.ERR
    | IOCondition.HUP
    | IOCondition.NVAL
)
# poll(2) reports these whether or not they were asked for (GLib masks
# revents with events | G_IO_ERR | G_IO_HUP | G_IO_NVAL in g_main_context_check).
_ALWAYS_REPORTED: Final = int(IOCondition.ERR | IOCondition.HUP | IOCondition.NVAL)

# G_MAXINT: the "no source is ready" priority returned by prepare(), and the
# largest timeout in ms, which is also the most poll(2) takes (a C int).
_MAX_INT: Final = 2**31 - 1
_US_PER_MS: Final = 1000
_MS_PER_S: Final = 1000
