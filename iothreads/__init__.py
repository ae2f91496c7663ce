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

# Straight from the modules that define the names, not through the _aio and
# _pool packages: mypy follows a computed __all__ one level deep only
# (python/mypy#15300), and this one is what users' type checkers read.
from . import _errors, _event_loop_base, _iothread, _objects, glib
from ._aio import _context, _poll_handlers
from ._aio._context import *  # noqa: F403
from ._aio._poll_handlers import *  # noqa: F403
from ._errors import *  # noqa: F403
from ._event_loop_base import *  # noqa: F403
from ._iothread import *  # noqa: F403
from ._objects import *  # noqa: F403
from ._pool import _thread_pool
from ._pool._thread_pool import *  # noqa: F403

__all__ = (
    _context.__all__
    + _poll_handlers.__all__
    + _errors.__all__
    + _event_loop_base.__all__
    + _iothread.__all__
    + _objects.__all__
    + _thread_pool.__all__
    + ["glib"]
)
