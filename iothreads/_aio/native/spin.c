/* The spin of the polling window, with the GIL released.
 *
 * Before the loop sleeps it may wait a little while awake, for work that
 * comes soon (QEMU's aio_poll).  Done in Python, the waiting thread holds the
 * GIL between its system calls, and a producer that is a Python thread of
 * the same process waits for it (docs/design.md, "Measurements").  Here the
 * thread waits in C without the GIL, watching the inbox's head (one atomic
 * load) and, every few steps, whether a descriptor is readable (the loop's
 * own epoll: I/O is ready), and takes the GIL back only when something came
 * or the time is up.
 *
 * Each step yields the CPU (sched_yield): a producer waiting for this CPU
 * runs at once.  A spin that shares its CPU with the threads it waits for
 * cannot make their work come sooner, only take turns from them; so once a
 * yield has run another thread (the kernel counts that as an involuntary
 * context switch of this thread), the spin takes one more look and gives up
 * (docs/design.md, "The polling window": the guard).  Those threads have
 * just run up to their next wait: whatever they were about to hand over is
 * queued by then.
 *
 * A spin that caught work must take the GIL back.  Where the thread that
 * handed the work over is another loop's, it still holds the GIL: it goes on
 * in Python until its own spin or sleep.  Taking the GIL then would put this
 * thread to sleep on the GIL's condition variable, and the holder's release
 * would wake it: the cross-CPU wake-up the spin was there to save.  So the
 * spin first waits, still without the GIL, while other loops of ours run
 * Python (st->loops_awake), for at most about what that wake-up costs (the
 * hand-over wait).  Other Python threads are not counted: there the spin
 * takes the GIL as before.  A free-threaded build has no GIL to wait for.
 */
#include "core.h"

#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>

/* How many steps between two looks at the descriptor: poll(2) costs about as
 * much as a step's yield, and I/O can wait that long. */
#define STEPS_PER_POLL 8

/* The longest the hand-over wait lasts: about one cross-CPU wake-up on the
 * machines measured (docs/design.md, "Measurements"); waiting longer than
 * the wake-up it saves cannot pay. */
#define HANDOVER_WAIT_NS 50000

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
fd_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
    return poll(&pfd, 1, 0) > 0;
}

/* This thread's involuntary context switches so far: a yield that ran
 * another thread counts as one (so does a preemption).  -1 where the kernel
 * does not count them per thread: then the guard never acts. */
static long
involuntary_switches(void)
{
#ifdef RUSAGE_THREAD
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) == 0) {
        return usage.ru_nivcsw;
    }
#endif
    return -1;
}

/* The hand-over wait (see the top of this file); without the GIL. */
static void
wait_for_the_gil_holder(core_state *st)
{
#ifndef Py_GIL_DISABLED
    int64_t until = now_ns() + HANDOVER_WAIT_NS;
    while (atomic_load_explicit(&st->loops_awake, memory_order_relaxed) > 0 && now_ns() < until) {
        sched_yield();
    }
#else
    (void)st;
#endif
}

/* spin(duration_ns, fd) -> 0 (time up), 1 (work queued), 2 (fd readable),
 * 3 (the CPU is shared: a yield ran another thread, and the last look found
 * nothing), 4 (the CPU is shared, and the last look found work queued);
 * fd -1 watches the inbox alone.  The loop's thread. */
PyObject *
inbox_spin(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    inbox_object *self = (inbox_object *)op;
    if (nargs != 2) {
        return PyErr_Format(PyExc_TypeError, "spin() takes 2 arguments (%zd given)", nargs);
    }
    long long duration = PyLong_AsLongLong(args[0]);
    if (duration == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long fd = PyLong_AsLong(args[1]);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->pending_head != NULL) {
        return PyLong_FromLong(SPIN_WORK); /* left over from a capped drain */
    }
    int outcome;
    Py_BEGIN_ALLOW_THREADS
    inbox_set_awake(self, 0);
    int64_t deadline = now_ns() + duration;
    long switches = involuntary_switches();
    int shared = 0;
    for (unsigned step = 0;; step++) {
        if (atomic_load_explicit(&self->head, memory_order_acquire) != NULL) {
            outcome = shared ? SPIN_WORK_SHARED : SPIN_WORK;
            break;
        }
        if (fd >= 0 && (shared || step % STEPS_PER_POLL == 0) && fd_readable((int)fd)) {
            outcome = SPIN_IO;
            break;
        }
        if (shared) {
            outcome = SPIN_SHARED; /* that was the last look */
            break;
        }
        if (now_ns() >= deadline) {
            outcome = SPIN_TIMEOUT;
            break;
        }
        sched_yield();
        shared = switches >= 0 && involuntary_switches() != switches;
    }
    if (outcome == SPIN_WORK || outcome == SPIN_WORK_SHARED || outcome == SPIN_IO) {
        wait_for_the_gil_holder(self->st);
    }
    inbox_set_awake(self, 1);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(outcome);
}
