/* The inbox of one event loop: many producers, one consumer (the loop).
 *
 * Producers push handles on a lock-free stack (one compare-and-swap); the
 * loop takes the whole stack at once (one exchange) at the start of a
 * drain, reverses it into its own FIFO and runs what it took: everything
 * queued at entry runs in that pass, what arrives during it runs next time
 * (QEMU's aio_bh_poll splices its list the same way).
 *
 * Wake-up suppression (QEMU's notify_me): a producer writes the eventfd only
 * when the loop is blocking or about to.  The loop stores notify_me = 1 and
 * then loads the stack head for its last look; a producer stores the head
 * (its push) and then loads notify_me.  Each side is a store followed by a
 * load of the other's location -- Dekker's pattern -- so both sides use
 * sequentially consistent operations: then either the loop's last look sees
 * the handle, or the producer sees notify_me and writes the eventfd.
 *
 * Closing: the loop sets `closing`, then drains until empty.  A producer
 * that pushed and then sees `closing` tries to take its handle back with a
 * compare-and-swap of the handle's state; the loop takes each handle with
 * the same compare-and-swap before running it.  Exactly one of them wins:
 * the handle runs, or the producer gets IOThreadStopped.
 */
#include "core.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define INBOX(op) ((inbox_object *)(op))

/* ---- the wake-up channel (any thread) ------------------------------------ */

static void
inbox_wake(inbox_object *self)
{
    /* One write until the loop has read the channel: a producer that finds
     * the flag set pushed before the loop clears it, and the loop clears it
     * after its read and before it runs the inbox, so that run takes the
     * push.  The loop can take a while to get the GIL after its sleep ends,
     * and producers would otherwise each pay a system call meanwhile. */
    if (atomic_exchange(&self->wake_pending, 1)) {
        return;
    }
    test_point(self->st, "flagged");
    /* The lock keeps close() from reusing the number under a writer. */
    pthread_mutex_lock(&self->wake_lock);
    if (self->wake_fd >= 0) {
        uint64_t one = 1;
        /* EAGAIN: the counter is full, so a wake-up is pending already. */
        ssize_t written = write(self->wake_fd, &one, sizeof(one));
        (void)written;
    }
    pthread_mutex_unlock(&self->wake_lock);
}

/* ---- construction and destruction ---------------------------------------- */

/* The loop's thread (or its creator, before it runs). */
static int
inbox_refresh_debug(inbox_object *self)
{
    PyObject *debug = PyObject_CallMethod(self->loop, "get_debug", NULL);
    if (debug == NULL) {
        return -1;
    }
    int on = PyObject_IsTrue(debug);
    Py_DECREF(debug);
    if (on < 0) {
        return -1;
    }
    atomic_store_explicit(&self->debug, on, memory_order_relaxed);
    return 0;
}

static PyObject *
inbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"loop", "stopped_message", "ready", NULL};
    PyObject *loop, *message, *ready;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OUO!:Inbox", keywords, &loop, &message,
                                     &PyList_Type, &ready)) {
        return NULL;
    }
    core_state *st = PyType_GetModuleState(type);
    if (st == NULL) {
        return NULL;
    }
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    inbox_object *self = (inbox_object *)type->tp_alloc(type, 0);
    if (self == NULL) {
        close(fd);
        return NULL;
    }
    self->st = st;
    self->loop = Py_NewRef(loop);
    self->stopped_message = Py_NewRef(message);
    self->ready = Py_NewRef(ready);
    atomic_init(&self->head, NULL);
    atomic_init(&self->notify_me, 1);
    atomic_init(&self->closing, 0);
    atomic_init(&self->submitted, 0);
    atomic_init(&self->wakeups, 0);
    atomic_init(&self->blocks, 0);
    atomic_init(&self->debug, 0);
    atomic_init(&self->wake_pending, 0);
    atomic_init(&self->awake, 0);
    self->awake_generation = 0;
    self->wake_fd = fd;
    pthread_mutex_init(&self->wake_lock, NULL);
    if (inbox_refresh_debug(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Drop every handle still linked (the loop's thread, or the last owner). */
static void
inbox_forget_handles(inbox_object *self)
{
    PyObject *lists[2] = {atomic_exchange(&self->head, NULL), self->pending_head};
    self->pending_head = self->pending_tail = NULL;
    for (int i = 0; i < 2; i++) {
        PyObject *handle = lists[i];
        while (handle != NULL) {
            PyObject *next = handle_fields_of(handle)->next;
            handle_fields_of(handle)->next = NULL;
            handle_release(handle);
            handle = next;
        }
    }
}

static void
inbox_close_channel(inbox_object *self)
{
    pthread_mutex_lock(&self->wake_lock);
    if (self->wake_fd >= 0) {
        close(self->wake_fd);
        self->wake_fd = -1;
    }
    pthread_mutex_unlock(&self->wake_lock);
}

static int
inbox_traverse(PyObject *op, visitproc visit, void *arg)
{
    inbox_object *self = INBOX(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->loop);
    Py_VISIT(self->stopped_message);
    Py_VISIT(self->ready);
    /* Only the loop's FIFO: the stack's head may change under the collector
     * (producers push without the GIL on a free-threaded build), and its
     * handles reach nothing the inbox does not also hold. */
    for (PyObject *h = self->pending_head; h != NULL; h = handle_fields_of(h)->next) {
        Py_VISIT(h);
    }
    return 0;
}

void
inbox_set_awake(inbox_object *self, int awake)
{
    core_state *st = self->st;
    if (atomic_exchange_explicit(&self->awake, awake, memory_order_relaxed) == awake) {
        return;
    }
    unsigned generation = atomic_load_explicit(&st->awake_generation, memory_order_relaxed);
    if (awake) {
        self->awake_generation = generation;
        atomic_fetch_add_explicit(&st->loops_awake, 1, memory_order_relaxed);
    }
    else if (self->awake_generation == generation) {
        atomic_fetch_sub_explicit(&st->loops_awake, 1, memory_order_relaxed);
    }
}

static int
inbox_clear(PyObject *op)
{
    inbox_object *self = INBOX(op);
    inbox_set_awake(self, 0);
    inbox_forget_handles(self);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->stopped_message);
    Py_CLEAR(self->ready);
    return 0;
}

static void
inbox_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    inbox_clear(op);
    inbox_close_channel(INBOX(op));
    pthread_mutex_destroy(&INBOX(op)->wake_lock);
    type->tp_free(op);
    Py_DECREF(type);
}

/* ---- producers (any thread) ----------------------------------------------- */

static PyObject *
inbox_stopped(inbox_object *self)
{
    PyErr_SetObject(self->st->stopped_error, self->stopped_message);
    return NULL;
}

/* submit(callback, *args, context=None) -> Handle */
static PyObject *
inbox_submit(PyObject *op, PyObject *const *args, Py_ssize_t nargsf, PyObject *kwnames)
{
    inbox_object *self = INBOX(op);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context = Py_None;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "context") != 0) {
                return PyErr_Format(PyExc_TypeError,
                                    "call_soon_threadsafe() got an unexpected keyword argument "
                                    "'%S'", name);
            }
            context = args[nargs + i];
        }
    }
    if (nargs < 1) {
        return PyErr_Format(PyExc_TypeError,
                            "call_soon_threadsafe() missing required argument 'callback'");
    }
    if (atomic_load(&self->closing)) {
        return inbox_stopped(self);
    }
    PyObject *callback_args = PyTuple_New(nargs - 1);
    if (callback_args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(callback_args, i - 1, Py_NewRef(args[i]));
    }
    int debug = atomic_load_explicit(&self->debug, memory_order_relaxed);
    PyObject *handle = handle_new(self->st, args[0], callback_args, context, self->loop, debug);
    Py_DECREF(callback_args);
    if (handle == NULL) {
        return NULL;
    }
    handle_fields *f = handle_fields_of(handle);
    Py_INCREF(handle); /* the inbox's reference */
    PyObject *head = atomic_load(&self->head);
    do {
        f->next = head;
    } while (!atomic_compare_exchange_weak(&self->head, &head, handle));
    test_point(self->st, "pushed");
    if (atomic_load(&self->notify_me)) {
        inbox_wake(self);
    }
    test_point(self->st, "looked");
    if (atomic_load(&self->closing)) {
        /* The loop closed between our two looks: its last drain ran after
         * it set closing.  Take the handle back unless that drain took it. */
        int expected = HANDLE_QUEUED;
        if (atomic_compare_exchange_strong(&f->state, &expected, HANDLE_WITHDRAWN)) {
            Py_DECREF(handle);
            return inbox_stopped(self);
        }
    }
    return handle;
}

/* ---- the loop's thread ----------------------------------------------------- */

/* Move what producers pushed into the loop's FIFO, oldest first. */
static void
inbox_splice(inbox_object *self)
{
    PyObject *taken = atomic_exchange(&self->head, NULL);
    PyObject *reversed = NULL, *last = taken;
    while (taken != NULL) {
        PyObject *next = handle_fields_of(taken)->next;
        handle_fields_of(taken)->next = reversed;
        reversed = taken;
        taken = next;
    }
    if (reversed == NULL) {
        return;
    }
    if (self->pending_tail != NULL) {
        handle_fields_of(self->pending_tail)->next = reversed;
    }
    else {
        self->pending_head = reversed;
    }
    self->pending_tail = last;
}

/* run(limit) -> None: run what was queued at entry, at most limit (0: all). */
static PyObject *
inbox_run(PyObject *op, PyObject *arg)
{
    inbox_object *self = INBOX(op);
    Py_ssize_t limit = PyLong_AsSsize_t(arg);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* The FIFO holds what was queued at entry: what producers push during
     * the pass waits on the stack for the next one. */
    if (inbox_refresh_debug(self) < 0) {
        return NULL;
    }
    inbox_splice(self);
    for (Py_ssize_t ran = 0; self->pending_head != NULL && (limit == 0 || ran < limit);) {
        test_point(self->st, "taking");
        PyObject *handle = self->pending_head;
        handle_fields *f = handle_fields_of(handle);
        self->pending_head = f->next;
        if (self->pending_head == NULL) {
            self->pending_tail = NULL;
        }
        f->next = NULL;
        int expected = HANDLE_QUEUED;
        if (!atomic_compare_exchange_strong(&f->state, &expected, HANDLE_TAKEN)) {
            handle_release(handle); /* its producer took it back */
            continue;
        }
        ran++;
        /* Only this thread writes it: a plain add, published for readers. */
        atomic_store_explicit(&self->submitted,
                              atomic_load_explicit(&self->submitted, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        if (!atomic_load(&f->cancelled)) {
            handle_run(self->st, handle);
        }
        handle_release(handle);
    }
    Py_RETURN_NONE;
}

static PyObject *
inbox_wake_method(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_wake(INBOX(op));
    Py_RETURN_NONE;
}

/* The loop is awake: producers need not wake it (the loop's thread).  A
 * producer that still reads 1 only writes a needless wake-up. */
static void
inbox_stay_awake(inbox_object *self)
{
    atomic_store_explicit(&self->notify_me, 0, memory_order_relaxed);
    inbox_set_awake(self, 1);
}

/* A poll handler found ready and not yet run (the loop's thread).  The list
 * is gone only once the collector cleared the inbox. */
static int
inbox_handler_ready(inbox_object *self)
{
    return self->ready != NULL && PyList_GET_SIZE(self->ready) > 0;
}

static PyObject *
inbox_pending(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    return PyBool_FromLong(self->pending_head != NULL || atomic_load(&self->head) != NULL
                           || inbox_handler_ready(self));
}

static PyObject *
inbox_prepare_to_block(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    /* Only the loop's thread makes a handler ready: no need to announce
     * first.  The loop stays awake, and producers need not wake it. */
    if (inbox_handler_ready(self)) {
        inbox_stay_awake(self);
        Py_RETURN_FALSE;
    }
    atomic_store(&self->notify_me, 1);
    test_point(self->st, "announced");
    if (self->pending_head != NULL || atomic_load(&self->head) != NULL) {
        atomic_store(&self->notify_me, 0);
        Py_RETURN_FALSE;
    }
    inbox_set_awake(self, 0);
    uint64_t blocks = atomic_load_explicit(&self->blocks, memory_order_relaxed);
    atomic_store_explicit(&self->blocks, blocks + 1, memory_order_relaxed);
    test_point(self->st, "sleeping");
    Py_RETURN_TRUE;
}

static PyObject *
inbox_woke(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_stay_awake(INBOX(op));
    Py_RETURN_NONE;
}

static PyObject *
inbox_close(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    atomic_store(&self->closing, 1);
    test_point(self->st, "closed");
    atomic_store(&self->notify_me, 1);
    Py_RETURN_NONE;
}

static PyObject *
inbox_fileno(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    pthread_mutex_lock(&self->wake_lock);
    int fd = self->wake_fd;
    pthread_mutex_unlock(&self->wake_lock);
    return PyLong_FromLong(fd);
}

static PyObject *
inbox_drain_wakeups(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    uint64_t count = 0;
    test_point(self->st, "reading");
    /* No producer wrote since the last drain (work queued while the loop was
     * awake or spinning writes nothing): no system call.  A write landing
     * after this look leaves the channel readable, and the loop drains it
     * on its next pass. */
    if (!atomic_load(&self->wake_pending)) {
        return PyLong_FromLong(0);
    }
    /* Without the lock: it keeps close() from reusing the number under a
     * writer, and only this thread closes the channel (shutdown() is the
     * loop's; dealloc has no other holder).  A producer holds the lock for
     * its write, and the write may have just woken this thread: on one CPU
     * the kernel can run us before that producer unlocks, and the lock
     * would put us back to sleep until it did, two more context switches a
     * wake-up. */
    if (self->wake_fd >= 0 && read(self->wake_fd, &count, sizeof(count)) != sizeof(count)) {
        count = 0; /* EAGAIN: nothing was written */
    }
    /* After the read (see inbox_wake()): cleared before it, a write made
     * between the two would be read here and leave the flag set with
     * nothing left to read, and producers would skip every write after.
     * And only after a read that took a write: the flag is set before the
     * write, and a read in between takes nothing.  Cleared then, the write
     * would land with the flag clear, and no drain would read it: the
     * channel would stay readable, and wake the loop at every iteration,
     * until the next producer's write. */
    if (count > 0) {
        atomic_store(&self->wake_pending, 0);
    }
    atomic_fetch_add_explicit(&self->wakeups, count, memory_order_relaxed);
    return PyLong_FromUnsignedLongLong(count);
}

static PyObject *
inbox_shutdown(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    inbox_object *self = INBOX(op);
    inbox_set_awake(self, 0);
    inbox_close_channel(self);
    inbox_forget_handles(self);
    Py_RETURN_NONE;
}

static PyObject *
inbox_get_submitted(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&INBOX(op)->submitted, memory_order_relaxed));
}

static PyObject *
inbox_get_wakeups(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&INBOX(op)->wakeups, memory_order_relaxed));
}

static PyObject *
inbox_get_blocks(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(
        atomic_load_explicit(&INBOX(op)->blocks, memory_order_relaxed));
}

static PyMethodDef inbox_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))inbox_submit, METH_FASTCALL | METH_KEYWORDS,
     "submit(callback, *args, context=None) -> Handle; any thread."},
    {"wake", inbox_wake_method, METH_NOARGS, "Make the loop leave its sleep; any thread."},
    {"run", inbox_run, METH_O, "Run what is queued now, at most limit handles (0: all)."},
    {"pending", inbox_pending, METH_NOARGS, "True when work is queued or a poll handler is ready."},
    {"prepare_to_block", inbox_prepare_to_block, METH_NOARGS,
     "Announce the sleep, then take the last look; True if the loop may sleep."},
    {"woke", inbox_woke, METH_NOARGS, "The loop is awake: producers need not wake it."},
    {"close", inbox_close, METH_NOARGS, "Take no more work."},
    {"fileno", inbox_fileno, METH_NOARGS, "The wake-up channel's descriptor; -1 once shut."},
    {"drain_wakeups", inbox_drain_wakeups, METH_NOARGS,
     "Consume the pending wake-ups; return how many were written."},
    {"shutdown", inbox_shutdown, METH_NOARGS,
     "Close the wake-up channel and drop what is still linked."},
    {"spin", (PyCFunction)(void (*)(void))inbox_spin, METH_FASTCALL,
     "spin(duration_ns, fd) -> 0 (time up), 1 (work), 2 (fd readable) or 3 (CPU shared), without the GIL."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef inbox_getset[] = {
    {"submitted", inbox_get_submitted, NULL, "Handles taken by the loop.", NULL},
    {"wakeups", inbox_get_wakeups, NULL, "Wake-ups producers wrote.", NULL},
    {"blocks", inbox_get_blocks, NULL, "Sleeps the loop announced and kept.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot inbox_slots[] = {
    {Py_tp_doc, "Inbox(loop, stopped_message, ready): one loop's cross-thread inbox."},
    {Py_tp_new, inbox_new},
    {Py_tp_traverse, inbox_traverse},
    {Py_tp_clear, inbox_clear},
    {Py_tp_dealloc, inbox_dealloc},
    {Py_tp_methods, inbox_methods},
    {Py_tp_getset, inbox_getset},
    {0, NULL},
};

PyTypeObject *
inbox_type_create(PyObject *module)
{
    static PyType_Spec spec = {
        .name = "iothreads._aio._core.Inbox",
        .basicsize = sizeof(inbox_object),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
        .slots = inbox_slots,
    };
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
}
