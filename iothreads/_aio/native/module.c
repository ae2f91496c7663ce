/* iothreads._aio._core: the module.
 *
 * It borrows from Python what is not worth writing in C: the error a
 * stopped inbox raises, and how a handle reports an exception or captures
 * its creation stack in debug mode (iothreads._aio._handle), so both
 * implementations say the same thing.
 */
#include "core.h"

/* The names of core.h's NAME_* enum, in its order. */
static const char *const names[NAME_COUNT] = {
    "loop", "window", "clock", "closing", "work_pending", "prepare_to_block",
    "serve_inbox", "begin_polling", "spin", "cpu_shared", "end_polling",
    "call_soon", "_first_step", "_spin", "poll_ns", "adjust",
};

static int
core_exec(PyObject *module)
{
    core_state *st = PyModule_GetState(module);
    PyObject *asyncio = NULL, *base = NULL, *errors = NULL, *handles = NULL;
    int status = -1;
    atomic_init(&st->loops_awake, 0);
    atomic_init(&st->awake_generation, 0);
    for (int i = 0; i < NAME_COUNT; i++) {
        if ((st->names[i] = PyUnicode_InternFromString(names[i])) == NULL) {
            return -1;
        }
    }
    if ((asyncio = PyImport_ImportModule("asyncio")) == NULL
        || (base = PyObject_GetAttrString(asyncio, "Handle")) == NULL
        || (errors = PyImport_ImportModule("iothreads._errors")) == NULL
        || (handles = PyImport_ImportModule("iothreads._aio._handle")) == NULL
        || (st->stopped_error = PyObject_GetAttrString(errors, "IOThreadStopped")) == NULL
        || (st->report_error = PyObject_GetAttrString(handles, "report_error")) == NULL
        || (st->capture_stack = PyObject_GetAttrString(handles, "capture_stack")) == NULL
        || (st->hooks_seen = PyList_New(0)) == NULL
        || (st->handle_type = handle_type_create(module, base)) == NULL
        || (st->inbox_type = inbox_type_create(module)) == NULL
        || (st->window_type = window_type_create(module)) == NULL
        || (st->poller_type = poller_type_create(module)) == NULL
        || PyModule_AddObjectRef(module, "Handle", (PyObject *)st->handle_type) < 0
        || PyModule_AddObjectRef(module, "Inbox", (PyObject *)st->inbox_type) < 0
        || PyModule_AddObjectRef(module, "PollWindow", (PyObject *)st->window_type) < 0
        || PyModule_AddObjectRef(module, "CallbackPoller", (PyObject *)st->poller_type) < 0
        || PyModule_AddIntConstant(module, "STEP_NS", STEP_NS) < 0
        || PyModule_AddIntConstant(module, "MAX_BACKOFF", MAX_BACKOFF) < 0
        || PyModule_AddIntConstant(module, "POLL_START_NS", POLL_START_NS) < 0
        || PyModule_AddIntConstant(module, "SPIN_SHARED", SPIN_SHARED) < 0
        || PyModule_AddIntConstant(module, "SPIN_WORK_SHARED", SPIN_WORK_SHARED) < 0) {
        goto done;
    }
    status = 0;
done:
    Py_XDECREF(asyncio);
    Py_XDECREF(base);
    Py_XDECREF(errors);
    Py_XDECREF(handles);
    return status;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    core_state *st = PyModule_GetState(module);
    Py_VISIT(st->handle_type);
    Py_VISIT(st->inbox_type);
    Py_VISIT(st->window_type);
    Py_VISIT(st->poller_type);
    for (int i = 0; i < NAME_COUNT; i++) {
        Py_VISIT(st->names[i]);
    }
    Py_VISIT(st->stopped_error);
    Py_VISIT(st->report_error);
    Py_VISIT(st->capture_stack);
    Py_VISIT(st->hooks_seen);
    return 0;
}

static int
core_clear(PyObject *module)
{
    core_state *st = PyModule_GetState(module);
    Py_CLEAR(st->handle_type);
    Py_CLEAR(st->inbox_type);
    Py_CLEAR(st->window_type);
    Py_CLEAR(st->poller_type);
    for (int i = 0; i < NAME_COUNT; i++) {
        Py_CLEAR(st->names[i]);
    }
    Py_CLEAR(st->stopped_error);
    Py_CLEAR(st->report_error);
    Py_CLEAR(st->capture_stack);
    atomic_store(&st->test_hook, NULL);
    Py_CLEAR(st->hooks_seen);
    return 0;
}

static void
core_free(void *module)
{
    core_clear((PyObject *)module);
}

void
test_point_call(core_state *st, const char *point)
{
    PyObject *hook = atomic_load(&st->test_hook);
    if (hook == NULL) {
        return;
    }
    /* A hook must not fail the protocol it watches: report and go on. */
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
#endif
    PyObject *result = PyObject_CallFunction(hook, "s", point);
    if (result == NULL) {
        PyErr_WriteUnraisable(hook);
    }
    Py_XDECREF(result);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(raised);
#else
    PyErr_Restore(type, value, traceback);
#endif
}

/* _set_test_hook(hook or None): hook(point) is called at each test point,
 * in the thread that reaches it. */
static PyObject *
core_set_test_hook(PyObject *module, PyObject *hook)
{
    core_state *st = PyModule_GetState(module);
    if (hook != Py_None && PyList_Append(st->hooks_seen, hook) < 0) {
        return NULL;
    }
    atomic_store(&st->test_hook, hook != Py_None ? hook : NULL);
    Py_RETURN_NONE;
}

/* _loops_awake() -> int: what the hand-over wait counts (spin.c), for tests. */
static PyObject *
core_loops_awake(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    core_state *st = PyModule_GetState(module);
    return PyLong_FromLong(atomic_load_explicit(&st->loops_awake, memory_order_relaxed));
}

/* _after_fork_in_child(): the parent's loops do not run in the child. */
static PyObject *
core_after_fork_in_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    core_state *st = PyModule_GetState(module);
    atomic_fetch_add_explicit(&st->awake_generation, 1, memory_order_relaxed);
    atomic_store_explicit(&st->loops_awake, 0, memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"_after_fork_in_child", core_after_fork_in_child, METH_NOARGS,
     "_after_fork_in_child(): in a forked child, count no loop awake (the parent's do not run)."},
    {"_loops_awake", core_loops_awake, METH_NOARGS,
     "_loops_awake() -> how many inboxes' loops run Python now (the hand-over wait's count)."},
    {"_set_test_hook", core_set_test_hook, METH_O,
     "_set_test_hook(hook): call hook(point) at the protocol's test points (None: stop)."},
    {"uv_backend_fd", core_uv_backend_fd, METH_O,
     "uv_backend_fd(loop) -> libuv's descriptor for a uvloop loop, else -1."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Every ordering across threads comes from C11 atomics. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "iothreads._aio._core",
    .m_doc = "The native cross-thread hot path of an AioContext.",
    .m_size = sizeof(core_state),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
