"""A QMP-compatible monitor: QEMU's machine protocol over a unix (or TCP) socket.

``Monitor`` speaks QMP as QEMU 7.2 does, so ``qemu.qmp`` and ``qmp-shell``
work against it unchanged: the greeting, capabilities negotiation, requests
``{"execute": ..., "arguments": ..., "id": ...}`` and ``{"return": ...}`` /
``{"error": {"class": ..., "desc": ...}}`` replies with the ``id`` echoed.
The commands manage the object tree through the public objects API only
(``object_add``, ``qom_set``, ``query_iothreads``...); this package is the
only one that knows JSON.

* ``_wire``: the byte stream cut into JSON texts, read and written as QEMU does;
* ``_commands``: the command table, argument checks, the dispatch of a request;
* ``_session``: one client's session, and the bounds that keep it fair;
* ``_server``: ``Monitor`` and its listeners;
* ``_client``: the command line's side (``query``, ``set``), which speaks QMP
  through ``qemu.qmp``, the QEMU project's client library, so that it works
  against QEMU's monitors too; not public.
"""

from . import _server, _wire
from ._server import *  # noqa: F403
from ._wire import *  # noqa: F403

# _commands adds no public name: the commands are reached through a Monitor.
__all__ = _wire.__all__ + _server.__all__
