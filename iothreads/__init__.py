"""iothreads: asyncio-native IOThreads modelled on QEMU's.

Each :class:`IOThread` runs its own event loop (uvloop where installed) in a
dedicated thread; work reaches it from any thread or loop through
``call_soon_threadsafe``, ``run``, ``submit`` and ``run_sync``.  User objects
live under ``/objects/<id>`` and can be listed and tuned live, in process
(``query_iothreads``, ``qom_set``...) or through the QMP monitor.

The package's ``__all__`` is built from its modules' own lists, as asyncio's
is, so a name is public exactly when the module defining it says so.
"""

from __future__ import annotations

from . import _aio, _errors, _event_loop_base, _iothread, _objects, _pool, glib
from ._aio import *  # noqa: F403
from ._errors import *  # noqa: F403
from ._event_loop_base import *  # noqa: F403
from ._iothread import *  # noqa: F403
from ._objects import *  # noqa: F403
from ._pool import *  # noqa: F403

__all__ = (
    _aio.__all__
    + _errors.__all__
    + _event_loop_base.__all__
    + _iothread.__all__
    + _objects.__all__
    + _pool.__all__
    + ["glib"]
)
