/* The callback poller, as _callback_poller.CallbackPoller does it.
 *
 * On a loop without a selector to wrap (uvloop), the inbox's reader runs
 * the context's serve_inbox(), which hands over to the poller's
 * after_work(): the way back to sleep, or into a polling phase.  Done in
 * Python, that way costs the wake-up path a Python call for each method it
 * goes through, about 0.3 us each on a free-threaded build, where a loop on
 * one CPU with its producer pays them on every round trip (docs/design.md,
 * "The wake-up path in Python").  Here it runs in C and calls the context
 * only through the pollers' interface, the same attributes and methods as
 * CallbackPoller: where the native inbox serves the loop those are the
 * inbox's and the window's own C methods, so the way to sleep runs no
 * Python.  CallbackPoller stays the reference; the tests drive both
 * through the same scripted steps.
 *
 * Every method runs in the loop's thread.
 */
#include "core.h"

typedef struct {
    PyObject_HEAD
    core_state *st;
    PyObject *context;
    PyObject *loop;
    PyObject *window;
    long fd;                  /* libuv's descriptor, or -1: the spin watches the inbox */
    int spinning;             /* a polling phase is under way, from start to deadline */
    long long start, deadline;
    int idle;                 /* the loop announced its sleep at idle_since */
    long long idle_since;
    long long skips, backoff; /* phases still to skip, and how many the last backoff skipped */
} poller_object;

#define POLLER(op) ((poller_object *)(op))

static PyObject *
poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"context", "fd", NULL};
    PyObject *context;
    long fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Ol:CallbackPoller", keywords, &context, &fd)) {
        return NULL;
    }
    core_state *st = PyType_GetModuleState(type);
    if (st == NULL) {
        return NULL;
    }
    PyObject *loop = PyObject_GetAttr(context, st->names[NAME_LOOP]);
    PyObject *window = loop != NULL ? PyObject_GetAttr(context, st->names[NAME_WINDOW]) : NULL;
    poller_object *self = window != NULL ? (poller_object *)type->tp_alloc(type, 0) : NULL;
    if (self == NULL) {
        Py_XDECREF(loop);
        Py_XDECREF(window);
        return NULL;
    }
    self->st = st;
    self->context = Py_NewRef(context);
    self->loop = loop;
    self->window = window;
    self->fd = fd;
    return (PyObject *)self;
}

static int
poller_traverse(PyObject *op, visitproc visit, void *arg)
{
    poller_object *self = POLLER(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->context);
    Py_VISIT(self->loop);
    Py_VISIT(self->window);
    return 0;
}

static int
poller_clear(PyObject *op)
{
    poller_object *self = POLLER(op);
    Py_CLEAR(self->context);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->window);
    return 0;
}

static void
poller_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    poller_clear(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* ---- the context, through the pollers' interface ------------------------ */

/* A call's result as an integer (the clock's reading); -1 with an error set. */
static int
as_long_long(PyObject *result, long long *out)
{
    if (result == NULL) {
        return -1;
    }
    *out = PyLong_AsLongLong(result);
    Py_DECREF(result);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* A call's result or an attribute as a truth value: 1, 0, or -1 with an error set. */
static int
as_truth(PyObject *result)
{
    if (result == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

static int
clock_now(poller_object *self, long long *now)
{
    PyObject *clock = PyObject_GetAttr(self->context, self->st->names[NAME_CLOCK]);
    if (clock == NULL) {
        return -1;
    }
    PyObject *reading = PyObject_CallNoArgs(clock);
    Py_DECREF(clock);
    return as_long_long(reading, now);
}

/* context.<name>(), as a truth value (0 for one that returns None). */
static int
ask(poller_object *self, int name)
{
    return as_truth(PyObject_CallMethodNoArgs(self->context, self->st->names[name]));
}

/* The window: the native one without a Python call, any other through its methods. */
static int
window_poll_ns(poller_object *self, long long *poll_ns)
{
    if (Py_IS_TYPE(self->window, self->st->window_type)) {
        *poll_ns = window_now(self->window);
        return 0;
    }
    return as_long_long(PyObject_GetAttr(self->window, self->st->names[NAME_POLL_NS]), poll_ns);
}

static int
move_window(poller_object *self, long long block_ns)
{
    if (Py_IS_TYPE(self->window, self->st->window_type)) {
        window_adjust(self->window, block_ns);
        return 0;
    }
    PyObject *block = PyLong_FromLongLong(block_ns);
    if (block == NULL) {
        return -1;
    }
    PyObject *result = PyObject_CallMethodOneArg(self->window, self->st->names[NAME_ADJUST], block);
    Py_DECREF(block);
    Py_XDECREF(result);
    return result == NULL ? -1 : 0;
}

/* loop.call_soon(owner.<name>) */
static PyObject *
call_soon(poller_object *self, PyObject *owner, int name)
{
    PyObject *callback = PyObject_GetAttr(owner, self->st->names[name]);
    if (callback == NULL) {
        return NULL;
    }
    PyObject *handle = PyObject_CallMethodOneArg(self->loop, self->st->names[NAME_CALL_SOON],
                                                 callback);
    Py_DECREF(callback);
    if (handle == NULL) {
        return NULL;
    }
    Py_DECREF(handle);
    Py_RETURN_NONE;
}

/* ---- the poller ----------------------------------------------------------- */

/* Announce the sleep; the block is measured from since.  Or, when work
 * slipped in, serve it after the other callbacks. */
static PyObject *
go_idle(poller_object *self, long long since)
{
    int may_block = ask(self, NAME_PREPARE_TO_BLOCK);
    if (may_block < 0) {
        return NULL;
    }
    if (!may_block) {
        return call_soon(self, self->context, NAME_SERVE_INBOX);
    }
    self->idle = 1;
    self->idle_since = since;
    Py_RETURN_NONE;
}

/* after_work(): the inbox was served: more work, a spin, or announce the sleep. */
static PyObject *
poller_after_work(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    poller_object *self = POLLER(op);
    long long now, poll_ns;
    /* The loop is awake here: a test stops it where a producer needs no wake-up. */
    test_point(self->st, "after work");
    if (clock_now(self, &now) < 0) {
        return NULL;
    }
    if (self->idle) {
        if (move_window(self, now - self->idle_since) < 0) {
            return NULL;
        }
        self->idle = 0;
    }
    int closing = as_truth(PyObject_GetAttr(self->context, self->st->names[NAME_CLOSING]));
    if (closing) {
        return closing < 0 ? NULL : Py_NewRef(Py_None);
    }
    int pending = ask(self, NAME_WORK_PENDING);
    if (pending) {
        /* Still behind (aio-max-batch): come back after the other callbacks. */
        return pending < 0 ? NULL : call_soon(self, self->context, NAME_SERVE_INBOX);
    }
    if (self->spinning) {
        Py_RETURN_NONE; /* the spin under way notices the work served */
    }
    if (window_poll_ns(self, &poll_ns) < 0) {
        return NULL;
    }
    if (poll_ns && self->skips) {
        self->skips--;
        return go_idle(self, now);
    }
    if (!poll_ns) {
        return go_idle(self, now);
    }
    self->spinning = 1;
    self->start = now;
    self->deadline = now + poll_ns;
    if (ask(self, NAME_BEGIN_POLLING) < 0) {
        return NULL;
    }
    return call_soon(self, op, NAME_FIRST_STEP);
}

/* detach(): a spin step still queued finds nothing to do. */
static PyObject *
poller_detach(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    POLLER(op)->spinning = 0;
    Py_RETURN_NONE;
}

/* _first_step(): spin nothing yet: queue the spin behind what the callbacks
 * queued before this one queued in turn (CallbackPoller._first_step). */
static PyObject *
poller_first_step(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    if (!POLLER(op)->spinning) {
        Py_RETURN_NONE;
    }
    return call_soon(POLLER(op), op, NAME_SPIN_STEP);
}

/* _spin(): one step of the spin, then the next, or the end of the phase. */
static PyObject *
poller_spin(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    poller_object *self = POLLER(op);
    core_state *st = self->st;
    long long now;
    if (!self->spinning) {
        Py_RETURN_NONE; /* detached meanwhile */
    }
    if (clock_now(self, &now) < 0) {
        return NULL;
    }
    long long step_end = now + STEP_NS < self->deadline ? now + STEP_NS : self->deadline;
    PyObject *args[3] = {self->context, PyLong_FromLongLong(step_end), PyLong_FromLong(self->fd)};
    PyObject *result = NULL;
    if (args[1] != NULL && args[2] != NULL) {
        result = PyObject_VectorcallMethod(st->names[NAME_SPIN], args,
                                           3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_XDECREF(args[1]);
    Py_XDECREF(args[2]);
    int caught = as_truth(result), shared = -1;
    if (caught >= 0) {
        shared = as_truth(PyObject_GetAttr(self->context, st->names[NAME_CPU_SHARED]));
    }
    if (shared < 0) {
        return NULL;
    }
    if (!(caught || shared) && step_end < self->deadline) {
        return call_soon(self, op, NAME_SPIN_STEP);
    }
    self->spinning = 0;
    if (shared) {
        self->backoff = self->backoff * 2 > 1 ? self->backoff * 2 : 1;
        self->backoff = self->backoff < MAX_BACKOFF ? self->backoff : MAX_BACKOFF;
        self->skips = self->backoff;
    }
    else {
        self->backoff = 0;
    }
    PyObject *start = PyLong_FromLongLong(self->start);
    if (start == NULL) {
        return NULL;
    }
    PyObject *ended = PyObject_CallMethodOneArg(self->context, st->names[NAME_END_POLLING], start);
    Py_DECREF(start);
    int hit = as_truth(ended);
    if (hit < 0) {
        return NULL;
    }
    if (hit) {
        return PyObject_CallMethodNoArgs(self->context, st->names[NAME_SERVE_INBOX]);
    }
    return go_idle(self, self->start);
}

static PyObject *
poller_get_fd(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(POLLER(op)->fd);
}

static PyMethodDef poller_methods[] = {
    {"after_work", poller_after_work, METH_NOARGS,
     "The inbox was served: more work, a spin, or announce the sleep."},
    {"detach", poller_detach, METH_NOARGS, "A spin step still queued finds nothing to do."},
    {"_first_step", poller_first_step, METH_NOARGS,
     "Spin nothing yet: queue the spin behind what the callbacks queued."},
    {"_spin", poller_spin, METH_NOARGS, "One step of the spin."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef poller_getset[] = {
    {"fd", poller_get_fd, NULL, "libuv's descriptor the spin watches, or -1: the inbox alone.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot poller_slots[] = {
    {Py_tp_doc, "CallbackPoller(context, fd): the polling window of one loop, as callbacks on "
                "that loop."},
    {Py_tp_new, poller_new},
    {Py_tp_traverse, poller_traverse},
    {Py_tp_clear, poller_clear},
    {Py_tp_dealloc, poller_dealloc},
    {Py_tp_methods, poller_methods},
    {Py_tp_getset, poller_getset},
    {0, NULL},
};

PyTypeObject *
poller_type_create(PyObject *module)
{
    static PyType_Spec spec = {
        .name = "iothreads._aio._core.CallbackPoller",
        .basicsize = sizeof(poller_object),
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
        .slots = poller_slots,
    };
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
}
