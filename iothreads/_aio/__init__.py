"""One event loop's runtime: the cross-thread inbox, wake-ups, polling, poll handlers.

The modules, bottom to top: ``_window`` (the polling window's arithmetic),
``_wakeup`` (the wake-up channel), ``_handle`` (the handle of a submission),
``_inbox`` (the inbox, and the choice of the native core or the pure-Python
one), ``_poll_handlers`` (QEMU-style poll handlers), ``_selector_poller`` and
``_callback_poller`` (how a stdlib loop and any other loop poll and sleep),
``_context`` (``AioContext``, which ties them together).  The native core,
``_core`` (``native/``), has the inbox, the window and the callback poller
in C, behind the same interfaces.
"""

from __future__ import annotations

from . import _context, _poll_handlers
from ._context import *  # noqa: F403
from ._poll_handlers import *  # noqa: F403

__all__ = _context.__all__ + _poll_handlers.__all__
