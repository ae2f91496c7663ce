"""iothreads: asyncio-native IOThreads modelled on QEMU's.

Each :class:`IOThread` runs its own event loop (uvloop where installed) in a
dedicated thread; work reaches it from any thread or loop through
``call_soon_threadsafe``, ``run``, ``submit`` and ``run_sync``.  User objects
live under ``/objects/<id>`` and can be listed and tuned live, in process
(``query_iothreads``, ``qom_set``...) or through the QMP monitor.
"""

from __future__ import annotations

from . import glib
from ._aio import AioContext, AioContextStatistics, PollHandler
from ._errors import (
    DeviceNotFound,
    InvalidParameterType,
    InvalidParameterValue,
    IOThreadsError,
    IOThreadStopped,
    ObjectNotFound,
    PropertyNotFound,
)
from ._iothread import EventLoopBase, IOThread, MainLoop, current_iothread, in_iothread
from ._objects import (
    IOThreadInfo,
    ObjectPropertyInfo,
    ObjectTypeInfo,
    iothread_by_id,
    iothread_create,
    iothread_destroy,
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
from ._pool import ThreadPool, ThreadPoolStatistics

__all__ = [
    "AioContext",
    "AioContextStatistics",
    "DeviceNotFound",
    "EventLoopBase",
    "IOThread",
    "IOThreadInfo",
    "IOThreadStopped",
    "IOThreadsError",
    "InvalidParameterType",
    "InvalidParameterValue",
    "MainLoop",
    "ObjectNotFound",
    "ObjectPropertyInfo",
    "ObjectTypeInfo",
    "PollHandler",
    "PropertyNotFound",
    "ThreadPool",
    "ThreadPoolStatistics",
    "current_iothread",
    "glib",
    "in_iothread",
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
