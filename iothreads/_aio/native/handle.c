/* The handle of a cross-thread submission: an asyncio.Handle made in C.
 *
 * The type subclasses asyncio.Handle, so it is one to isinstance() and to
 * the type checker, and asyncio's own __repr__ and _run() work on it: they
 * read _callback, _args, _context, _loop, _source_traceback, _cancelled and
 * _repr, which are read-only properties here, over fields of our own.  The
 * slots of asyncio.Handle are never written (setting any attribute raises),
 * so there is nothing of the base to clean up.
 *
 * cancel() may come from any thread while the loop is about to run the
 * handle: it only sets an atomic flag, which the loop reads before running.
 */
#include "core.h"

static int
handle_traverse(PyObject *self, visitproc visit, void *arg)
{
    handle_fields *f = handle_fields_of(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(f->callback);
    Py_VISIT(f->args);
    Py_VISIT(f->context);
    Py_VISIT(f->loop);
    Py_VISIT(f->source_traceback);
    /* f->next is the inbox's, and the inbox visits it. */
    return 0;
}

static int
handle_clear(PyObject *self)
{
    handle_fields *f = handle_fields_of(self);
    Py_CLEAR(f->callback);
    Py_CLEAR(f->args);
    Py_CLEAR(f->context);
    Py_CLEAR(f->loop);
    Py_CLEAR(f->source_traceback);
    return 0;
}

static void
handle_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (type->tp_weaklistoffset) {
        PyObject_ClearWeakRefs(self);
    }
    handle_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static int
handle_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    (void)value;
    PyErr_Format(PyExc_AttributeError, "'%s' object attribute '%U' is read-only",
                 Py_TYPE(self)->tp_name, name);
    return -1;
}

static PyObject *
handle_cancel(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    atomic_store(&handle_fields_of(self)->cancelled, 1);
    Py_RETURN_NONE;
}

static PyObject *
handle_cancelled(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(atomic_load(&handle_fields_of(self)->cancelled));
}

static PyObject *
handle_get_context(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(handle_fields_of(self)->context);
}

static PyMethodDef handle_methods[] = {
    {"cancel", handle_cancel, METH_NOARGS,
     "Cancel the callback; safe from any thread.  A callback already running completes."},
    {"cancelled", handle_cancelled, METH_NOARGS, "True once cancel() was called."},
    {"get_context", handle_get_context, METH_NOARGS,
     "The contextvars.Context the callback runs in."},
    {NULL, NULL, 0, NULL},
};

/* The properties asyncio.Handle's own methods read, by field offset. */
static PyObject *
handle_field(PyObject *self, void *closure)
{
    PyObject *value = *(PyObject **)((char *)handle_fields_of(self) + (size_t)closure);
    return Py_NewRef(value != NULL ? value : Py_None);
}

static PyObject *
handle_get_cancelled(PyObject *self, void *Py_UNUSED(closure))
{
    return handle_cancelled(self, NULL);
}

static PyObject *
handle_get_repr(PyObject *self, void *Py_UNUSED(closure))
{
    (void)self;
    Py_RETURN_NONE; /* no cached repr: asyncio's __repr__ builds one */
}

#define HANDLE_FIELD(name, field) \
    {name, handle_field, NULL, NULL, (void *)offsetof(handle_fields, field)}

static PyGetSetDef handle_getset[] = {
    HANDLE_FIELD("_callback", callback),
    HANDLE_FIELD("_args", args),
    HANDLE_FIELD("_context", context),
    HANDLE_FIELD("_loop", loop),
    HANDLE_FIELD("_source_traceback", source_traceback),
    {"_cancelled", handle_get_cancelled, NULL, NULL, NULL},
    {"_repr", handle_get_repr, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_doc, "The handle of a callback submitted to an IOThread from any thread."},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_setattro, handle_setattro},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {0, NULL},
};

PyTypeObject *
handle_type_create(PyObject *module, PyObject *base)
{
    /* asyncio.Handle's size is known only now: ours is that plus our fields. */
    PyObject *size = PyObject_GetAttrString(base, "__basicsize__");
    if (size == NULL) {
        return NULL;
    }
    Py_ssize_t base_size = PyLong_AsSsize_t(size);
    Py_DECREF(size);
    if (base_size < 0) {
        return NULL;
    }
    PyType_Spec spec = {
        .name = "iothreads._aio._core.Handle",
        .basicsize = (int)(base_size + (Py_ssize_t)sizeof(handle_fields)),
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
        .slots = handle_slots,
    };
    return (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, base);
}

PyObject *
handle_new(core_state *st, PyObject *callback, PyObject *args, PyObject *context,
           PyObject *loop, int debug)
{
    /* With the GIL, not tracked by the cyclic GC while queued
     * (PyObject_GC_New leaves it untracked, where tp_alloc would track it):
     * the inbox holds it, so no cycle through it is garbage then, and
     * thousands of queued handles would make every collection walk them.
     * handle_release() tracks it before the inbox lets go, if it outlives
     * the inbox's reference.  Free-threaded, tracked from birth (below). */
    PyObject *self = (PyObject *)PyObject_GC_New(PyObject, st->handle_type);
    if (self == NULL) {
        return NULL;
    }
    /* Zeroed past the header, as tp_alloc would: asyncio.Handle's slots and
     * the weak reference list stay NULL, and our fields start so. */
    memset((char *)self + sizeof(PyObject), 0,
           (size_t)st->handle_type->tp_basicsize - sizeof(PyObject));
    handle_fields *f = handle_fields_of(self);
    f->callback = Py_NewRef(callback);
    f->args = Py_NewRef(args);
    f->loop = Py_NewRef(loop);
    f->context = context != Py_None ? Py_NewRef(context) : PyContext_CopyCurrent();
    atomic_init(&f->state, HANDLE_QUEUED);
    atomic_init(&f->cancelled, 0);
    if (f->context == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if (debug) {
        f->source_traceback = PyObject_CallNoArgs(st->capture_stack);
        if (f->source_traceback == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
#ifdef Py_GIL_DISABLED
    /* There the collector walks every block of the GC heap, tracked or not,
     * and it waits between collections for as many allocations as a quarter
     * of the tracked objects that survived the last one.  Hidden, a backlog
     * of queued handles saves no walking, and each handle and its context
     * count as allocations but never as survivors: a producer outpacing the
     * loop for half a second set off 83 stop-the-world collections where
     * tracked handles set off 18 to 28 (docs/design.md, "Throughput on the
     * free-threaded build"). */
    PyObject_GC_Track(self);
#else
    /* A context made for the handle is ours alone until released: hidden
     * from the GC likewise.  Only now that nothing can fail: a context's
     * dealloc expects to be tracked, and a failure above drops it. */
    if (context == Py_None) {
        PyObject_GC_UnTrack(f->context);
    }
#endif
    return self;
}

/* The loop's thread, holding the GIL (or, free-threaded, attached). */
void
handle_run(core_state *st, PyObject *self)
{
    handle_fields *f = handle_fields_of(self);
    PyObject *result = NULL;
    if (PyContext_Enter(f->context) == 0) {
        result = PyObject_Vectorcall(f->callback, &PyTuple_GET_ITEM(f->args, 0),
                                     (size_t)PyTuple_GET_SIZE(f->args), NULL);
        if (PyContext_Exit(f->context) < 0) {
            Py_CLEAR(result);
        }
    }
    if (result != NULL) {
        Py_DECREF(result);
        return;
    }
    /* Unlike asyncio's Handle._run, SystemExit and KeyboardInterrupt too:
     * nobody waits for a callback's outcome, and the IOThread goes on. */
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    PyObject *exc = value;
#endif
    PyObject *reported = PyObject_CallFunctionObjArgs(st->report_error, self, exc, NULL);
    Py_DECREF(exc);
    if (reported == NULL) {
        PyErr_WriteUnraisable(st->report_error);
    }
    Py_XDECREF(reported);
}

/* The inbox lets go of a handle.  With the GIL, the cyclic GC sees it (and
 * the context made for it) again, then the reference goes.  Where the
 * inbox's reference is the last one (the producer dropped the handle it was
 * given, as one pushing callbacks does), the handle dies here, and tracking
 * it only for its dealloc to untrack it would cost every submission two more
 * list operations.  Under the GIL a count of 1 is ours alone: any other
 * holder would count.  The context is tracked either way: its own dealloc
 * expects to be.  Free-threaded, both were tracked from birth. */
void
handle_release(PyObject *self)
{
#ifndef Py_GIL_DISABLED
    handle_fields *f = handle_fields_of(self);
    if (f->context != NULL && !PyObject_GC_IsTracked(f->context)) {
        PyObject_GC_Track(f->context);
    }
    if (Py_REFCNT(self) > 1 && !PyObject_GC_IsTracked(self)) {
        PyObject_GC_Track(self);
    }
#endif
    Py_DECREF(self);
}
