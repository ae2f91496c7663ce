"""Mutation testing of the concurrency core, with cosmic-ray, bounded in time.

    python tools/mutation.py [--minutes N] [--sessions DIR] [GROUP ...]

Each group mutates a few modules of the core (the inbox and wake-up protocol,
the polling window and the pollers, the call protocol, the worker pool) one
mutation at a time and runs the tests that hold those modules; a mutant that
no test kills *survives*.  A survivor is either killed by a new test, or
argued equivalent below (``EQUIVALENT``: the mutated code behaves the same in
every state the program can reach, with the reason).  The script prints each
group's score and every survivor not argued equivalent, and exits 1 if there
is any.

The work happens in a copy of the working tree (cosmic-ray writes each
mutant to disk), in the interpreter running this script, which needs the
``test`` extra (cosmic-ray is in it).  Mutants of arithmetic on bit
operators and powers are left out: the core has none that a test could tell
apart from noise, and they would multiply the run time.

With ``--sessions DIR`` a run can be resumed: each group's cosmic-ray
session is kept in DIR (``GROUP.sqlite``, with ``GROUP.sha256``, a hash of
the mutated modules and the operators left out), and results are written
to it as they come, so a run stopped by its time budget, or killed, loses
at most the mutant it was running.  A later run reuses the session while
the hash matches (else it starts afresh) and runs only the mutants not yet
run and the survivors not argued equivalent, which new tests may now kill
(``--minutes 0`` only reports the session as it stands).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    modules: tuple[str, ...]
    #: fastest first: each mutant stops at its first failing test (-x)
    tests: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "inbox": Group(
        (
            "iothreads/_aio/_context.py",
            "iothreads/_aio/_inbox.py",
            "iothreads/_aio/_wakeup.py",
            "iothreads/_aio/_handle.py",
        ),
        (
            "tests/test_inbox.py",
            "tests/test_context.py",
            "tests/test_aio.py",
            "tests/test_iothread.py",
            "tests/test_stop_races.py",
            "tests/test_wakeups.py",
            "tests/test_main_loop_polling.py",
            "tests/test_fork.py",
        ),
    ),
    "window": Group(
        (
            "iothreads/_aio/_window.py",
            "iothreads/_aio/_selector_poller.py",
            "iothreads/_aio/_callback_poller.py",
            "iothreads/_aio/_poll_handlers.py",
        ),
        (
            "tests/test_pollers.py",
            "tests/test_polling.py",
            "tests/test_aio.py",
            "tests/test_wakeups.py",
            "tests/test_main_loop_polling.py",
        ),
    ),
    "call": Group(
        ("iothreads/_call.py", "iothreads/_shutdown.py"),
        (
            "tests/test_shutdown.py",
            "tests/test_call_outcomes.py",
            "tests/test_iothread.py",
            "tests/test_stop_races.py",
            "tests/test_aio.py",
            "tests/test_main_loop_polling.py",
            "tests/test_base_exceptions.py",
        ),
    ),
    "pool": Group(
        (
            "iothreads/_pool/_thread_pool.py",
            "iothreads/_pool/_worker.py",
            "iothreads/_pool/_spawner.py",
            "iothreads/_pool/_requests.py",
        ),
        ("tests/pool",),
    ),
}

#: Operators left out (see the module doc).
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_.*_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod)",
    r"core/ReplaceBinaryOperator_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|Mod)_.*",
]

#: Why "is" and "==" agree on the wake-up channel's two descriptors.
_ONE_DESCRIPTOR = (
    "the two descriptors are one int object when equal (an eventfd: one assignment"
    " binds both, as does close()'s -1) and unequal numbers otherwise (a pipe)"
)

#: Why a call's cancel_requested, once the caller asked, changes nothing seen.
_CANCELLED_OUTCOME = (
    "cancel_requested is set only after the caller cancelled, which cancelled the"
    " outcome at once (the io.submit future; the future io.run's cancelled task"
    " awaited): _finish's IOThreadStopped in place of the cancellation then goes"
    " to a cancelled outcome, which drops it as it drops the cancellation"
)

#: Why importing a module's annotation-only names at run time changes nothing.
_ANNOTATIONS_ONLY = (
    "the names it imports appear in annotations only, which stay strings (from"
    " __future__ import annotations), and importing them at run time makes no cycle"
)

#: Why "> 0" and "!= 0" (or "<= 0" and "== 0") agree on a remainder.
_NOT_NEGATIVE = "a remainder of division by the positive GUARD_STEPS is never negative"

#: Why ">" and "!=" agree on the switch counter.
_COUNTER_GROWS = (
    "the counter of the thread's context switches only grows: a reading differs"
    " from an earlier one exactly when it is greater"
)

#: Why comparing the native spin's outcome with "<" or ">=" agrees with "!=" or "==".
_SHARED_IS_LAST = (
    "the native spin returns 0 to 4 (spin.c's enum) and 4 returned above, so"
    " here NATIVE_SPIN_SHARED, 3, is the greatest: the outcome is not 0, so"
    " '< 3' is '!= 3' (and, below, neither 1 nor 2, so '>= 3' is '== 3')"
)

#: Why a backoff of -1 agrees with one of 0.
_BACKOFF_FROM_ZERO = (
    "the backoff is read only through max(1, 2 * backoff), where 0 and -1 both"
    " give 1 (the +1 mutant gives 2 and is killed)"
)

#: Why ">=" agrees with "==" on the outcome 4.
_CAUGHT_SHARED_IS_LAST = (
    "the native spin returns 0 to 4 (spin.c's enum): NATIVE_SPIN_CAUGHT_SHARED,"
    " 4, is the greatest, so '>= 4' is '== 4'"
)

#: Why "is" agrees with "==" on the native spin's outcome.
_SMALL_INTS = (
    "the outcome and the NATIVE_SPIN_* constants are ints from 0 to 4, each of"
    " which CPython keeps one object of"
)

#: Why "<", "!=" and "is not" agree on a spin step's end and its deadline.
_STEP_END = (
    "step_end is min(deadline, ...), never above the deadline, so '<' is '!=';"
    " and min() returns its first argument among equals, the deadline itself,"
    " so 'is not' is '!=' too"
)

#: Why a mutant of the eager start's version gate survives a run on 3.12+.
_VERSION_GATE = (
    "a version gate, run on one interpreter: the mutant takes the branch the"
    " gate takes there ('>' agrees everywhere: sys.version_info has five items,"
    " so it never equals (3, 12)); the others let 3.11 take the eager branch,"
    " and there every coroutine call fails (3.11's Task has no eager_start:"
    " checked by hand against the suite on 3.11), or differ on 3.12 alone"
    " ((3, 13))"
)

#: Why == and "is" agree on a request's state.
_ENUM_MEMBER = "RequestState is a plain Enum: a member equals only itself, so == is 'is'"

#: Survivors argued equivalent: (module, operator, the mutated line's text,
#: the mutation's column) -> why no reachable state tells the mutant apart.
#: Where the same text recurs at the same column, "module::function" names
#: the function the mutation is in.
EQUIVALENT: dict[tuple[str, str, str, int], str] = {
    (
        "iothreads/_aio/_callback_poller.py",
        "core/NumberReplacer",
        "self._backoff = 0",
        24,
    ): _BACKOFF_FROM_ZERO,
    (
        "iothreads/_aio/_callback_poller.py",
        "core/NumberReplacer",
        "self._backoff = 0",
        28,
    ): _BACKOFF_FROM_ZERO,
    (
        "iothreads/_aio/_context.py",
        "core/NumberReplacer",
        "self._inbox.run(0)",
        32,
    ): "close() runs passes until nothing is pending: passes of one item run the same items",
    (
        "iothreads/_aio/_selector_poller.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        'if getattr(self.loop, "_selector", None) is self:',
        49,
    ): (
        "selectors define no __eq__, so == is identity between the poller and"
        " the loop's selector (or None)"
    ),
    (
        "iothreads/_aio/_window.py",
        "core/ReplaceComparisonOperator_Lt_NotEq",
        "elif block_ns < self.poll_max_ns:",
        22,
    ): "block_ns > poll_max_ns took the branch above, so here < and != agree",
    (
        "iothreads/_aio/_context.py",
        "core/NumberReplacer",
        "def spin(self, deadline_ns: int, fd: int = -1) -> bool:",
        48,
    ): "any negative descriptor is none to both spins (each asks fd >= 0), so -1 and -2 agree",
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceBinaryOperator_Mul_Div",
        "def end_polling(self, started_ns: int, *, io_ready: bool = False) -> bool:",
        43,
    ): "'/' in place of '*' leaves io_ready a keyword, and every caller passes it so",
    (
        "iothreads/_aio/_inbox.py",
        "core/ReplaceBreakWithContinue",
        "break  # a producer that raced close() took its handle back",
        16,
    ): (
        "the queue runs empty in a pass only in the shutdown drain, as a producer that"
        " raced close() takes its handle back; what is appended after that is another"
        " such producer's, which takes it back unless a pass ran it, and drain() runs"
        " passes until the queue is empty: with break or continue each such handle is"
        " run or refused, the same outcomes, and nothing else is queued then"
    ),
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceUnaryOperator_USub_Invert",
        "def spin(self, deadline_ns: int, fd: int = -1) -> bool:",
        47,
    ): "~1 is -2: any negative descriptor is none to both spins (each asks fd >= 0)",
    (
        "iothreads/_aio/_inbox.py::close",
        "core/ReplaceTrueWithFalse",
        "self._notify_me = True",
        26,
    ): (
        "after close() every handle is run by the shutdown drain or taken"
        " back by its producer, neither of which waits for a wake-up: the flag only"
        " decides whether a producer racing close() writes a needless one"
    ),
    (
        "iothreads/_aio/_wakeup.py",
        "core/NumberReplacer",
        "data = os.read(self._rfd, 4096)",
        42,
    ): "the pipe is read until it is empty, so the chunk size leaves the count alone",
    (
        "iothreads/_aio/_wakeup.py",
        "core/ReplaceComparisonOperator_Eq_Is",
        "if self._wfd == self._rfd:",
        29,
    ): _ONE_DESCRIPTOR,
    (
        "iothreads/_aio/_wakeup.py",
        "core/ReplaceComparisonOperator_Eq_Is",
        "if self._wfd == self._rfd:",
        21,
    ): _ONE_DESCRIPTOR,
    (
        "iothreads/_aio/_wakeup.py",
        "core/ReplaceComparisonOperator_NotEq_IsNot",
        "if self._wfd != self._rfd:  # pragma: no cover - non-Linux",
        25,
    ): _ONE_DESCRIPTOR,
    (
        "iothreads/_call.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        '"the caller\'s loop", lambda call: asyncio._get_running_loop() is call.caller_loop',
        66,
    ): "an event loop (stdlib or uvloop) defines no equality: == is 'is'",
    (
        "iothreads/_call.py",
        "core/ReplaceComparisonOperator_GtE_NotEq",
        "if sys.version_info >= (3, 12) and loop.get_task_factory() is None:",
        24,
    ): _VERSION_GATE,
    (
        "iothreads/_call.py",
        "core/ReplaceComparisonOperator_GtE_Gt",
        "if sys.version_info >= (3, 12) and loop.get_task_factory() is None:",
        24,
    ): _VERSION_GATE,
    (
        "iothreads/_call.py",
        "core/ReplaceComparisonOperator_GtE_IsNot",
        "if sys.version_info >= (3, 12) and loop.get_task_factory() is None:",
        24,
    ): _VERSION_GATE,
    (
        "iothreads/_call.py",
        "core/NumberReplacer",
        "if sys.version_info >= (3, 12) and loop.get_task_factory() is None:",
        28,
    ): _VERSION_GATE,
    (
        "iothreads/_call.py",
        "core/NumberReplacer",
        "if sys.version_info >= (3, 12) and loop.get_task_factory() is None:",
        31,
    ): _VERSION_GATE,
    (
        "iothreads/_call.py::cancel",
        "core/ReplaceTrueWithFalse",
        "self.cancel_requested = True",
        32,
    ): _CANCELLED_OUTCOME,
    (
        "iothreads/_call.py::_withdrawn",
        "core/ReplaceTrueWithFalse",
        "self.cancel_requested = True",
        32,
    ): _CANCELLED_OUTCOME,
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceBinaryOperator_Mul_Div",
        "def _spawn_locked(self, *, idle: bool) -> bool:",
        28,
    ): "'/' in place of '*' leaves idle a keyword, and every caller passes it so",
    (
        "iothreads/_pool/_spawner.py",
        "core/AddNot",
        "if TYPE_CHECKING:",
        3,
    ): _ANNOTATIONS_ONLY,
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceBinaryOperator_Mul_Div",
        "def _new_worker_locked(self, *, idle: bool) -> Worker:",
        33,
    ): "'/' in place of '*' leaves idle a keyword, and every caller passes it so",
    (
        "iothreads/_pool/_requests.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "assert self.state is RequestState.QUEUED",
        26,
    ): _ENUM_MEMBER,
    (
        "iothreads/_pool/_spawner.py",
        "core/ReplaceComparisonOperator_IsNot_NotEq",
        "if self._thread is not threading.current_thread():",
        32,
    ): "a thread defines no equality: != is 'is not'",
    (
        "iothreads/_call.py",
        "core/AddNot",
        "if TYPE_CHECKING:",
        3,
    ): _ANNOTATIONS_ONLY,
    (
        "iothreads/_pool/_worker.py",
        "core/AddNot",
        "if TYPE_CHECKING:",
        3,
    ): _ANNOTATIONS_ONLY,
    (
        "iothreads/_shutdown.py",
        "core/NumberReplacer",
        "done, _ = await asyncio.wait([waited], timeout=max(0.0, left))",
        63,
    ): (
        "max(-1.0, left) differs only where left < -1, where asyncio.wait gets a"
        " timeout already past, as with 0: call_later's timer is due at once"
        " (max(1.0, left) is killed by tests/test_shutdown.py)"
    ),
    (
        "iothreads/_pool/_spawner.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if self._thread is thread:",
        32,
    ): "a thread defines no equality: == is 'is'",
    (
        "iothreads/_shutdown.py",
        "core/ReplaceComparisonOperator_IsNot_NotEq",
        "return [t for t in asyncio.all_tasks(loop) if t is not me]",
        56,
    ): "a task defines no equality: != is 'is not'",
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if request.state is RequestState.QUEUED:",
        29,
    ): _ENUM_MEMBER,
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "elif request.state is RequestState.RUNNING:",
        31,
    ): _ENUM_MEMBER,
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if request.state is RequestState.RUNNING:",
        25,
    ): _ENUM_MEMBER,
    (
        "iothreads/_pool/_worker.py",
        "core/ReplaceBinaryOperator_Mul_Div",
        "def __init__(self, pool: WorkerPool, name: str, *, starts_idle: bool) -> None:",
        52,
    ): "'/' in place of '*' leaves starts_idle a keyword, and every caller passes it so",
    (
        "iothreads/_pool/_worker.py::WorkerPool",
        "core/RemoveDecorator",
        "@property",
        4,
    ): (
        "WorkerPool is a Protocol for the type checker alone: no class derives from"
        " it and nothing tests isinstance() against it, so none of its members is"
        " ever looked up (the pool's own idle_timeout is a property of ThreadPool)"
    ),
    (
        "iothreads/_pool/_worker.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "return threading.current_thread() is worker.thread",
        38,
    ): "a thread defines no equality: == is 'is'",
    (
        "iothreads/_pool/_spawner.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if thread is None or thread is me:",
        40,
    ): "a thread defines no equality: == is 'is'",
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_IsNot_NotEq",
        "if thread is not me and not mutual:",
        26,
    ): "a thread defines no equality: != is 'is not'",
    (
        "iothreads/_pool/_spawner.py::__init__",
        "core/ReplaceFalseWithTrue",
        "self._up = False  # its start() returned",
        19,
    ): (
        "join() reads _up only while a spawner thread exists, and"
        " make_thread_locked, which makes every one, sets _up to False first:"
        " the value given here is never read"
    ),
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_Eq_LtE",
        "if self._nthreads == 0:",
        30,
    ): (
        "_nthreads counts workers that exist or are being started, each"
        " subtracted once (_exit_locked, when it is marked retired): it is never"
        " negative, so <= 0 is == 0"
    ),
    (
        "iothreads/_call.py::_withdrawn",
        "core/ReplaceTrueWithFalse",
        "self._finish(None, None, cancelled=True)  # releases the waiting caller",
        43,
    ): (
        "a call is abandoned only by a caller cancelled while awaiting the outcome"
        " future, which that cancellation cancelled (the task cancels the future"
        " it waits on): _resolve then drops whatever outcome comes, cancelled or"
        " not, and only releases the waiting caller, as it does for either"
    ),
    (
        "iothreads/_call.py",
        "core/ReplaceAndWithOr",
        "if future.cancelled() and not self.cancel_requested:",
        30,
    ): (
        "an io.submit call's cancel_requested is set only by cancel(), which only"
        " this done-callback schedules, and it runs once: the second operand is"
        " always true here; 'or' only adds, after an outcome set in the IOThread,"
        " a cancel() on its loop that marks a finished call and cancels no task"
        " (the call's is done, or there is none; a stopped IOThread refuses it,"
        " which is caught)"
    ),
    (
        "iothreads/_pool/_spawner.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if self._thread is thread:",
        28,
    ): "a thread defines no equality: == is 'is'",
    (
        "iothreads/_pool/_spawner.py::SpawnerPool",
        "core/RemoveDecorator",
        "@property",
        4,
    ): (
        "SpawnerPool is a Protocol for the type checker alone: no class derives"
        " from it and nothing tests isinstance() against it, so none of its"
        " members is ever looked up (the pool's own name is a property of ThreadPool)"
    ),
    (
        "iothreads/_pool/_spawner.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "return threading.current_thread() is self._thread",
        42,
    ): "a thread defines no equality: == is 'is'",
    (
        "iothreads/_pool/_thread_pool.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "return worker is not None and worker.pool is self",
        50,
    ): "a pool defines no equality (nor does ThreadPoolExecutor): == is 'is'",
    (
        "iothreads/_pool/_thread_pool.py::_arrived_locked",
        "core/ReplaceFalseWithTrue",
        "worker.summoned = False",
        30,
    ): (
        "only _start_failed calls it, for a worker whose thread never ran and that"
        " is on neither the idle stack nor the spawner's pending list any more (the"
        " spawner took it off to start it, or start() cleared the list): the only"
        " readers of its flags (_take_locked, _idle_wait, _coming_locked) never see"
        " it again; _waking, decremented beside the flag, is what counts"
    ),
    (
        "iothreads/_pool/_thread_pool.py::_arrived_locked",
        "core/ReplaceFalseWithTrue",
        "worker.starting = False",
        30,
    ): (
        "as worker.summoned above: the worker's thread never ran and nothing reads"
        " its flags again; _starting, decremented beside the flag, is what counts"
    ),
    (
        "iothreads/_pool/_thread_pool.py::_exit_locked",
        "core/ReplaceFalseWithTrue",
        "worker.idle = False",
        26,
    ): (
        "_exit_locked finds a worker idle only when _expire_locked calls it, in the"
        " worker's own thread, which then exits without reading the flag again, or"
        " when _start_failed does, for a worker whose thread never ran; either is"
        " then off the idle stack (removed here) and off the spawner's pending list,"
        " the only places the flag is read for"
    ),
    (
        "iothreads/_aio/_poll_handlers.py",
        "core/ReplaceBinaryOperator_Mul_Div",
        "def end_phase(self, *, recheck: bool = True) -> None:",
        24,
    ): "'/' in place of '*' leaves recheck a keyword, and every caller passes it so",
    (
        "iothreads/_aio/_poll_handlers.py",
        "core/ReplaceComparisonOperator_IsNot_NotEq",
        "self._handlers = tuple(h for h in self._handlers if h is not handler)",
        66,
    ): "PollHandler defines no equality: != is 'is not'",
    (
        "iothreads/_aio/_selector_poller.py",
        "core/ReplaceComparisonOperator_Is_Eq",
        "if any(key is self._wake_key for key, _ in events):",
        19,
    ): (
        "a key equals the wake-up channel's only if it has the same descriptor and"
        " the same data (the reader's handle, equal only to itself): the same"
        " registration, whose key the selector keeps until the context closes"
    ),
    (
        "iothreads/_aio/_context.py",
        "core/NumberReplacer",
        "before = switches() if switches is not None else 0",
        57,
    ): "the value taken without a counter is never read: every reading of before asks for one",
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_NotEq_Gt",
        "shared = switches is not None and steps % GUARD_STEPS != 0 and switches() != before",
        70,
    ): _NOT_NEGATIVE,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_Eq_LtE",
        "shared = switches is not None and steps % GUARD_STEPS == 0 and switches() != before",
        70,
    ): _NOT_NEGATIVE,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_NotEq_Gt",
        "shared = switches is not None and steps % GUARD_STEPS != 0 and switches() != before",
        90,
    ): _COUNTER_GROWS,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_NotEq_Gt",
        "shared = switches is not None and steps % GUARD_STEPS == 0 and switches() != before",
        90,
    ): _COUNTER_GROWS,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_NotEq_Lt",
        "if outcome and outcome != NATIVE_SPIN_SHARED:",
        39,
    ): _SHARED_IS_LAST,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_NotEq_IsNot",
        "if outcome and outcome != NATIVE_SPIN_SHARED:",
        39,
    ): _SMALL_INTS,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_Eq_GtE",
        "if outcome == NATIVE_SPIN_CAUGHT_SHARED:",
        27,
    ): _CAUGHT_SHARED_IS_LAST,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_Eq_Is",
        "if outcome == NATIVE_SPIN_CAUGHT_SHARED:",
        27,
    ): _SMALL_INTS,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_Eq_GtE",
        "shared = outcome == NATIVE_SPIN_SHARED and self.spin_guard",
        33,
    ): _SHARED_IS_LAST,
    (
        "iothreads/_aio/_context.py",
        "core/ReplaceComparisonOperator_Eq_Is",
        "shared = outcome == NATIVE_SPIN_SHARED and self.spin_guard",
        33,
    ): _SMALL_INTS,
    (
        "iothreads/_aio/_callback_poller.py",
        "core/ReplaceComparisonOperator_Lt_NotEq",
        "if not (caught or context.cpu_shared) and step_end < deadline:",
        59,
    ): _STEP_END,
    (
        "iothreads/_aio/_callback_poller.py",
        "core/ReplaceComparisonOperator_Lt_IsNot",
        "if not (caught or context.cpu_shared) and step_end < deadline:",
        59,
    ): _STEP_END,
    (
        "iothreads/_aio/_window.py",
        "core/ExceptionReplacer",
        "except ImportError:  # pragma: no cover - Windows, where the suite does not run",
        11,
    ): (
        "resource imports on every POSIX system: the clause is Windows', where the"
        " suite does not run, and a mutant of it is never reached"
    ),
}

#: Survivors argued equivalent wherever they are: (operator, the start of the
#: mutated line) -> why.
EQUIVALENT_EVERYWHERE: dict[tuple[str, str], str] = {
    ("core/RemoveDecorator", "@abstractmethod"): (
        "it only keeps the abstract class itself from being instantiated, which no"
        " code does: each subclass defines the method"
    ),
    ("core/RemoveDecorator", "@runs_in("): (
        "the thread marker is only a label outside asyncio's debug mode, and in"
        " it a check that correct code never trips: no test can tell it is gone"
    ),
}


def _equivalent(survivor: dict[str, str]) -> bool:
    rest = (survivor["operator"], survivor["text"], int(survivor["column"]))
    where = (survivor["module"], f"{survivor['module']}::{survivor['definition']}")
    return any((w, *rest) in EQUIVALENT for w in where) or any(
        survivor["operator"] == operator and survivor["text"].startswith(start)
        for operator, start in EQUIVALENT_EVERYWHERE
    )


#: Seconds one mutant's tests may take before it counts as killed by timeout
#: (a mutant that makes the loop sleep forever is caught by the tests' own
#: bounded waits, 10 s each, well within this).  It ends the hangs that
#: TEST_TIMEOUT does not see, outside any test: pytest-asyncio's runner,
#: closed after the last test of its scope, waiting for a task a mutant left
#: running.  Each such mutant costs this long; a group's tests all pass in
#: well under a tenth of it.
MUTANT_TIMEOUT = 60.0

#: Seconds one test may take under a mutant (the project's is 60), and
#: pytest-timeout's thread method, which ends the whole process then: a
#: mutant that hangs a stop leaves a thread no signal ends, which kept the
#: process alive until MUTANT_TIMEOUT.  A test takes well under a second
#: when it passes, so 30 s mistakes no slow machine for a hang.
TEST_TIMEOUT = 30

#: pytest, then an exit that does not join the threads left running: a
#: mutant's failed test may leave a hung IOThread behind, which would hold
#: the process to MUTANT_TIMEOUT.  (A thread left behind by a passing test
#: fails the test anyway: tests/conftest.py's no_leaks.)
_PYTEST_THEN_EXIT = (
    "import os, sys, pytest; code = pytest.main(); "
    "sys.stdout.flush(); sys.stderr.flush(); os._exit(int(code))"
)


def _config(group: Group, python: str) -> str:
    tests = " ".join(group.tests)
    modules = ", ".join(f'"{m}"' for m in group.modules)
    excluded = ", ".join(json.dumps(op) for op in EXCLUDED_OPERATORS)
    command = (
        f"{python} -c '{_PYTEST_THEN_EXIT}' -x -q -p no:cacheprovider"
        f" --timeout={TEST_TIMEOUT} --timeout-method=thread {tests}"
    )
    return f"""\
[cosmic-ray]
module-path = [{modules}]
timeout = {MUTANT_TIMEOUT}
excluded-modules = []
test-command = "{command}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = [{excluded}]
"""


def _copy_tree(into: Path) -> None:
    """The working tree as git sees it (tracked and untracked, not ignored),
    and the native core built in it for this interpreter, if it is: the
    tests then run every behaviour on both inboxes, as they do in the tree
    (the C sources are never mutated, so the build stands for the copy)."""

    def git_files(*options: str) -> list[bytes]:
        return subprocess.run(
            ["git", "ls-files", "-z", *options], cwd=ROOT, check=True, capture_output=True
        ).stdout.split(b"\0")

    built = [
        name
        for name in git_files("--others", "--ignored", "--exclude-standard", "--", "iothreads")
        if os.fsdecode(name).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    ]
    for name in filter(None, [*git_files("--cached", "--others", "--exclude-standard"), *built]):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = into / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


#: The output recorded for a mutant not run since EQUIVALENT_EVERYWHERE
#: argues it equivalent: it counts as a survivor argued equivalent.
ARGUED_EVERYWHERE = "argued equivalent everywhere: not run"


def _skip_argued_everywhere(work: Path, session: Path) -> None:
    """Mark the mutants EQUIVALENT_EVERYWHERE argues equivalent as not to be
    run: each would run the group's every test for nothing (a @runs_in
    removed, say, is one per function)."""
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session)) as db:
        for item in list(db.pending_work_items):
            for mutation in item.mutations:
                row = mutation.start_pos[0]
                text = (work / mutation.module_path).read_text().splitlines()[row - 1].strip()
                if any(
                    mutation.operator_name == operator and text.startswith(start)
                    for operator, start in EQUIVALENT_EVERYWHERE
                ):
                    db.set_result(
                        item.job_id,
                        WorkResult(output=ARGUED_EVERYWHERE, worker_outcome=WorkerOutcome.SKIPPED),
                    )
                    break


def _survivors(work: Path, session: Path) -> tuple[int, int, list[dict[str, str]]]:
    """(mutants, done, survivors) of a session, each survivor with its line."""
    dump = subprocess.run(
        [sys.executable, "-m", "cosmic_ray.cli", "dump", str(session)],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total = done = 0
    survivors = []
    for line in filter(None, dump.splitlines()):
        job, result = json.loads(line)
        skipped = result is not None and result["worker_outcome"] == "skipped"
        if skipped and result["output"] != ARGUED_EVERYWHERE:
            continue  # an excluded operator's mutant: neither killed nor survived
        total += 1
        if result is None:
            continue
        done += 1
        if not skipped and result["test_outcome"] != "survived":
            continue
        for mutation in job["mutations"]:
            path = work / mutation["module_path"]
            row = mutation["start_pos"][0]
            text = path.read_text().splitlines()[row - 1].strip()
            survivors.append(
                {
                    "module": mutation["module_path"],
                    "operator": mutation["operator_name"],
                    "line": str(row),
                    "column": str(mutation["start_pos"][1]),
                    "text": text,
                    "definition": mutation.get("definition_name") or "",
                    "job": job["job_id"],
                }
            )
    return total, done, survivors


def _fingerprint(group: Group) -> str:
    """What a session's mutants depend on: the mutated modules and the
    operators left out."""
    digest = hashlib.sha256(json.dumps(EXCLUDED_OPERATORS).encode())
    for module in group.modules:
        digest.update(module.encode() + b"\0" + (ROOT / module).read_bytes())
    return digest.hexdigest()


def _rerun_unexplained(work: Path, session: Path) -> None:
    """Forget the results of the survivors not argued equivalent, so that
    the run gives the tests added since another chance at them."""
    from cosmic_ray.work_item import TestOutcome

    _, _, survivors = _survivors(work, session)
    jobs = sorted({s["job"] for s in survivors if not _equivalent(s)})
    with sqlite3.connect(session) as db:
        db.executemany(
            "DELETE FROM work_results WHERE job_id = ? AND test_outcome = ?",
            [(job, TestOutcome.SURVIVED.name) for job in jobs],
        )


def _open_session(name: str, group: Group, work: Path, config: Path, kept: Path | None) -> Path:
    """The group's session: the one kept in *kept* if it is for these
    modules (the caller runs its unexplained survivors again), else a new
    one (kept there, if given)."""
    if kept is None:
        session = work / "session.sqlite"
    else:
        session, fingerprint = kept / f"{name}.sqlite", kept / f"{name}.sha256"
        found = session.exists() and fingerprint.exists()
        if found and fingerprint.read_text() == _fingerprint(group):
            return session
        fingerprint.unlink(missing_ok=True)  # written once the new session is whole
        session.unlink(missing_ok=True)
    cli = [sys.executable, "-m", "cosmic_ray.cli"]
    subprocess.run([*cli, "init", str(config), str(session)], cwd=work, check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cosmic_ray.tools.filters.operators_filter",
            str(session),
            str(config),
        ],
        cwd=work,
        check=True,
    )
    _skip_argued_everywhere(work, session)
    if kept is not None:
        fingerprint.write_text(_fingerprint(group))
    return session


def run_group(
    name: str, group: Group, deadline: float, sessions: Path | None = None
) -> list[dict[str, str]]:
    """Run one group until done or *deadline*, resuming its session in
    *sessions* if there is one; return its unexplained survivors."""
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        config = work / "cosmic-ray.toml"
        config.write_text(_config(group, sys.executable))
        session = _open_session(name, group, work, config, sessions)
        cli = [sys.executable, "-m", "cosmic_ray.cli"]
        left = deadline - time.monotonic()
        timed_out = False
        if left > 0:
            _rerun_unexplained(work, session)
            try:
                subprocess.run(
                    [*cli, "exec", str(config), str(session)],
                    cwd=work,
                    check=True,
                    timeout=left,
                    stdout=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                timed_out = True
        total, done, survivors = _survivors(work, session)
    unexplained = [s for s in survivors if not _equivalent(s)]
    killed = done - len(survivors)
    score = 100.0 * (killed + len(survivors) - len(unexplained)) / done if done else 0.0
    print(
        f"{name}: {done}/{total} mutants run{' (time budget spent)' if timed_out else ''}; "
        f"{killed} killed, {len(survivors) - len(unexplained)} argued equivalent, "
        f"{len(unexplained)} surviving: score {score:.1f} %"
    )
    for s in unexplained:
        print(f"  {s['module']}:{s['line']}:{s['column']} {s['operator']}: {s['text']}")
    return unexplained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="*", choices=[[], *GROUPS], default=list(GROUPS))
    parser.add_argument("--minutes", type=float, default=60.0, help="time budget for all groups")
    parser.add_argument(
        "--sessions", type=Path, help="directory keeping each group's session, to resume it"
    )
    args = parser.parse_args()
    if args.sessions is not None:
        args.sessions = args.sessions.resolve()
        args.sessions.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.minutes * 60
    unexplained = []
    for name in args.groups or GROUPS:
        unexplained += run_group(name, GROUPS[name], deadline, args.sessions)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
