"""iothreads: asyncio-native IOThreads modelled on QEMU's."""

from __future__ import annotations

from ._errors import (
    DeviceNotFound,
    InvalidParameterType,
    InvalidParameterValue,
    IOThreadsError,
    IOThreadStopped,
    ObjectNotFound,
    PropertyNotFound,
)

__all__ = [
    "DeviceNotFound",
    "IOThreadStopped",
    "IOThreadsError",
    "InvalidParameterType",
    "InvalidParameterValue",
    "ObjectNotFound",
    "PropertyNotFound",
]
