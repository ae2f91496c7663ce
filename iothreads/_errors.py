"""Error types of the runtime.

Every error that a QMP monitor will report carries the QMP error class it maps
to (``qmp_class``), so the monitor never has to guess from a message.  The
messages themselves are worded as QEMU 7.2 words them (docs/design.md,
"Properties and validation").
"""

from __future__ import annotations

__all__ = [
    "DeviceNotFound",
    "IOThreadStopped",
    "IOThreadsError",
    "InvalidParameterType",
    "InvalidParameterValue",
    "ObjectNotFound",
    "PropertyNotFound",
]


class IOThreadsError(Exception):
    """Base of the errors raised for bad requests; maps to a QMP error class."""

    qmp_class = "GenericError"


class InvalidParameterValue(IOThreadsError, ValueError):
    """A value out of range, a bad id, a bad combination of values."""


class InvalidParameterType(IOThreadsError, TypeError):
    """A value of the wrong type (for int64 properties: not an int, or a bool)."""


class ObjectNotFound(IOThreadsError, LookupError):
    """``object_del`` of an id that is not under ``/objects``."""


class DeviceNotFound(IOThreadsError, LookupError):
    """A QOM path that names no object."""

    qmp_class = "DeviceNotFound"


class PropertyNotFound(IOThreadsError, LookupError):
    """A property name the object's type does not have."""


class IOThreadStopped(RuntimeError):
    """Work was submitted to an IOThread that is not running (never started, or stopped)."""
