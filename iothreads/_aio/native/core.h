/* The native core of an AioContext: the cross-thread hot path.
 *
 * One file per object, as uvloop's handles/: handle.c (the handle of a
 * submission), inbox.c (the multi-producer inbox, notify_me, the wake-up
 * channel and the drain), spin.c (the polling window's spin, with the GIL
 * released), window.c (the polling window's arithmetic), poller.c (the
 * callback poller: a uvloop loop's way back to sleep), module.c (the module
 * and what it borrows from Python), uvloop.c (what the spin may watch on a
 * uvloop loop).
 *
 * Public C API only; every ordering that crosses threads is a C11 atomic
 * (docs/design.md, "Wake-up suppression").  The module declares that it
 * does not need the GIL: on a free-threaded build the atomics are all the
 * ordering there is.
 */
#ifndef IOTHREADS_CORE_H
#define IOTHREADS_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The names the callback poller looks up on its context, its loop, its
 * window and itself, interned once (module.c). */
enum {
    NAME_LOOP, NAME_WINDOW, NAME_CLOCK, NAME_CLOSING, NAME_WORK_PENDING, NAME_PREPARE_TO_BLOCK,
    NAME_SERVE_INBOX, NAME_BEGIN_POLLING, NAME_SPIN, NAME_CPU_SHARED, NAME_END_POLLING,
    NAME_CALL_SOON, NAME_FIRST_STEP, NAME_SPIN_STEP, NAME_POLL_NS, NAME_ADJUST, NAME_COUNT
};

/* What the module holds: its types and the Python objects it calls. */
typedef struct {
    PyTypeObject *handle_type;
    PyTypeObject *inbox_type;
    PyTypeObject *window_type;
    PyTypeObject *poller_type;
    PyObject *names[NAME_COUNT];
    PyObject *stopped_error;   /* iothreads.IOThreadStopped */
    PyObject *report_error;    /* iothreads._aio._handle.report_error(handle, exc) */
    PyObject *capture_stack;   /* iothreads._aio._handle.capture_stack() */
    /* The test hook (see test_point()), or NULL; every hook ever set stays
     * alive in hooks_seen, so a thread that read the pointer may call it. */
    _Atomic(PyObject *) test_hook;
    PyObject *hooks_seen;
    /* How many inboxes' loops run Python now, as far as their inboxes know
     * (awake, not in a spin or asleep): what a spin that caught work waits
     * for before it takes the GIL (spin.c, the hand-over wait). */
    _Atomic int loops_awake;
    /* Bumped in a forked child, where the count starts again from 0: an
     * inbox counted before the fork is not uncounted after it. */
    _Atomic unsigned awake_generation;
} core_state;

/* The points of the protocol where a test may stop a thread: the tests
 * land a producer at each of them, as they do at each line of the Python
 * inbox (docs/design.md, "Testing").  The cost when no hook is set: one
 * relaxed load. */
void test_point_call(core_state *st, const char *point);

static inline void
test_point(core_state *st, const char *point)
{
    if (atomic_load_explicit(&st->test_hook, memory_order_relaxed) != NULL) {
        test_point_call(st, point);
    }
}

/* ---- handle.c ----------------------------------------------------------- */

/* Life of a handle in the inbox; each change is one compare-and-swap, so a
 * handle is either taken by the loop or taken back by its producer, never
 * both and never neither (docs/design.md, "Threading rules"). */
enum { HANDLE_QUEUED = 0, HANDLE_TAKEN = 1, HANDLE_WITHDRAWN = 2 };

/* What spin() answers (spin.c).  The module exports the two that the context
 * tells apart from a plain catch, and a test holds its numbers equal to them. */
enum { SPIN_TIMEOUT = 0, SPIN_WORK = 1, SPIN_IO = 2, SPIN_SHARED = 3, SPIN_WORK_SHARED = 4 };

/* A handle's own fields, after the layout of asyncio.Handle (whose slots it
 * never uses: its read-only properties of the same names shadow them). */
typedef struct {
    PyObject *callback;
    PyObject *args;             /* a tuple */
    PyObject *context;
    PyObject *loop;
    PyObject *source_traceback; /* NULL unless the loop was in debug mode */
    PyObject *next;             /* the inbox's link; owned by the inbox */
    _Atomic int state;
    _Atomic int cancelled;
} handle_fields;

/* The fields sit at the end of the object: the type cannot be subclassed. */
static inline handle_fields *
handle_fields_of(PyObject *handle)
{
    return (handle_fields *)((char *)handle + Py_TYPE(handle)->tp_basicsize
                             - (Py_ssize_t)sizeof(handle_fields));
}

PyTypeObject *handle_type_create(PyObject *module, PyObject *base);
PyObject *handle_new(core_state *st, PyObject *callback, PyObject *args,
                     PyObject *context, PyObject *loop, int debug);
/* Runs a handle's callback in its context; reports whatever it raises,
 * SystemExit and KeyboardInterrupt included, to the loop's exception
 * handler (docs/design.md, "BaseException in an IOThread"). */
void handle_run(core_state *st, PyObject *handle);
/* Drops the inbox's reference to a handle it queued. */
void handle_release(PyObject *handle);

/* ---- inbox.c ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    core_state *st;
    PyObject *loop;
    PyObject *stopped_message;      /* "IOThread 'io0' is stopped; ..." */
    _Atomic(PyObject *) head;       /* a stack of handles, newest first */
    PyObject *pending_head;         /* the loop's own FIFO of taken ones */
    PyObject *pending_tail;
    _Atomic int notify_me;
    _Atomic int closing;
    /* The loop's get_debug(), read by the loop at each pass (producers
     * would pay a Python call per submission for it otherwise). */
    _Atomic int debug;
    int wake_fd;                    /* guarded by wake_lock */
    _Atomic int wake_pending;       /* written since the loop last read it */
    pthread_mutex_t wake_lock;
    /* The loop's poll handlers found ready and not yet run (a list the
     * loop's thread mutates in place): work for the loop as much as a
     * queued handle, so pending() and prepare_to_block() count them.  Only
     * inbox_clear() drops it, when nothing runs the loop any more. */
    PyObject *ready;
    /* Written by the loop's thread only, read by any: relaxed atomics. */
    _Atomic uint64_t submitted;
    _Atomic uint64_t wakeups;
    _Atomic uint64_t blocks;        /* sleeps announced and kept */
    /* Counted in st->loops_awake: the loop's thread left its spin or its
     * sleep and runs Python (the loop's thread writes both), and the count's
     * generation it was counted in. */
    _Atomic int awake;
    unsigned awake_generation;
} inbox_object;

PyTypeObject *inbox_type_create(PyObject *module);
/* The loop's thread runs Python from now on (1) or is about to spin or
 * sleep without the GIL (0); counted once per inbox in st->loops_awake. */
void inbox_set_awake(inbox_object *self, int awake);

/* ---- spin.c ------------------------------------------------------------- */

PyObject *inbox_spin(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* ---- window.c ----------------------------------------------------------- */

/* QEMU starts growing the window from 4 us (_window.POLL_START_NS; the
 * module exports it, and a test holds the two equal). */
#define POLL_START_NS 4000

PyTypeObject *window_type_create(PyObject *module);
/* Moves the window after an iteration that blocked for block_ns; returns
 * the new window.  The loop's thread. */
long long window_adjust(PyObject *window, long long block_ns);
/* The window now, in ns. */
long long window_now(PyObject *window);

/* ---- poller.c ----------------------------------------------------------- */

/* The callback poller's step and backoff bounds (_callback_poller's; the
 * module exports them, and a test holds the two equal). */
#define STEP_NS 50000LL
#define MAX_BACKOFF 64LL

PyTypeObject *poller_type_create(PyObject *module);

/* ---- uvloop.c ----------------------------------------------------------- */

PyObject *core_uv_backend_fd(PyObject *module, PyObject *loop);

#endif
