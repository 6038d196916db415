/* supervisor._child._spawn: clone PID 1 and run its setup, all in C.
 *
 * As CPython's _posixsubprocess does for subprocess, every argument is
 * converted before the clone (plan.c), and no Python code runs in the child:
 * it goes straight to sv_pid1_main, which ends in the payload's execve or in
 * _exit. The caller gets the child's pid and a pidfd. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "plan.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* The SpawnConfig fields plan.c reads (compared with the dataclass by the
 * tests, so that the two cannot drift). */
static const char *const config_fields[] = {
    "clone_flags",  "argv",           "env",          "search_path",  "cwd",          "hostname",
    "uid",          "gid",            "rootfs",       "overlay",      "read_only_root", "tty",
    "network_request", "own_loopback", "live_phases", "fault",        "capabilities", "last_cap",
    "system",       "binds",          "rlimits",      "cgroup",       "masked_paths", "readonly_paths",
    "seccomp_bpf",  "seccomp_flags",  "init",         "time_namespace", "time_offsets",
};

/* Clone with fork semantics: into the v2 cgroup `cgroup_fd` when there is
 * one (clone3), else plainly. Returns the pid (0 in the child) or -errno;
 * `*into` says whether clone3 placed the child. */
static long clone_pid1(unsigned long flags, int cgroup_fd, int *pidfd, int *into)
{
    *into = 0;
    if (cgroup_fd >= 0) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags | CLONE_PIDFD | CLONE_INTO_CGROUP;
        args.pidfd = (uint64_t)(uintptr_t)pidfd;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)cgroup_fd;
        long pid = sv_raw(SYS_clone3, (long)&args, sizeof args, 0, 0, 0);
        if (pid >= 0) {
            *into = 1;
            return pid;
        }
        /* clone3 unknown or filtered (a seccomp profile of the container we
         * run in): PID 1 then joins by cgroup.procs. */
        if (pid != -ENOSYS && pid != -E2BIG && pid != -EPERM)
            return pid;
    }
    /* clone(2): the parent's pidfd is stored through the parent_tid
     * argument, the third on x86_64 and aarch64 alike. */
    return sv_raw(SYS_clone, (long)(flags | CLONE_PIDFD | SIGCHLD), 0, (long)pidfd, 0, 0);
}

PyDoc_STRVAR(spawn_doc, "spawn(config, fds, /)\n--\n\n"
                        "Clone PID 1 from a SpawnConfig and the spawn's descriptors; run its setup in C.\n\n"
                        "Returns (pid, pidfd). Raises OSError if the clone fails, ValueError or\n"
                        "TypeError for a configuration that does not convert.");

static PyObject *spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "spawn(config, fds) takes two arguments");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[1], "fds must be a sequence of descriptors");
    if (seq == NULL)
        return NULL;
    Py_ssize_t nfds = PySequence_Fast_GET_SIZE(seq);
    if (nfds > SV_MAX_FDS) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "spawn with %zd descriptors (at most %d)", nfds, SV_MAX_FDS);
    }
    int fds[SV_MAX_FDS];
    for (Py_ssize_t i = 0; i < nfds; i++) {
        fds[i] = PyObject_AsFileDescriptor(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] < 0) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);

    struct sv_arena arena = {.n = 0};
    struct sv_plan plan;
    if (plan_fill(&plan, &arena, args[0], fds, (size_t)nfds) < 0) {
        arena_free(&arena);
        return NULL;
    }
    int cgroup_fd = -1;
    for (size_t i = 0; i < plan.ncgroup; i++)
        if (plan.cgroup[i].kind == SV_CGROUP_CLONE)
            cgroup_fd = plan.fds[SV_SPAWN_FIXED_FDS + plan.npassed + i];

    /* No handler of this process may run in the child: every signal is
     * blocked across the clone, and PID 1 resets them all first thing. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1, into = 0;
    long pid = clone_pid1(plan.clone_flags, cgroup_fd, &pidfd, &into);
    if (pid == 0)
        sv_pid1_main(&plan, into);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    arena_free(&arena);
    if (pid < 0) {
        errno = (int)-pid;
        return PyErr_Format(PyExc_OSError, "%s(%#lx%s) failed: %s", cgroup_fd >= 0 ? "clone3" : "clone",
                            plan.clone_flags, cgroup_fd >= 0 ? ", CLONE_INTO_CGROUP" : "", strerror((int)-pid));
    }
    return Py_BuildValue("(li)", pid, pidfd);
}

static PyMethodDef methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))spawn, METH_FASTCALL, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    size_t n = sizeof config_fields / sizeof config_fields[0];
    PyObject *fields = PyTuple_New((Py_ssize_t)n);
    if (fields == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(config_fields[i]);
        if (s == NULL) {
            Py_DECREF(fields);
            return -1;
        }
        PyTuple_SET_ITEM(fields, (Py_ssize_t)i, s);
    }
    if (PyModule_AddObject(m, "CONFIG_FIELDS", fields) < 0) {
        Py_DECREF(fields);
        return -1;
    }
    if (PyModule_AddIntConstant(m, "HEADER_SIZE", sizeof(struct sv_header)) < 0 ||
        PyModule_AddIntConstant(m, "MARK_SIZE", sizeof(struct sv_mark)) < 0 ||
        PyModule_AddIntConstant(m, "INIT_SHEDS_MEMORY", SV_INIT_SHEDS_MEMORY) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "supervisor._child._spawn",
    .m_doc = "PID 1's setup in C: clone from a SpawnConfig, set up, exec.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__spawn(void) { return PyModuleDef_Init(&module_def); }
