/* The plan, filled from a supervisor._protocol.SpawnConfig before the clone.
 *
 * Every value is converted and copied here, in the calling process, with
 * the GIL held, into memory of the plan's own (an arena freed as one): after
 * the clone, PID 1 reads only that, and never a Python object. Field names
 * are those of the dataclass; spawn.c exports them as CONFIG_FIELDS, which
 * the tests compare with the dataclass. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <linux/mount.h>
#include <sched.h>

#include "plan.h"

/* Zeroed memory from the plan's arena: carved from chunks of ARENA_CHUNK
 * (a command of 60,000 arguments is 60,000 strings), a large request in a
 * block of its own. At most SV_ARENA_BLOCKS blocks: 16 MiB of small pieces,
 * far past what execve takes (ARG_MAX). */
#define ARENA_CHUNK (64 * 1024)

static void *arena_alloc(struct sv_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15; /* aligned for every type the plan holds */
    if (size == 0)
        size = 16;
    if (size <= a->left) {
        void *p = a->next;
        a->next += size;
        a->left -= size;
        return p;
    }
    if (a->n == sizeof a->blocks / sizeof a->blocks[0]) {
        PyErr_SetString(PyExc_ValueError, "spawn configuration too large (over 16 MiB)");
        return NULL;
    }
    int own = size > ARENA_CHUNK / 4;
    char *p = PyMem_RawCalloc(1, own ? size : ARENA_CHUNK);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    a->blocks[a->n++] = p;
    if (!own) {
        a->next = p + size;
        a->left = ARENA_CHUNK - size;
    }
    return p;
}

void arena_free(struct sv_arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        PyMem_RawFree(a->blocks[i]);
    a->n = 0;
    a->next = NULL;
    a->left = 0;
}

static PyObject *field(PyObject *obj, const char *name) { return PyObject_GetAttrString(obj, name); }

/* A str (file-system encoded) or bytes, copied; NULL with an exception set. */
static const char *copy_str(struct sv_arena *a, PyObject *value, const char *where)
{
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(value, &bytes)) {
        PyErr_Format(PyExc_TypeError, "SpawnConfig.%s: expected a path string", where);
        return NULL;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(bytes);
    char *out = arena_alloc(a, (size_t)len + 1);
    if (out != NULL)
        memcpy(out, PyBytes_AS_STRING(bytes), (size_t)len + 1);
    Py_DECREF(bytes);
    return out;
}

static int get_str(struct sv_arena *a, PyObject *cfg, const char *name, const char **out, int optional)
{
    PyObject *v = field(cfg, name);
    if (v == NULL)
        return -1;
    if (optional && v == Py_None) {
        *out = NULL;
        Py_DECREF(v);
        return 0;
    }
    *out = copy_str(a, v, name);
    Py_DECREF(v);
    return *out ? 0 : -1;
}

static int get_long(PyObject *cfg, const char *name, long long *out)
{
    PyObject *v = field(cfg, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int get_u64(PyObject *cfg, const char *name, uint64_t *out)
{
    PyObject *v = field(cfg, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    return (*out == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

static int get_bool(PyObject *cfg, const char *name, int *out)
{
    PyObject *v = field(cfg, name);
    if (v == NULL)
        return -1;
    *out = PyObject_IsTrue(v);
    Py_DECREF(v);
    return *out < 0 ? -1 : 0;
}

/* The field as a fast sequence (a new reference), or NULL. */
static PyObject *get_seq(PyObject *cfg, const char *name)
{
    PyObject *v = field(cfg, name);
    if (v == NULL)
        return NULL;
    PyObject *seq = PySequence_Fast(v, name);
    Py_DECREF(v);
    return seq;
}

/* A list of str as a NULL-terminated array. */
static int get_strv(struct sv_arena *a, PyObject *cfg, const char *name, char ***out, size_t *count)
{
    PyObject *seq = get_seq(cfg, name);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    char **arr = arena_alloc(a, sizeof(char *) * ((size_t)n + 1));
    for (Py_ssize_t i = 0; arr != NULL && i < n; i++) {
        arr[i] = (char *)copy_str(a, PySequence_Fast_GET_ITEM(seq, i), name);
        if (arr[i] == NULL)
            arr = NULL;
    }
    Py_DECREF(seq);
    if (arr == NULL)
        return -1;
    *out = arr;
    if (count)
        *count = (size_t)n;
    return 0;
}

/* A list of records (dataclass instances), each read by `one`. */
typedef int (*read_one)(struct sv_arena *a, PyObject *item, void *out);

static int get_records(struct sv_arena *a, PyObject *cfg, const char *name, size_t elem, read_one one, void **out,
                       size_t *count)
{
    PyObject *seq = get_seq(cfg, name);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    char *arr = arena_alloc(a, elem * (size_t)(n ? n : 1));
    int rc = arr ? 0 : -1;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
        rc = one(a, PySequence_Fast_GET_ITEM(seq, i), arr + elem * (size_t)i);
    Py_DECREF(seq);
    if (rc == 0) {
        *out = arr;
        *count = (size_t)n;
    }
    return rc;
}

/* A propagation type: one of MS_SHARED, MS_SLAVE, MS_PRIVATE and
 * MS_UNBINDABLE, with MS_REC or not; or 0. */
static int get_propagation(PyObject *obj, const char *name, unsigned long *out)
{
    uint64_t v;
    if (get_u64(obj, name, &v))
        return -1;
    uint64_t kind = v & ~(uint64_t)MS_REC;
    if (v != 0 && kind != MS_SHARED && kind != MS_SLAVE && kind != MS_PRIVATE && kind != MS_UNBINDABLE) {
        PyErr_Format(PyExc_ValueError, "%s: one of MS_SHARED, MS_SLAVE, MS_PRIVATE, MS_UNBINDABLE (| MS_REC)", name);
        return -1;
    }
    *out = (unsigned long)v;
    return 0;
}

static int read_bind(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_bind *b = out;
    return get_str(a, item, "src", &b->src, 0) || get_str(a, item, "dst", &b->dst, 0) ||
                   get_bool(item, "read_only", &b->read_only) || get_bool(item, "idmapped", &b->idmapped) ||
                   get_propagation(item, "propagation", &b->propagation)
               ? -1
               : 0;
}

static int read_sysdir(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_sysdir *d = out;
    return get_str(a, item, "name", &d->name, 0) || get_str(a, item, "link", &d->link, 1) ? -1 : 0;
}

static int read_rlimit(struct sv_arena *a, PyObject *item, void *out)
{
    (void)a;
    struct sv_rlimit *r = out;
    long long resource;
    if (get_long(item, "resource", &resource) || get_u64(item, "soft", &r->soft) || get_u64(item, "hard", &r->hard))
        return -1;
    r->resource = (int)resource;
    return 0;
}

static int read_tmpfs(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_tmpfs *t = out;
    return get_str(a, item, "path", &t->path, 0) || get_str(a, item, "options", &t->options, 0) ||
                   get_str(a, item, "source", &t->source, 0) ||
                   get_bool(item, "read_only", &t->read_only) || get_bool(item, "exec", &t->exec) ||
                   get_propagation(item, "propagation", &t->propagation)
               ? -1
               : 0;
}

static int read_sysctl(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_sysctl *k = out;
    if (get_str(a, item, "path", &k->path, 0) || get_str(a, item, "value", &k->value, 0))
        return -1;
    if (k->path[0] == '/' || strstr(k->path, "..") != NULL) {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.sysctls: %s is not a path below /proc/sys", k->path);
        return -1;
    }
    return 0;
}

static int get_u32(PyObject *cfg, const char *name, uint32_t *out, long long lo, long long hi);

static int read_device(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_device *d = out;
    const char *kind;
    if (get_str(a, item, "path", &d->path, 0) || get_str(a, item, "kind", &kind, 0) ||
        get_u32(item, "major", &d->major, 0, UINT32_MAX) || get_u32(item, "minor", &d->minor, 0, UINT32_MAX) ||
        get_u32(item, "mode", &d->mode, 0, 07777) || get_u32(item, "uid", &d->uid, 0, UINT32_MAX - 1) ||
        get_u32(item, "gid", &d->gid, 0, UINT32_MAX - 1))
        return -1;
    if ((kind[0] != 'c' && kind[0] != 'b' && kind[0] != 'p') || kind[1] != '\0') {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.devices: kind is c, b or p");
        return -1;
    }
    d->kind = kind[0];
    return 0;
}

static int read_ns_path(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_ns_path *n = out;
    uint64_t kind;
    if (get_u64(item, "kind", &kind) || get_str(a, item, "path", &n->path, 0))
        return -1;
    n->kind = (unsigned long)kind;
    return 0;
}

static int read_time_offset(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_time_offset *o = out;
    long long seconds, nanoseconds;
    if (get_str(a, item, "clock", &o->clock, 0) || get_long(item, "seconds", &seconds) ||
        get_long(item, "nanoseconds", &nanoseconds))
        return -1;
    if (strcmp(o->clock, "monotonic") != 0 && strcmp(o->clock, "boottime") != 0) {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.time_offsets: unknown clock %s", o->clock);
        return -1;
    }
    if (nanoseconds < 0 || nanoseconds > 999999999) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.time_offsets: nanoseconds must be within 0..999999999");
        return -1;
    }
    o->seconds = seconds;
    o->nanoseconds = (uint32_t)nanoseconds;
    return 0;
}

static int read_cgroup(struct sv_arena *a, PyObject *item, void *out)
{
    struct sv_cgroup_entry *e = out;
    const char *kind;
    if (get_str(a, item, "kind", &kind, 0) || get_str(a, item, "path", &e->path, 0))
        return -1;
    if (strcmp(kind, "clone") == 0)
        e->kind = SV_CGROUP_CLONE;
    else if (strcmp(kind, "procs") == 0)
        e->kind = SV_CGROUP_PROCS;
    else if (strcmp(kind, "tasks") == 0)
        e->kind = SV_CGROUP_TASKS;
    else {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.cgroup: unknown entry kind %s", kind);
        return -1;
    }
    return 0;
}

static int get_seccomp(struct sv_arena *a, PyObject *cfg, struct sv_plan *p)
{
    PyObject *v = field(cfg, "seccomp_bpf");
    if (v == NULL)
        return -1;
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(v, &data, &len) < 0) {
        Py_DECREF(v);
        return -1;
    }
    if (len % (Py_ssize_t)sizeof(struct sock_filter) != 0 ||
        len / (Py_ssize_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.seccomp_bpf is not a classic BPF program");
        return -1;
    }
    struct sock_filter *prog = arena_alloc(a, (size_t)len);
    if (prog != NULL)
        memcpy(prog, data, (size_t)len);
    Py_DECREF(v);
    if (prog == NULL)
        return -1;
    p->seccomp.filter = prog;
    p->seccomp.len = (unsigned short)(len / (Py_ssize_t)sizeof(struct sock_filter));
    long long flags;
    if (get_long(cfg, "seccomp_flags", &flags))
        return -1;
    p->seccomp_flags = (unsigned int)flags;
    return 0;
}

/* A uint32 field within lo..hi; -1 with ValueError naming it otherwise. */
static int get_u32(PyObject *cfg, const char *name, uint32_t *out, long long lo, long long hi)
{
    long long v;
    if (get_long(cfg, name, &v))
        return -1;
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.%s must be within %lld..%lld", name, lo, hi);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* The user namespace's maps, and whether PID 1 needs memory of its own for
 * them. Each extent ends below 2**32-1, the kernel's bound. Host uid 0 is
 * mapped only for an OCI bundle without a user namespace of its own (its
 * identity map: SpawnConfig.start_gate). */
static int plan_userns(struct sv_plan *p, struct sv_arena *a, PyObject *cfg)
{
    if (get_u32(cfg, "map_base", &p->map_base, p->start_gate || p->join ? 0 : 1, UINT32_MAX - 1) ||
        get_u32(cfg, "map_size", &p->map_size, 1, (long long)UINT32_MAX - p->map_base))
        return -1;
    if (get_u32(cfg, "map_gid_size", &p->map_gid_size, 0, UINT32_MAX))
        return -1;
    if (p->map_gid_size == 0)
        p->map_gid_size = p->map_size;
    else if (p->map_gid_size != p->map_size && !p->start_gate && !p->join) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.map_gid_size differs from map_size only for OCI");
        return -1;
    }
    long long top = (long long)UINT32_MAX - (p->map_size > p->map_gid_size ? p->map_size : p->map_gid_size);
    if (get_u32(cfg, "map_gid_base", &p->map_gid_base, 0, top) ||
        get_u32(cfg, "map_uid_inside", &p->map_uid_inside, 0, top) ||
        get_u32(cfg, "map_gid_inside", &p->map_gid_inside, 0, top) ||
        get_str(a, cfg, "uid_helper", &p->uid_helper, 1) || get_str(a, cfg, "gid_helper", &p->gid_helper, 1) ||
        get_u32(cfg, "sub_uid_base", &p->sub_uid_base, 0, UINT32_MAX - 1) ||
        get_u32(cfg, "sub_gid_base", &p->sub_gid_base, 0, UINT32_MAX - 1) ||
        get_u32(cfg, "sub_size", &p->sub_size, 0, (long long)UINT32_MAX - 1))
        return -1;
    int helpers = p->uid_helper != NULL;
    if (helpers != (p->gid_helper != NULL)) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.uid_helper and gid_helper are both set or both None");
        return -1;
    }
    if (p->sub_size > 0 && (!helpers || p->map_size != 1 || p->map_uid_inside != 0 || p->map_gid_inside != 0 ||
                            p->sub_uid_base == 0 || p->sub_gid_base == 0)) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.sub_size needs the helpers, and one id mapped at 0 before it");
        return -1;
    }
    if (p->rootless && !helpers && p->map_size != 1) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.map_size must be 1 when rootless (one id is mapped)");
        return -1;
    }
    /* Rootless, PID 1's memory must stay dumpable until its maps are
     * written (SpawnConfig.rootless). A payload id that is not the caller's
     * makes the memory of whoever changes to it non-dumpable: shared with
     * the supervisor, that would shut every later PID 1 out of its maps. */
    p->own_memory = p->rootless && (p->uid != p->map_uid_inside || p->gid != p->map_gid_inside);
    return 0;
}

/* The payload's supplementary groups. */
static int get_groups(struct sv_arena *a, PyObject *cfg, struct sv_plan *p)
{
    PyObject *seq = get_seq(cfg, "groups");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    gid_t *arr = n > SV_MAX_GROUPS ? NULL : arena_alloc(a, sizeof(gid_t) * (size_t)(n ? n : 1));
    if (n > SV_MAX_GROUPS)
        PyErr_Format(PyExc_ValueError, "SpawnConfig.groups: at most %d", SV_MAX_GROUPS);
    for (Py_ssize_t i = 0; arr != NULL && i < n; i++) {
        unsigned long g = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((g == (unsigned long)-1 && PyErr_Occurred()) || g > UINT32_MAX - 1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "SpawnConfig.groups: a gid out of range");
            arr = NULL;
        } else {
            arr[i] = (gid_t)g;
        }
    }
    Py_DECREF(seq);
    if (arr == NULL)
        return -1;
    p->groups = arr;
    p->ngroups = (size_t)n;
    return 0;
}

/* SpawnConfig.mount_order: each standard filesystem once (/dev/mqueue at
 * most once), one letter per tmpfs and per bind; only for an OCI bundle. */
static int check_mount_order(const struct sv_plan *p)
{
    const char *o = p->mount_order;
    if (o[0] == '\0')
        return 0;
    size_t seen[128] = {0};
    for (size_t i = 0; o[i]; i++) {
        unsigned char k = (unsigned char)o[i];
        if (k >= 128 || !strchr("pdtqsTB", k)) {
            PyErr_Format(PyExc_ValueError, "SpawnConfig.mount_order: unknown letter %c", o[i]);
            return -1;
        }
        seen[k]++;
    }
    if (!p->start_gate || seen['p'] != 1 || seen['d'] != 1 || seen['t'] != 1 || seen['s'] != 1 || seen['q'] > 1 ||
        seen['T'] != p->ntmpfs || seen['B'] != p->nbinds) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.mount_order (OCI only) lists p, d, t and s once, q at most "
                                          "once, and one T per tmpfs, one B per bind");
        return -1;
    }
    return 0;
}

int plan_fill(struct sv_plan *p, struct sv_arena *a, PyObject *cfg, const int *fds, size_t nfds)
{
    long long v;
    uint64_t flags;
    char **argv, **envp;
    size_t n;
    memset(p, 0, sizeof *p);
    if (get_u64(cfg, "clone_flags", &flags) || get_strv(a, cfg, "argv", &argv, &n) ||
        get_strv(a, cfg, "env", &envp, NULL) || get_str(a, cfg, "search_path", &p->search_path, 0) ||
        get_str(a, cfg, "cwd", &p->cwd, 0) || get_str(a, cfg, "hostname", &p->hostname, 0) ||
        get_str(a, cfg, "hosts", &p->hosts, 1))
        return -1;
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.argv is empty");
        return -1;
    }
    p->clone_flags = (unsigned long)flags;
    p->argv = argv;
    p->envp = envp;
    if (get_long(cfg, "uid", &v))
        return -1;
    p->uid = (uid_t)v;
    if (get_long(cfg, "gid", &v))
        return -1;
    p->gid = (gid_t)v;
    if (get_bool(cfg, "rootless", &p->rootless) || get_bool(cfg, "start_gate", &p->start_gate) ||
        get_bool(cfg, "join", &p->join) || get_str(a, cfg, "mount_order", &p->mount_order, 0) ||
        plan_userns(p, a, cfg) < 0)
        return -1;
    if (get_str(a, cfg, "rootfs", &p->rootfs, 1) || get_bool(cfg, "overlay", &p->overlay) ||
        get_bool(cfg, "read_only_root", &p->read_only_root) || get_bool(cfg, "tty", &p->tty) ||
        get_bool(cfg, "network_request", &p->network_request) || get_bool(cfg, "own_loopback", &p->own_loopback) ||
        get_bool(cfg, "live_phases", &p->live_phases) || get_u64(cfg, "capabilities", &p->capabilities) ||
        get_bool(cfg, "init", &p->init) || get_bool(cfg, "time_namespace", &p->time_namespace) ||
        get_groups(a, cfg, p) < 0 || get_u64(cfg, "inheritable", &p->inheritable) ||
        get_u64(cfg, "ambient", &p->ambient) || get_bool(cfg, "no_new_privs", &p->no_new_privs))
        return -1;
    if ((p->inheritable | p->ambient) & ~p->capabilities || p->ambient & ~p->inheritable) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.ambient must be within inheritable, within capabilities");
        return -1;
    }

    if ((p->start_gate || p->join) && (p->rootless || p->init || (p->start_gate && p->join))) {
        PyErr_SetString(PyExc_ValueError,
                        "SpawnConfig.start_gate or join (one of them) is for a root supervisor without init");
        return -1;
    }
    /* Both outlive the caller: they must not keep the caller's memory alive,
     * nor wait in it; and a process that enters a user namespace must not
     * share its memory with one that stays out. */
    p->own_memory = p->own_memory || p->start_gate || p->join;
    if (p->rootless && p->init) {
        /* A rootless PID 1 stays dumpable, and an init would stay in our memory
         * for good: the payload could ptrace it (see SpawnConfig.rootless). */
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.init cannot be set when rootless");
        return -1;
    }
    if (get_long(cfg, "umask", &v))
        return -1;
    if (v < -1 || v > 0777) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.umask must be -1 or within 0..0o777");
        return -1;
    }
    p->umask = (int)v;
    if (get_long(cfg, "fault", &v))
        return -1;
    p->fault = (int)v;
    if (get_long(cfg, "id_maps_fault", &v))
        return -1;
    if (v < 0 || v > 2) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.id_maps_fault must be 0, 1 or 2");
        return -1;
    }
    p->id_maps_fault = v == 0 ? 0 : v == 1 ? SV_MAPS_FAULT_BEFORE : SV_MAPS_FAULT_AFTER;
    if (get_long(cfg, "last_cap", &v))
        return -1;
    if (v < 0 || v > 63) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.last_cap must be within 0..63");
        return -1;
    }
    p->last_cap = (int)v;
    void *arr;
    if (get_records(a, cfg, "system", sizeof(struct sv_sysdir), read_sysdir, &arr, &p->nsystem))
        return -1;
    p->system = arr;
    if (get_records(a, cfg, "binds", sizeof(struct sv_bind), read_bind, &arr, &p->nbinds))
        return -1;
    p->binds = arr;
    for (size_t i = 0; i < p->nbinds; i++)
        p->nidmapped += p->binds[i].idmapped ? 1 : 0;
    if (p->nidmapped > SV_MAX_IDMAPPED) {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.binds: at most %d id-mapped", SV_MAX_IDMAPPED);
        return -1;
    }
    if (get_records(a, cfg, "tmpfs", sizeof(struct sv_tmpfs), read_tmpfs, &arr, &p->ntmpfs))
        return -1;
    p->tmpfs = arr;
    if (get_records(a, cfg, "rlimits", sizeof(struct sv_rlimit), read_rlimit, &arr, &p->nrlimits))
        return -1;
    p->rlimits = arr;
    if (get_records(a, cfg, "sysctls", sizeof(struct sv_sysctl), read_sysctl, &arr, &p->nsysctls))
        return -1;
    p->sysctls = arr;
    if (get_records(a, cfg, "devices", sizeof(struct sv_device), read_device, &arr, &p->ndevices))
        return -1;
    p->devices = arr;
    if (p->ndevices > 0 && (!p->start_gate || p->clone_flags & CLONE_NEWUSER || !p->mount_order[0])) {
        PyErr_SetString(PyExc_ValueError,
                        "SpawnConfig.devices are for OCI (with mount_order), without a user namespace of its own");
        return -1;
    }
    if (get_records(a, cfg, "ns_paths", sizeof(struct sv_ns_path), read_ns_path, &arr, &p->nns_paths))
        return -1;
    p->ns_paths = arr;
    unsigned long joined = 0;
    for (size_t i = 0; i < p->nns_paths; i++) {
        unsigned long k = p->ns_paths[i].kind;
        if ((k != CLONE_NEWNET && k != CLONE_NEWIPC && k != CLONE_NEWUTS && k != CLONE_NEWNS && k != CLONE_NEWPID) ||
            (k & (joined | p->clone_flags))) {
            PyErr_SetString(PyExc_ValueError, "SpawnConfig.ns_paths: each of net, ipc, uts, mnt, pid at most once, "
                                              "and not also in clone_flags");
            return -1;
        }
        joined |= k;
    }
    if (p->nns_paths > 0 && (!p->start_gate || p->clone_flags & CLONE_NEWUSER)) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.ns_paths are for OCI, without a user namespace of its own");
        return -1;
    }
    if (!(p->clone_flags & CLONE_NEWUSER) && !(p->start_gate || p->join)) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.clone_flags: CLONE_NEWUSER always, but for OCI");
        return -1;
    }
    if (get_records(a, cfg, "time_offsets", sizeof(struct sv_time_offset), read_time_offset, &arr,
                    &p->ntime_offsets))
        return -1;
    p->time_offsets = arr;
    if (p->ntime_offsets > 0 && !p->time_namespace) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.time_offsets need time_namespace");
        return -1;
    }
    if (get_records(a, cfg, "cgroup", sizeof(struct sv_cgroup_entry), read_cgroup, &arr, &p->ncgroup))
        return -1;
    p->cgroup = arr;
    char **paths;
    if (get_strv(a, cfg, "masked_paths", &paths, &p->nmasked))
        return -1;
    p->masked = (const char *const *)paths;
    if (get_strv(a, cfg, "readonly_paths", &paths, &p->nreadonly))
        return -1;
    p->readonly = (const char *const *)paths;
    if (check_mount_order(p) < 0 || get_propagation(cfg, "rootfs_propagation", &p->rootfs_propagation))
        return -1;
    if (p->rootfs_propagation && !p->start_gate) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.rootfs_propagation is for OCI only");
        return -1;
    }
    if (get_seccomp(a, cfg, p))
        return -1;
    if (!p->no_new_privs && !(p->start_gate || p->join)) {
        PyErr_SetString(PyExc_ValueError, "SpawnConfig.no_new_privs may be false only for OCI");
        return -1;
    }
    /* Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: PID 1
     * keeps it until the filter is in, and drops it right after. */
    p->filter_privileged = !p->no_new_privs && p->seccomp.len > 0;

    if (p->ncgroup > SV_MAX_CGROUP_FDS) {
        PyErr_Format(PyExc_ValueError, "SpawnConfig.cgroup: at most %d entries", SV_MAX_CGROUP_FDS);
        return -1;
    }
    size_t fixed = SV_SPAWN_FIXED_FDS + p->ncgroup + p->nidmapped + (size_t)(p->start_gate || p->join);
    if (nfds < fixed || nfds - fixed > SV_MAX_PASS_FDS) {
        PyErr_Format(PyExc_ValueError,
                     "spawn with %zu descriptors for %zu cgroup entries, %zu id-mapped binds and %d start gate", nfds,
                     p->ncgroup, p->nidmapped, p->start_gate);
        return -1;
    }
    p->npassed = nfds - fixed;
    int *copy = arena_alloc(a, sizeof(int) * nfds);
    if (copy == NULL)
        return -1;
    memcpy(copy, fds, sizeof(int) * nfds);
    p->fds = copy;
    return 0;
}
