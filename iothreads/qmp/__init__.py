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
* ``_server``: ``Monitor``, its listeners, one session per client;
* ``_client``: the small client the command line talks to a monitor with.
"""

from . import _server, _wire
from ._server import *  # noqa: F403
from ._wire import *  # noqa: F403

# _commands and _client add no public name: the commands are reached through
# a Monitor, and the client is the command line's (iothreads._cli imports it
# from iothreads.qmp._client).
__all__ = _wire.__all__ + _server.__all__
