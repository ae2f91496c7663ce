/* What the spin may watch on a uvloop loop: libuv's own descriptor.
 *
 * uvloop hands out its uv_loop_t* (uvloop.loop.libuv_get_loop_t_ptr, "for
 * integration with other C-extensions"), and its shared object exports
 * libuv's uv_backend_fd(), which gives the loop's epoll descriptor: readable
 * when I/O is ready, without consuming anything.  Watching it during a spin
 * lets I/O end the spin as on the stdlib loop.  What cannot be had safely:
 * the time to libuv's next timer (uv_backend_timeout() answers 0 while
 * uvloop runs callbacks, as during a spin), so the spin runs in short steps
 * between which libuv serves its timers.
 */
#include "core.h"

#include <dlfcn.h>

typedef int (*backend_fd_function)(const void *loop);

/* uv_backend_fd(loop) -> the descriptor, or -1 when loop is no uvloop loop or
 * the function cannot be found. */
PyObject *
core_uv_backend_fd(PyObject *module, PyObject *loop)
{
    (void)module;
    PyObject *uvloop = PyImport_ImportModule("uvloop.loop");
    if (uvloop == NULL) {
        PyErr_Clear(); /* no uvloop: then the loop is not one */
        return PyLong_FromLong(-1);
    }
    long fd = -1;
    PyObject *loop_type = PyObject_GetAttrString(uvloop, "Loop");
    PyObject *path = PyObject_GetAttrString(uvloop, "__file__");
    PyObject *capsule = NULL;
    int is_uvloop = loop_type != NULL ? PyObject_IsInstance(loop, loop_type) : -1;
    if (is_uvloop == 1 && path != NULL) {
        capsule = PyObject_CallMethod(uvloop, "libuv_get_loop_t_ptr", "O", loop);
    }
    if (capsule != NULL) {
        void *uv_loop = PyCapsule_GetPointer(capsule, NULL);
        const char *file = PyUnicode_AsUTF8(path);
        /* The object is loaded already: RTLD_NOLOAD only finds it. */
        void *library = (uv_loop != NULL && file != NULL)
                            ? dlopen(file, RTLD_NOW | RTLD_NOLOAD) : NULL;
        if (library != NULL) {
            backend_fd_function backend_fd;
            *(void **)&backend_fd = dlsym(library, "uv_backend_fd");
            if (backend_fd != NULL) {
                fd = backend_fd(uv_loop);
            }
            dlclose(library);
        }
    }
    Py_XDECREF(capsule);
    Py_XDECREF(path);
    Py_XDECREF(loop_type);
    Py_DECREF(uvloop);
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromLong(fd);
}
