/* The adaptive polling window, as _window.PollWindow computes it.
 *
 * The same arithmetic (QEMU's adjust_polling_time) without a Python call:
 * the loop moves the window at every wake-up, and on a free-threaded build
 * each Python call on that path costs the round trip about 0.3 us
 * (docs/design.md, "The wake-up path in Python").  PollWindow stays the
 * reference; the tests walk both through the same sequences.
 *
 * The loop's thread moves the window; statistics() reads it from any
 * thread: relaxed atomics, each number exact on its own.
 */
#include "core.h"

typedef struct {
    PyObject_HEAD
    _Atomic long long poll_max_ns;
    _Atomic long long poll_grow;
    _Atomic long long poll_shrink;
    _Atomic long long poll_ns;
} window_object;

#define WINDOW(op) ((window_object *)(op))

static long long
get(_Atomic long long *field)
{
    return atomic_load_explicit(field, memory_order_relaxed);
}

static void
set(_Atomic long long *field, long long value)
{
    atomic_store_explicit(field, value, memory_order_relaxed);
}

static PyObject *
window_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"poll_max_ns", "poll_grow", "poll_shrink", "poll_ns", NULL};
    long long poll_max_ns = 32768, poll_grow = 0, poll_shrink = 0, poll_ns = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|LLLL:PollWindow", keywords, &poll_max_ns,
                                     &poll_grow, &poll_shrink, &poll_ns)) {
        return NULL;
    }
    window_object *self = (window_object *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    atomic_init(&self->poll_max_ns, poll_max_ns);
    atomic_init(&self->poll_grow, poll_grow);
    atomic_init(&self->poll_shrink, poll_shrink);
    atomic_init(&self->poll_ns, poll_ns);
    return (PyObject *)self;
}

static void
window_dealloc(PyObject *op)
{
    PyTypeObject *type = Py_TYPE(op);
    type->tp_free(op);
    Py_DECREF(type);
}

/* reset(poll_max_ns, poll_grow, poll_shrink): new parameters; like QEMU, a
 * change restarts the window from 0.  The loop's thread. */
static PyObject *
window_reset(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"poll_max_ns", "poll_grow", "poll_shrink", NULL};
    long long poll_max_ns, poll_grow, poll_shrink;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLL:reset", keywords, &poll_max_ns, &poll_grow,
                                     &poll_shrink)) {
        return NULL;
    }
    window_object *self = WINDOW(op);
    set(&self->poll_max_ns, poll_max_ns);
    set(&self->poll_grow, poll_grow);
    set(&self->poll_shrink, poll_shrink);
    set(&self->poll_ns, 0);
    Py_RETURN_NONE;
}

long long
window_adjust(PyObject *op, long long block_ns)
{
    window_object *self = WINDOW(op);
    long long max = get(&self->poll_max_ns), poll_ns = get(&self->poll_ns);
    if (!max) {
        poll_ns = 0;
    }
    else if (block_ns <= poll_ns) {
        /* the window caught the event: it is the right size */
    }
    else if (block_ns > max) {
        long long shrink = get(&self->poll_shrink);
        poll_ns = shrink ? poll_ns / shrink : 0;
    }
    else if (block_ns < max) {
        long long grow = get(&self->poll_grow);
        poll_ns = poll_ns ? poll_ns * (grow ? grow : 2) : POLL_START_NS;
        poll_ns = poll_ns < max ? poll_ns : max;
    }
    set(&self->poll_ns, poll_ns);
    return poll_ns;
}

long long
window_now(PyObject *op)
{
    return get(&WINDOW(op)->poll_ns);
}

/* adjust(block_ns) -> poll_ns: move the window after an iteration that
 * blocked for block_ns.  The loop's thread. */
static PyObject *
window_adjust_method(PyObject *op, PyObject *arg)
{
    long long block_ns = PyLong_AsLongLong(arg);
    if (block_ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromLongLong(window_adjust(op, block_ns));
}

static PyObject *
window_repr(PyObject *op)
{
    window_object *self = WINDOW(op);
    return PyUnicode_FromFormat("PollWindow(poll_max_ns=%lld, poll_grow=%lld, poll_shrink=%lld, "
                                "poll_ns=%lld)",
                                get(&self->poll_max_ns), get(&self->poll_grow),
                                get(&self->poll_shrink), get(&self->poll_ns));
}

static PyObject *
window_get(PyObject *op, void *closure)
{
    return PyLong_FromLongLong(get((_Atomic long long *)((char *)op + (size_t)closure)));
}

static int
window_set(PyObject *op, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "a window's numbers cannot be deleted");
        return -1;
    }
    long long number = PyLong_AsLongLong(value);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    set((_Atomic long long *)((char *)op + (size_t)closure), number);
    return 0;
}

#define FIELD(name, doc) \
    {#name, window_get, window_set, doc, (void *)offsetof(window_object, name)}

static PyGetSetDef window_getset[] = {
    FIELD(poll_max_ns, "The longest window, in ns (0: never poll)."),
    FIELD(poll_grow, "The factor the window grows by (0: 2)."),
    FIELD(poll_shrink, "The divisor the window shrinks by (0: drop to 0)."),
    FIELD(poll_ns, "The polling window now, in ns."),
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef window_methods[] = {
    {"reset", (PyCFunction)(void (*)(void))window_reset, METH_VARARGS | METH_KEYWORDS,
     "reset(poll_max_ns, poll_grow, poll_shrink): new parameters; the window restarts from 0."},
    {"adjust", window_adjust_method, METH_O,
     "adjust(block_ns) -> poll_ns: move the window after an iteration that blocked for block_ns."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot window_slots[] = {
    {Py_tp_doc, "PollWindow(poll_max_ns=32768, poll_grow=0, poll_shrink=0, poll_ns=0): "
                "the adaptive polling window of one loop."},
    {Py_tp_new, window_new},
    {Py_tp_dealloc, window_dealloc},
    {Py_tp_repr, window_repr},
    {Py_tp_methods, window_methods},
    {Py_tp_getset, window_getset},
    {0, NULL},
};

PyTypeObject *
window_type_create(PyObject *module)
{
    static PyType_Spec spec = {
        .name = "iothreads._aio._core.PollWindow",
        .basicsize = sizeof(window_object),
        .flags = Py_TPFLAGS_DEFAULT,
        .slots = window_slots,
    };
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL);
}
