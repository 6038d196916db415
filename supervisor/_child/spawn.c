/* supervisor._child._spawn: clone PID 1 and run its setup, all in C.
 *
 * As CPython's _posixsubprocess does for subprocess, every argument is
 * converted before the clone (plan.c), and no Python code runs in the child:
 * it goes straight to sv_pid1_main, which ends in the payload's execve or in
 * _exit. The caller gets the child's pid and a pidfd. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
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
    "clone_flags",     "argv",          "env",          "search_path",   "cwd",
    "hostname",        "uid",           "gid",          "map_base",      "map_size",
    "rootfs",          "overlay",       "read_only_root", "tty",         "network_request",
    "own_loopback",    "live_phases",   "fault",        "id_maps_fault", "capabilities",
    "last_cap",        "system",        "binds",        "rlimits",       "cgroup",
    "masked_paths",    "readonly_paths", "seccomp_bpf", "seccomp_flags", "init",
    "time_namespace",  "time_offsets",  "tmpfs",        "hosts",         "map_gid_base",
    "rootless",        "map_uid_inside", "map_gid_inside", "uid_helper",  "gid_helper",
    "sub_uid_base",    "sub_gid_base",  "sub_size",      "start_gate",    "groups",
    "sysctls",         "join",          "umask",        "inheritable",   "ambient",
    "no_new_privs",    "mount_order",   "map_gid_size",  "rootfs_propagation", "ns_paths", "devices",
};

/* One PID 1 between its clone and the moment it leaves our memory.
 *
 * PID 1 is cloned with CLONE_VM: it runs its setup in this process's memory,
 * on a stack of its own, reading the plan; nothing is copied, so a large
 * caller costs no more per clone than a small one. Its stack and its plan
 * must therefore live until it execs the payload or exits: the kernel says
 * when, by zeroing `alive` (CLONE_CHILD_CLEARTID clears it as the child's
 * hold on this memory ends, at execve or exit). Until then the spawn is kept
 * here, and freed by the next collect(). A PID 1 with memory of its own
 * (plan.own_memory, see clone_pid1) needs none of it once its maps are
 * written. */
struct inflight {
    struct inflight *next;
    pid_t alive;
    int into_cgroup; /* clone3 placed PID 1 in its v2 cgroup */
    struct sv_plan plan;
    struct sv_idmaps *maps; /* written by the clone thread, awaited by PID 1: */
    struct sv_idmaps own_maps; /* here, or with plan.own_memory in a shared page */
    struct sv_arena arena;
    char *stack;
    size_t stack_size;
};

/* PID 1's stack: its setup needs some 40 kB (path buffers); untouched pages
 * cost nothing. Below it, a guard page. */
#define STACK_SIZE (256 * 1024)
#define GUARD_SIZE 4096

/* Spawns whose PID 1 may still use their stack and plan. The clone thread
 * adds to it, collect() (with the GIL) frees from it. */
static struct inflight *inflight;
static pthread_mutex_t inflight_lock = PTHREAD_MUTEX_INITIALIZER;

/* Stacks of PID 1s that are gone, kept for the next ones. A fresh stack
 * (mmap, mprotect for its guard, munmap once done) changes the memory map
 * that every PID 1 still in its setup shares with us: each change takes the
 * map's lock and flushes their TLBs. At most STACK_POOL are kept; their
 * touched pages (some 40 kB each) stay resident. */
#define STACK_POOL 16
/* Under AddressSanitizer a reused stack still carries the shadow of the
 * frames its last PID 1 left (it never returned from them): clear it. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define STACK_REUSED(stack) ASAN_UNPOISON_MEMORY_REGION((stack), STACK_SIZE)
#else
#define STACK_REUSED(stack) ((void)(stack))
#endif
static char *stack_pool[STACK_POOL];
static size_t nstack_pool;
static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER;

/* A stack of STACK_SIZE above its guard page, or NULL with errno set. */
static char *stack_get(void)
{
    char *stack = NULL;
    pthread_mutex_lock(&stack_lock);
    if (nstack_pool > 0)
        stack = stack_pool[--nstack_pool];
    pthread_mutex_unlock(&stack_lock);
    if (stack != NULL) {
        STACK_REUSED(stack);
        return stack;
    }
    char *map = mmap(NULL, STACK_SIZE + GUARD_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (mprotect(map, GUARD_SIZE, PROT_NONE) < 0) {
        int err = errno;
        munmap(map, STACK_SIZE + GUARD_SIZE);
        errno = err;
        return NULL;
    }
    return map + GUARD_SIZE;
}

static void stack_put(char *stack)
{
    pthread_mutex_lock(&stack_lock);
    if (nstack_pool < STACK_POOL) {
        stack_pool[nstack_pool++] = stack;
        stack = NULL;
    }
    pthread_mutex_unlock(&stack_lock);
    if (stack != NULL)
        munmap(stack - GUARD_SIZE, STACK_SIZE + GUARD_SIZE);
}

static void inflight_free(struct inflight *f)
{
    if (f->maps != NULL && f->maps != &f->own_maps)
        munmap(f->maps, sizeof *f->maps); /* PID 1 keeps its own mapping of it */
    if (f->stack != NULL)
        stack_put(f->stack);
    arena_free(&f->arena);
    PyMem_RawFree(f);
}

/* Free the spawns whose PID 1 has left our memory; return how many remain. */
static size_t collect(void)
{
    size_t left = 0;
    pthread_mutex_lock(&inflight_lock);
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
    pthread_mutex_unlock(&inflight_lock);
    return left;
}

static int pid1_entry(void *arg)
{
    struct inflight *f = arg;
    sv_pid1_main(&f->plan, f->maps, f->into_cgroup);
}

/* Clone PID 1 into the v2 cgroup `cgroup_fd` when there is one (clone3),
 * else plainly. Returns the pid or -errno.
 *
 * With plan.own_memory PID 1 is cloned without CLONE_VM, as fork does: it
 * runs on its copy of the stack and plan, and the kernel copies the page
 * tables of this process (a millisecond or so for a large one) so that a
 * change of its ids makes only its own memory non-dumpable. */
static long clone_pid1(struct inflight *f, int cgroup_fd, int exit_signal, int *pidfd)
{
    /* Joining (OCI exec), clone_flags name the namespaces to enter, later. */
    unsigned long flags = (f->plan.join ? 0 : f->plan.clone_flags) | CLONE_PIDFD;
    if (!f->plan.own_memory)
        flags |= CLONE_VM | CLONE_CHILD_CLEARTID;
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

/* The PID namespace an OCI bundle joins by path, or NULL. */
static const char *pid_ns_path(const struct sv_plan *p)
{
    for (size_t i = 0; i < p->nns_paths; i++)
        if (p->ns_paths[i].kind == CLONE_NEWPID)
            return p->ns_paths[i].path;
    return NULL;
}

/* Clone a process into a running container's PID namespace (OCI exec), or
 * into the one a bundle names by path: this thread's namespace for
 * children is that one for the one clone (a PID namespace can only be
 * entered at a fork), then its own again. The other namespaces the child
 * enters itself (join.c). */
static long clone_joining(struct inflight *f, int cgroup_fd, int exit_signal, int *pidfd)
{
    const char *path = pid_ns_path(&f->plan);
    int opened = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (path != NULL && opened < 0)
        return -errno;
    int target = path != NULL ? opened
                              : f->plan.fds[f->plan.npassed + SV_SPAWN_FIXED_FDS + f->plan.ncgroup + f->plan.nidmapped];
    int own = open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own < 0) {
        int err = errno;
        if (opened >= 0)
            close(opened);
        return -err;
    }
    long pid = setns(target, CLONE_NEWPID) < 0 ? -errno : 0;
    if (pid == 0) {
        pid = clone_pid1(f, cgroup_fd, exit_signal, pidfd);
        if (setns(own, CLONE_NEWPID) < 0)
            abort(); /* this thread would clone every later PID 1 into the container */
    }
    close(own);
    if (opened >= 0)
        close(opened);
    return pid;
}

/* --- the clone thread ----------------------------------------------------
 *
 * Creating the namespaces is the clone's own work, done by the kernel in
 * the caller's context: about half a millisecond (the network namespace
 * most of it). Done in the event loop's thread it would hold up every other
 * container's driving, so it is done by one thread of ours that does nothing
 * else, holds no lock of Python's and never ends (PID 1's parent-death
 * signal follows the thread that cloned it: a thread that ended would take
 * its containers along). Every signal is blocked in it, for good. */

struct request {
    struct inflight *f;
    int cgroup_fd;
    int exit_signal;
    int reply_fd; /* the thread writes a struct reply there (the caller's to close) */
};

struct reply {
    int32_t pid;
    int32_t pidfd;
    int32_t err; /* errno of a failed clone, else 0 */
};

static int queue_fd = -1; /* write end of the requests pipe */
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;
static int thread_error;

static void *clone_thread(void *arg)
{
    int requests = (int)(intptr_t)arg;
    for (;;) {
        struct request *req;
        ssize_t n = read(requests, &req, sizeof req);
        if (n != (ssize_t)sizeof req)
            continue; /* EINTR; a pipe write of a pointer is never split */
        int pidfd = -1;
        long pid;
        if (req->f->plan.join || pid_ns_path(&req->f->plan) != NULL)
            pid = clone_joining(req->f, req->cgroup_fd, req->exit_signal, &pidfd);
        else
            pid = clone_pid1(req->f, req->cgroup_fd, req->exit_signal, &pidfd);
        /* PID 1 waits for its id maps: write them at once. Until it is
         * reaped (by the supervisor, after this reply) the pid is its own. */
        if (pid > 0 && !req->f->plan.join && req->f->plan.clone_flags & CLONE_NEWUSER)
            userns_write_maps(&req->f->plan, req->f->maps, pid);
        struct reply rep = {.pid = pid > 0 ? (int32_t)pid : 0, .pidfd = pidfd, .err = pid < 0 ? (int32_t)-pid : 0};
        if (pid < 0 || req->f->plan.own_memory) { /* gone, or never in our memory */
            inflight_free(req->f);
        } else {
            pthread_mutex_lock(&inflight_lock);
            req->f->next = inflight;
            inflight = req->f;
            pthread_mutex_unlock(&inflight_lock);
        }
        while (write(req->reply_fd, &rep, sizeof rep) < 0 && errno == EINTR)
            ;
        PyMem_RawFree(req);
    }
    return NULL;
}

static void start_clone_thread(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        thread_error = errno;
        return;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the thread */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, clone_thread, (void *)(intptr_t)p[0]);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(p[0]);
        close(p[1]);
        thread_error = rc;
        return;
    }
    queue_fd = p[1];
}

PyDoc_STRVAR(spawn_doc, "spawn(config, fds, exit_signal, reply_fd, /)\n--\n\n"
                        "Fill PID 1's plan from a SpawnConfig and the spawn's descriptors, and have the\n"
                        "clone thread clone it (its setup runs in C).\n\n"
                        "The thread writes (pid, pidfd, errno) as three native int32 to reply_fd (a\n"
                        "pipe, which the caller keeps and may use again once it read the reply). The\n"
                        "descriptors must stay open until the reply came. exit_signal is the signal this\n"
                        "process gets when PID 1 exits (0: none, and then only waits with __WALL see it,\n"
                        "until its execve). Raises ValueError or TypeError for a configuration that does\n"
                        "not convert, OSError if the clone thread cannot be started.");

static PyObject *spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "spawn(config, fds, exit_signal, reply_fd) takes four arguments");
        return NULL;
    }
    int reply_fd = PyObject_AsFileDescriptor(args[3]);
    if (reply_fd < 0)
        return NULL;
    PyObject *result = NULL;
    struct inflight *f = NULL;
    struct request *req = NULL;
    int exit_signal = (int)PyLong_AsLong(args[2]);
    if (exit_signal == -1 && PyErr_Occurred())
        goto out;
    if (exit_signal < 0 || exit_signal >= 65) {
        PyErr_Format(PyExc_ValueError, "spawn: exit_signal %d is not a signal", exit_signal);
        goto out;
    }
    PyObject *seq = PySequence_Fast(args[1], "fds must be a sequence of descriptors");
    if (seq == NULL)
        goto out;
    Py_ssize_t nfds = PySequence_Fast_GET_SIZE(seq);
    int fds[SV_MAX_FDS];
    if (nfds > SV_MAX_FDS) {
        PyErr_Format(PyExc_ValueError, "spawn with %zd descriptors (at most %d)", nfds, SV_MAX_FDS);
        nfds = -1;
    }
    for (Py_ssize_t i = 0; i < nfds; i++) {
        fds[i] = PyObject_AsFileDescriptor(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] < 0) {
            nfds = -1;
            break;
        }
    }
    Py_DECREF(seq);
    if (nfds < 0)
        goto out;

    pthread_once(&thread_once, start_clone_thread);
    if (queue_fd < 0) {
        errno = thread_error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    collect();
    f = PyMem_RawCalloc(1, sizeof *f);
    req = PyMem_RawCalloc(1, sizeof *req);
    if (f == NULL || req == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    if (plan_fill(&f->plan, &f->arena, args[0], fds, (size_t)nfds) < 0)
        goto out;
    f->stack = stack_get();
    if (f->stack == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    f->stack_size = STACK_SIZE;
    f->alive = 1;
    f->maps = &f->own_maps;
    if (f->plan.own_memory) {
        void *page = mmap(NULL, sizeof *f->maps, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto out;
        }
        f->maps = page;
    }
    req->f = f;
    req->cgroup_fd = -1;
    for (size_t i = 0; i < f->plan.ncgroup; i++)
        if (f->plan.cgroup[i].kind == SV_CGROUP_CLONE)
            req->cgroup_fd = f->plan.fds[SV_SPAWN_FIXED_FDS + f->plan.npassed + i];
    req->exit_signal = exit_signal;
    req->reply_fd = reply_fd;
    ssize_t n;
    do
        n = write(queue_fd, &req, sizeof req);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof req) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    return Py_NewRef(Py_None); /* the thread owns f and req now */
out:
    if (f != NULL)
        inflight_free(f);
    PyMem_RawFree(req);
    return result;
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

PyDoc_STRVAR(idmap_userns_doc, "idmap_userns(owner_uid, to_uid, owner_gid, to_gid, /)\n--\n\n"
                               "A user namespace whose maps are the one line 'owner to 1' each, for\n"
                               "MOUNT_ATTR_IDMAP: its descriptor (close-on-exec). Raises OSError.");

static PyObject *idmap_userns_py(PyObject *module, PyObject *args)
{
    (void)module;
    unsigned int owner_uid, to_uid, owner_gid, to_gid;
    if (!PyArg_ParseTuple(args, "IIII:idmap_userns", &owner_uid, &to_uid, &owner_gid, &to_gid))
        return NULL;
    int fd = idmap_userns(owner_uid, to_uid, owner_gid, to_gid);
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

PyDoc_STRVAR(idmap_tree_doc, "idmap_tree(path, userns_fd, /)\n--\n\n"
                             "A detached recursive clone of path's mount tree (open_tree) with the id\n"
                             "mapping of userns_fd (mount_setattr MOUNT_ATTR_IDMAP): its descriptor\n"
                             "(close-on-exec). Raises OSError naming path.");

static PyObject *idmap_tree_py(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *path;
    int userns_fd;
    if (!PyArg_ParseTuple(args, "O&i:idmap_tree", PyUnicode_FSConverter, &path, &userns_fd))
        return NULL;
    int fd = idmap_tree(PyBytes_AS_STRING(path), userns_fd);
    if (fd < 0) {
        errno = -fd;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    return PyLong_FromLong(fd);
}

static PyMethodDef methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))spawn, METH_FASTCALL, spawn_doc},
    {"collect", collect_py, METH_NOARGS, collect_doc},
    {"idmap_userns", idmap_userns_py, METH_VARARGS, idmap_userns_doc},
    {"idmap_tree", idmap_tree_py, METH_VARARGS, idmap_tree_doc},
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
