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
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
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
    "seccomp_bpf",  "seccomp_flags",
};

/* One PID 1 between its clone and the moment it leaves our memory.
 *
 * PID 1 is cloned with CLONE_VM: it runs its setup in this process's memory,
 * on a stack of its own, reading the plan; nothing is copied, so a large
 * caller costs no more per clone than a small one. Its stack and its plan
 * must therefore live until it execs the payload or exits: the kernel says
 * when, by zeroing `alive` (CLONE_CHILD_CLEARTID clears it as the child's
 * hold on this memory ends, at execve or exit). Until then the spawn is kept
 * here, and freed by the next collect(). */
struct inflight {
    struct inflight *next;
    pid_t alive;
    int into_cgroup; /* clone3 placed PID 1 in its v2 cgroup */
    struct sv_plan plan;
    struct sv_arena arena;
    char *stack;
    size_t stack_size;
};

/* PID 1's stack: its setup needs some 40 kB (path buffers); untouched pages
 * cost nothing. Below it, a guard page. */
#define STACK_SIZE (256 * 1024)
#define GUARD_SIZE 4096

/* Spawns whose PID 1 may still use their stack and plan (the GIL guards it). */
static struct inflight *inflight;

static void inflight_free(struct inflight *f)
{
    if (f->stack != NULL)
        munmap(f->stack - GUARD_SIZE, f->stack_size + GUARD_SIZE);
    arena_free(&f->arena);
    PyMem_RawFree(f);
}

/* Free the spawns whose PID 1 has left our memory; return how many remain. */
static size_t collect(void)
{
    size_t left = 0;
    for (struct inflight **p = &inflight; *p != NULL;) {
        struct inflight *f = *p;
        if (__atomic_load_n(&f->alive, __ATOMIC_ACQUIRE) == 0) {
            *p = f->next;
            inflight_free(f);
        } else {
            left++;
            p = &f->next;
        }
    }
    return left;
}

static int pid1_entry(void *arg)
{
    struct inflight *f = arg;
    sv_pid1_main(&f->plan, f->into_cgroup);
}

/* Clone PID 1 into the v2 cgroup `cgroup_fd` when there is one (clone3),
 * else plainly. Returns the pid or -errno. */
static long clone_pid1(struct inflight *f, int cgroup_fd, int exit_signal, int *pidfd)
{
    unsigned long flags = f->plan.clone_flags | CLONE_VM | CLONE_PIDFD | CLONE_CHILD_CLEARTID;
    if (cgroup_fd >= 0) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = flags | CLONE_INTO_CGROUP;
        args.pidfd = (uint64_t)(uintptr_t)pidfd;
        args.child_tid = (uint64_t)(uintptr_t)&f->alive;
        args.exit_signal = (uint64_t)exit_signal;
        args.stack = (uint64_t)(uintptr_t)f->stack;
        args.stack_size = f->stack_size;
        args.cgroup = (uint64_t)cgroup_fd;
        f->into_cgroup = 1;
        long pid = sv_clone3(&args, sizeof args, pid1_entry, f);
        if (pid >= 0)
            return pid;
        /* clone3 unknown or filtered (a seccomp profile of the container we
         * run in): PID 1 then joins by cgroup.procs. */
        if (pid != -ENOSYS && pid != -E2BIG && pid != -EPERM)
            return pid;
    }
    f->into_cgroup = 0;
    /* glibc's clone(2) trampoline; the pidfd comes through parent_tid. */
    int pid = clone(pid1_entry, f->stack + f->stack_size, (int)(flags | (unsigned long)exit_signal), f, pidfd, NULL,
                    &f->alive);
    return pid < 0 ? -errno : pid;
}

PyDoc_STRVAR(spawn_doc, "spawn(config, fds, exit_signal=SIGCHLD, /)\n--\n\n"
                        "Clone PID 1 from a SpawnConfig and the spawn's descriptors; run its setup in C.\n\n"
                        "exit_signal is the signal its parent gets when it exits (0: none, and then only\n"
                        "waits with __WALL see it). Returns (pid, pidfd). Raises OSError if the clone\n"
                        "fails, ValueError or TypeError for a configuration that does not convert.");

static PyObject *spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "spawn(config, fds, exit_signal=SIGCHLD) takes two or three arguments");
        return NULL;
    }
    int exit_signal = SIGCHLD;
    if (nargs == 3) {
        exit_signal = PyLong_AsLong(args[2]);
        if (exit_signal == -1 && PyErr_Occurred())
            return NULL;
        if (exit_signal < 0 || exit_signal >= 65)
            return PyErr_Format(PyExc_ValueError, "spawn: exit_signal %d is not a signal", exit_signal);
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

    collect();
    struct inflight *f = PyMem_RawCalloc(1, sizeof *f);
    if (f == NULL)
        return PyErr_NoMemory();
    if (plan_fill(&f->plan, &f->arena, args[0], fds, (size_t)nfds) < 0) {
        inflight_free(f);
        return NULL;
    }
    char *map = mmap(NULL, STACK_SIZE + GUARD_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED || mprotect(map, GUARD_SIZE, PROT_NONE) < 0) {
        if (map != MAP_FAILED)
            munmap(map, STACK_SIZE + GUARD_SIZE);
        inflight_free(f);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    f->stack = map + GUARD_SIZE;
    f->stack_size = STACK_SIZE;
    f->alive = 1;
    int cgroup_fd = -1;
    for (size_t i = 0; i < f->plan.ncgroup; i++)
        if (f->plan.cgroup[i].kind == SV_CGROUP_CLONE)
            cgroup_fd = f->plan.fds[SV_SPAWN_FIXED_FDS + f->plan.npassed + i];

    /* No handler of this process may run in the child: every signal is
     * blocked across the clone, and PID 1 resets them all first thing. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    long pid = clone_pid1(f, cgroup_fd, exit_signal, &pidfd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        int into = cgroup_fd >= 0;
        unsigned long flags = f->plan.clone_flags;
        inflight_free(f);
        errno = (int)-pid;
        return PyErr_Format(PyExc_OSError, "%s(%#lx%s) failed: %s", into ? "clone3" : "clone", flags,
                            into ? ", CLONE_INTO_CGROUP" : "", strerror((int)-pid));
    }
    f->next = inflight;
    inflight = f;
    return Py_BuildValue("(li)", pid, pidfd);
}

PyDoc_STRVAR(collect_doc, "collect()\n--\n\n"
                          "Free the stacks and plans of the PID 1s that have exec'd or exited;\n"
                          "return how many are still in use.");

static PyObject *collect_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromSize_t(collect());
}

static PyMethodDef methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))spawn, METH_FASTCALL, spawn_doc},
    {"collect", collect_py, METH_NOARGS, collect_doc},
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
        PyModule_AddIntConstant(m, "MARK_SIZE", sizeof(struct sv_mark)) < 0)
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
