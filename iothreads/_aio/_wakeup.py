"""The wake-up channel: how another thread ends an event loop's sleep.

An eventfd on Linux (one descriptor, and a read tells how many wake-ups were
written since the last one), a non-blocking pipe elsewhere.  The loop watches
the read end with ``add_reader``; producers write to it only while the loop
is blocking or about to block (docs/design.md, "Wake-up suppression").
"""

from __future__ import annotations

import os
import threading

from .._runs_in import ANY, ThreadRole, runs_in

__all__ = ["WakeupChannel"]

#: The thread whose loop watches the read end.
WATCHER = ThreadRole("the thread that watches the channel")


class WakeupChannel:
    """A descriptor pair one loop sleeps on and any thread writes to."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self._rfd = self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - exercised on non-Linux hosts only
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
        # Guards the descriptors against close(): a producer that decided to
        # wake the loop may write just as the loop closes, and the number
        # could by then belong to an unrelated file.  Only writes and
        # close() take it, and they make a system call anyway.
        self._fd_lock = threading.Lock()
        # Written since the watcher last drained (guarded by _flag_lock): one
        # write is enough until then.  The watcher can take a while to get
        # the GIL after its sleep ends, and producers would otherwise each
        # pay a system call meanwhile.
        self._pending = False
        # Guards _pending: a producer's test-and-set against the watcher's
        # clear.  A lock of its own, not _fd_lock: the write wakes the
        # watcher, which on the writer's CPU may run at once, and would find
        # _fd_lock still held by the writer it preempted, and wait for it
        # (docs/design.md, "The wake-up channel's lock, on one CPU").  The
        # native core keeps the flag in an atomic.
        self._flag_lock = threading.Lock()

    def fileno(self) -> int:
        """The descriptor to watch for readability; -1 once closed."""
        return self._rfd

    @runs_in(ANY)
    def wake(self) -> None:
        """Make the descriptor readable; nothing happens once closed."""
        with self._flag_lock:
            if self._pending:
                return
            self._pending = True
        self._write()

    def _write(self) -> None:
        """One write, unless closed."""
        with self._fd_lock:
            if self._wfd < 0:
                return
            try:
                if self._wfd == self._rfd:
                    os.eventfd_write(self._wfd, 1)
                else:  # pragma: no cover - non-Linux
                    os.write(self._wfd, b"\0")
            except BlockingIOError:
                pass  # the channel is full, so a wake-up is pending already

    @runs_in(WATCHER)
    def drain(self) -> int:
        """Consume the pending wake-ups; return how many were written.

        The flag is cleared after the read: a producer that found it set
        queued its work before, and the drain's caller runs the inbox after
        this.  (Cleared before the read, a write made between the two would
        be read here and leave the flag set with nothing left to read.)  And
        only after a read that took a write: a producer sets the flag, then
        writes, and a read in between takes nothing; cleared then, that
        write would land with the flag clear, never to be read, and the
        descriptor would wake the watcher at every look until the next
        producer's write.  With the flag clear nothing was written: no
        system call (a write landing after that look set the flag first, and
        the watcher drains it on its next pass).
        """
        if not self._pending:
            return 0
        try:
            count = self._read()
            if count:
                with self._flag_lock:
                    self._pending = False
        except BaseException:
            # Raised between the read's system call and the clear (a
            # KeyboardInterrupt, on the main thread): whether the read took
            # the write is lost.  A flag left set over an empty channel would
            # keep every producer from writing again, so while it is set, one
            # more write keeps it true to its meaning.
            with self._flag_lock:
                if self._pending:
                    self._write()
            raise
        return count

    def _read(self) -> int:
        if self._wfd == self._rfd:
            try:
                return os.eventfd_read(self._rfd)
            except BlockingIOError:
                return 0
        count = 0  # pragma: no cover - non-Linux
        while True:  # pragma: no cover - non-Linux
            try:
                data = os.read(self._rfd, 4096)
            except BlockingIOError:
                return count
            if not data:
                return count
            count += len(data)

    @runs_in(ANY)
    def close(self) -> None:
        """Close the descriptors; later wake-ups do nothing."""
        with self._fd_lock:
            if self._rfd < 0:
                return
            os.close(self._rfd)
            if self._wfd != self._rfd:  # pragma: no cover - non-Linux
                os.close(self._wfd)
            self._rfd = self._wfd = -1
