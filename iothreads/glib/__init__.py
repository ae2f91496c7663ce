"""A pure-Python GLib-like main context, API after PyGObject's ``GLib`` module.

Code written as ``from gi.repository import GLib`` runs on
``from iothreads import glib as GLib`` for the parts implemented here:
:class:`MainContext`, :class:`MainLoop`, :class:`Source` (subclassable, with
:class:`Timeout` and :class:`Idle`), the module functions ``timeout_add``,
``timeout_add_seconds``, ``idle_add``, ``io_add_watch``, ``source_remove`` and
the constants.  Each module function also takes ``context=`` (an extension);
without it the global default context is used, as in GLib.

The semantics follow GLib's ``gmain.c``:

- one iteration is prepare -> query -> poll -> check -> dispatch; only the
  ready sources of the highest ready priority are dispatched;
- a callback returning a false value (``SOURCE_REMOVE``, ``None``) destroys its
  source; an exception from a callback is logged and also destroys it (as
  PyGObject treats it as ``False``);
- no dispatch of a source starts after ``destroy()`` has returned, whichever
  thread destroyed it; a dispatch already running is not interrupted;
- a source is not dispatched recursively (from a nested iteration run by its
  own callback) unless ``set_can_recurse(True)``;
- attaching, destroying, or changing a source from another thread wakes a
  context blocked in poll;
- ``MainLoop.run()`` in a second thread, while another thread owns the
  context, never iterates it: it waits, dispatching nothing, until it can own
  the context or its loop is quit (``g_main_loop_run``); ``iteration(False)``
  from such a thread returns ``False`` at once;
- ``finalize()`` runs once, after the source is destroyed and no dispatch of
  it is running, in the thread that did the last of the two.

Deviations, each deliberate:

- source ids are unique in the process, not only per context;
- a file-descriptor watch reports ``revents & (condition | ERR | HUP | NVAL)``
  (GLib's ``g_unix_fd_add`` rule), so a closed peer is always reported as HUP
  even to a watch that asked only for IN, instead of spinning unreported;
- ready timeouts of one priority are dispatched in deadline order (GLib uses
  attach order), so timeouts fire in deadline order even when an iteration
  finds several of them due;
- ``timeout_add_seconds`` does not round the first expiry to a whole second;
- a ``prepare()``/``check()`` that raises is logged and its source destroyed.

A foreign event loop can drive a context GLib-style (the caller must own it,
see :meth:`MainContext.acquire`): ``prepare()``, ``query()``, wait on the fds
from ``query()`` plus :meth:`MainContext.fileno` for at most the timeout, then
``check()`` and ``dispatch()``.  ``AsyncioDriver`` (in ``_driver``, not
exported) does this on an asyncio loop (stdlib or uvloop) for an IOThread
(docs/design.md, "The GLib context").

Threads: each function names the thread that runs it with ``@runs_in``
(``iothreads._runs_in``); ``OWNER`` is the thread that owns the context.

The package, one mechanism a module:

- ``_constants``: priorities, callback results, poll conditions;
- ``_checks``: argument checks;
- ``_poll``: the clock, poll(2), and the wake-up that cuts a poll short;
- ``_ownership``: which thread owns a context;
- ``_context``: the context, its thread defaults, its iteration;
- ``_source``: sources, and the stock ones;
- ``_mainloop``: the main loop;
- ``_functions``: the module functions;
- ``_driver``: the asyncio driver.

The names exported here are the ``__all__`` of the user-facing modules.
"""

from . import _constants, _context, _functions, _mainloop, _poll, _source
from ._constants import *  # noqa: F403
from ._context import *  # noqa: F403
from ._functions import *  # noqa: F403
from ._mainloop import *  # noqa: F403
from ._poll import *  # noqa: F403
from ._source import *  # noqa: F403

__all__ = (
    _constants.__all__
    + _context.__all__
    + _functions.__all__
    + _mainloop.__all__
    + _poll.__all__
    + _source.__all__
)
