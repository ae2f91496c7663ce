"""pytest fixtures for code that uses IOThreads, loaded through the ``pytest11`` entry point.

Installing iothreads makes these fixtures available to every test suite; a
suite that asks for none of them sees no difference (this module has no
autouse fixture and no hook).

* ``iothread``: a started :class:`~iothreads.IOThread` with a fresh id and
  default properties.
* ``iothread_factory``: ``iothread_factory(id=None, **options)`` starts one
  more, with the options of :class:`~iothreads.IOThread` (``poll_max_ns=0``...).
* ``iothread_loop``: the loop kind those IOThreads run, ``None`` (the
  runtime's choice: uvloop where installed, or ``IOTHREADS_LOOP``) unless a
  test parametrizes it: ``@pytest.mark.parametrize("iothread_loop",
  LOOP_KINDS)`` runs the test once per kind installed.
* ``thread_pool``: a :class:`~iothreads.ThreadPool` with default limits.
* ``iothreads_leak_timeout``: how long, in seconds, the check below waits for
  threads to finish before it calls them leaked (10); override the fixture to
  change it.

After the test, passed or failed, the IOThreads are stopped (each must then be
gone from ``/objects``) and the pool is shut down; then the threads and the
file descriptors that appeared since these fixtures were set up must be gone
too.  What is left is reported as an error of the test's teardown, naming it.
"""

from . import _fixtures
from ._fixtures import *  # noqa: F403

__all__ = _fixtures.__all__
