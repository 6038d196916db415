/* The container's filesystems: fresh /proc, /dev, /sys and /tmp, the home,
 * then the caller's binds; and the one rule for every mount point: it is
 * resolved inside the new root, never outside it, and created only in a
 * filesystem of ours (never in the host's rootfs folder). */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sv.h"

/* Device nodes bound from the host's /dev (bubblewrap's --dev set). */
static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *const dev_links[][2] = {
    {"fd", "/proc/self/fd"},     {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
};

#define SYMLINK_BUDGET 40

/* Append component `part` (of `len` bytes) to `done`, a container path. */
static int push(char *done, size_t size, const char *part, size_t len)
{
    size_t n = sv_strlen(done);
    if (n + 1 + len + 1 > size)
        return -ENAMETOOLONG;
    done[n++] = '/';
    for (size_t i = 0; i < len; i++)
        done[n++] = part[i];
    done[n] = '\0';
    return 0;
}

static void pop(char *done)
{
    size_t n = sv_strlen(done);
    while (n > 0 && done[n - 1] != '/')
        n--;
    done[n > 0 ? n - 1 : 0] = '\0';
}

/* Resolve container path `path` as if /newroot were "/": symlinks under it
 * are followed, but neither ".." nor an absolute target can leave it (the
 * contract of openat2's RESOLVE_IN_ROOT). A missing tail is kept as is.
 * `out` gets the container path ("/" for the root itself); returns 0 or
 * -errno. */
static int resolve_in_root(const char *path, char *out, size_t size)
{
    char rest[2 * SV_PATH_MAX], candidate[SV_PATH_MAX], target[SV_PATH_MAX];
    if (sv_join_path(rest, sizeof rest, path, NULL) < 0)
        return -ENAMETOOLONG;
    out[0] = '\0';
    int budget = SYMLINK_BUDGET, missing = 0;
    size_t pos = 0;
    for (;;) {
        while (rest[pos] == '/')
            pos++;
        if (rest[pos] == '\0')
            break;
        const char *part = &rest[pos];
        size_t len = 0;
        while (part[len] && part[len] != '/')
            len++;
        pos += len;
        if (len == 1 && part[0] == '.')
            continue;
        if (len == 2 && part[0] == '.' && part[1] == '.') {
            pop(out);
            continue;
        }
        if (push(out, size, part, len) < 0)
            return -ENAMETOOLONG;
        if (missing)
            continue;
        if (sv_join_path(candidate, sizeof candidate, SV_NEWROOT, out) < 0)
            return -ENAMETOOLONG;
        struct stat st;
        long r = sv_raw(SYS_newfstatat, AT_FDCWD, (long)candidate, (long)&st, AT_SYMLINK_NOFOLLOW, 0);
        if (r == -ENOENT) {
            missing = 1;
            continue;
        }
        if (r < 0)
            return (int)r;
        if (!S_ISLNK(st.st_mode))
            continue;
        if (--budget == 0)
            return -ELOOP;
        long n = sv_raw(SYS_readlinkat, AT_FDCWD, (long)candidate, (long)target, sizeof target - 1, 0);
        if (n < 0)
            return (int)n;
        target[n] = '\0';
        pop(out); /* the link itself is replaced by its target */
        if (target[0] == '/')
            out[0] = '\0';
        /* rest = target + "/" + what was left of rest */
        char joined[2 * SV_PATH_MAX];
        if (sv_join_path(joined, sizeof joined, target, "/") < 0)
            return -ENAMETOOLONG;
        size_t jl = sv_strlen(joined), rl = sv_strlen(&rest[pos]);
        if (jl + rl + 1 > sizeof rest)
            return -ENAMETOOLONG;
        for (size_t i = 0; i <= rl; i++)
            joined[jl + i] = rest[pos + i];
        for (size_t i = 0; i <= jl + rl; i++)
            rest[i] = joined[i];
        pos = 0;
    }
    if (out[0] == '\0') {
        out[0] = '/';
        out[1] = '\0';
    }
    return 0;
}

static void make_parents(struct sv_child *c, char *full)
{
    /* Every folder on the way, below /newroot (which exists). */
    for (size_t i = sizeof SV_NEWROOT; full[i]; i++) {
        if (full[i] != '/')
            continue;
        full[i] = '\0';
        long r = sv_raw(SYS_mkdirat, AT_FDCWD, (long)full, 0755, 0, 0);
        full[i] = '/';
        if (r < 0 && r != -EEXIST)
            sv_fail_call(c, (int)-r, "mkdir", full);
    }
}

int mounts_point(struct sv_child *c, const char *path, int directory, char *out, size_t size)
{
    char resolved[SV_PATH_MAX];
    int r = resolve_in_root(path, resolved, sizeof resolved);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "cannot resolve mount point ");
        text_quoted(&t, path);
        text_str(&t, r == -ELOOP ? " in the container: too many levels of symbolic links" : " in the container");
        sv_fail(c, -r, &t);
    }
    if (sv_streq(resolved, "/")) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "mount point ");
        text_str(&t, path);
        text_str(&t, " resolves to the container's root /");
        sv_fail(c, EINVAL, &t);
    }
    if (sv_join_path(out, size, SV_NEWROOT, resolved) < 0)
        sv_fail_call(c, ENAMETOOLONG, "mount point", path);
    struct stat st;
    if (sv_raw(SYS_newfstatat, AT_FDCWD, (long)out, (long)&st, AT_SYMLINK_NOFOLLOW, 0) == 0)
        return 0;
    if (!rootfs_owned(c, resolved) && c->plan->rootfs == NULL) {
        char top[SV_PATH_MAX];
        size_t n = 1;
        while (resolved[n] && resolved[n] != '/')
            n++;
        for (size_t i = 0; i < n; i++)
            top[i] = resolved[i];
        top[n] = '\0';
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "mount point ");
        text_quoted(&t, path);
        text_str(&t, " does not exist, and ");
        text_quoted(&t, top);
        text_str(&t, " of the default root is the host's own folder, bound read-only (supervisor never creates "
                     "anything on the host): use a path that exists there, or one outside the host's system "
                     "folders (/opt, /srv, /mnt, /data...)");
        sv_fail(c, ENOENT, &t);
    }
    /* An OCI bundle's root is the runtime's to prepare: the runtime spec has
     * it create missing mount points (resolved inside the root, above). */
    if (!rootfs_owned(c, resolved) && !c->plan->start_gate) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "mount point ");
        text_str(&t, path);
        text_str(&t, " does not exist in the rootfs ");
        text_str(&t, c->plan->rootfs);
        text_str(&t, " (supervisor never creates files in the host's rootfs: create it there)");
        sv_fail(c, ENOENT, &t);
    }
    make_parents(c, out);
    if (directory)
        sv_mkdir(c, out, 0755);
    else
        sv_touch(c, out, 0644);
    return 1;
}

static void mount_proc(struct sv_child *c)
{
    mounts_point(c, "/proc", 1, c->proc_at, sizeof c->proc_at);
    /* A new procfs, tied to the container's PID namespace (mounted by its
     * PID 1, which is why this cannot be done from outside). */
    sv_mount(c, "proc", c->proc_at, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (c->plan->init) {
        /* The init reads the payload's name here; the mount itself, whatever
         * is later bound over its path. */
        long fd = sv_raw(SYS_openat, AT_FDCWD, (long)c->proc_at, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0);
        if (fd < 0)
            sv_fail_call(c, (int)-fd, "open(O_PATH)", c->proc_at);
        c->proc_fd = (int)fd;
    }
}

/* A devpts instance of the container's own at `at`: its terminals, and ptmx. */
static void devpts_at(struct sv_child *c, const char *at)
{
    sv_mount(c, "devpts", at, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
}

/* /dev: a tmpfs, the host's standard nodes bound into it, the usual links;
 * `pts_and_shm` (the library) also its /dev/pts and /dev/shm, made in it
 * directly (an OCI bundle's mounts say where those go). */
static void mount_dev(struct sv_child *c, int pts_and_shm)
{
    char dev[SV_PATH_MAX], node[SV_PATH_MAX], source[SV_PATH_MAX];
    mounts_point(c, "/dev", 1, dev, sizeof dev);
    /* nodev: a node made in it opens nothing (the standard ones are binds,
     * mounts of their own), but where an OCI bundle lists devices to make
     * here; those the devices cgroup guards (the runtime refuses them where
     * there is none and the container could make others). */
    unsigned long nodev = c->plan->ndevices > 0 ? 0 : MS_NODEV;
    sv_mount(c, "tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC | nodev, "mode=0755,size=64k");
    rootfs_own(c, "/dev");
    for (size_t i = 0; i < sizeof dev_nodes / sizeof dev_nodes[0]; i++) {
        sv_join_path(node, sizeof node, dev, "/");
        sv_join_path(node, sizeof node, node, dev_nodes[i]);
        sv_join_path(source, sizeof source, SV_OLDROOT "/dev/", dev_nodes[i]);
        sv_touch(c, node, 0666);
        /* The host's node, bound: mknod is not allowed in a user namespace. */
        sv_mount(c, source, node, NULL, MS_BIND, NULL);
    }
    if (pts_and_shm) {
        sv_join_path(node, sizeof node, dev, "/pts");
        sv_mkdir(c, node, 0755);
        devpts_at(c, node);
        sv_join_path(node, sizeof node, dev, "/shm");
        sv_mkdir(c, node, 01777);
        sv_mount(c, "tmpfs", node, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    }
    for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++) {
        sv_join_path(node, sizeof node, dev, "/");
        sv_join_path(node, sizeof node, node, dev_links[i][0]);
        sv_symlink(c, dev_links[i][1], node);
    }
}


/* POSIX message queues of the container's own IPC namespace, where an OCI
 * bundle's mounts list them. */
static void mount_mqueue(struct sv_child *c)
{
    char node[SV_PATH_MAX];
    mounts_point(c, "/dev/mqueue", 1, node, sizeof node);
    sv_mount(c, "mqueue", node, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

static void mount_sys(struct sv_child *c)
{
    mounts_point(c, "/sys", 1, c->sys_at, sizeof c->sys_at);
    unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    /* A fresh sysfs is possible because the network namespace belongs to our
     * user namespace; with the host's network it is not: bind the host's. */
    if (sv_raw(SYS_mount, (long)"sysfs", (long)c->sys_at, (long)"sysfs", (long)flags, 0) == 0)
        return;
    sv_mount(c, SV_OLDROOT "/sys", c->sys_at, NULL, MS_BIND | MS_REC, NULL);
    sv_mount_setattr(c, c->sys_at, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 1);
}

/* A tmpfs (nosuid, nodev), ours or the caller's; missing mount points may
 * then be created inside it. */
static void mount_tmpfs(struct sv_child *c, const struct sv_tmpfs *t)
{
    unsigned long flags = MS_NOSUID | MS_NODEV | (t->exec ? 0 : MS_NOEXEC) | (t->read_only ? MS_RDONLY : 0);
    char target[SV_PATH_MAX];
    mounts_point(c, t->path, 1, target, sizeof target);
    sv_mount(c, t->source, target, "tmpfs", flags, t->options);
    if (t->propagation)
        sv_mount(c, NULL, target, NULL, t->propagation, NULL);
    rootfs_own(c, t->path);
}

/* One of ours, at `path`: programs may run from it. */
static void mount_own_tmpfs(struct sv_child *c, const char *path, const char *options)
{
    const struct sv_tmpfs t = {.path = path, .options = options, .source = "tmpfs", .exec = 1};
    mount_tmpfs(c, &t);
}

/* Where PID 1 writes the container's /etc/hosts: its staging root, which no
 * one else ever sees and which goes with the pivot (the bind keeps the file). */
#define STAGED_HOSTS "/hosts"

static void mount_hosts(struct sv_child *c)
{
    const char *text = c->plan->hosts;
    char target[SV_PATH_MAX];
    long fd = sv_raw(SYS_openat, AT_FDCWD, (long)STAGED_HOSTS, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644, 0);
    if (fd < 0)
        sv_fail_str(c, (int)-fd, "write the container's /etc/hosts: open(O_CREAT) in the staging root failed");
    size_t len = sv_strlen(text), done = 0;
    while (done < len) {
        long n = sv_raw(SYS_write, fd, (long)(text + done), (long)(len - done), 0, 0);
        if (n == -EINTR)
            continue;
        if (n <= 0)
            sv_fail_str(c, n < 0 ? (int)-n : ENOSPC, "write the container's /etc/hosts: write failed");
        done += (size_t)n;
    }
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
    mounts_point(c, "/etc/hosts", 0, target, sizeof target);
    sv_mount(c, STAGED_HOSTS, target, NULL, MS_BIND, NULL);
    sv_mount_setattr(c, target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, 0);
}

static _Noreturn void fail_host_path(struct sv_child *c, int err, const char *call, const char *staged)
{
    /* EACCES on a host path: name the folder on its way that the container's
     * root may not search. Its ids are the mapped ones, which own nothing on
     * the host unless the caller chose so, so mostly a folder's "others" bits
     * decide; that is the id mapping at work, and the user must hear it. */
    char prefix[SV_PATH_MAX];
    size_t len = sv_strlen(staged);
    if (err == EACCES && sv_startswith(staged, SV_OLDROOT "/") && len < sizeof prefix) {
        for (size_t i = 0; i <= len; i++)
            prefix[i] = staged[i];
        for (size_t end = sizeof SV_OLDROOT - 1; end < len; end++) {
            if (prefix[end] != '/')
                continue;
            /* prefix[0..end) is a folder on the way; the host's root is "/oldroot/". */
            size_t cut = end == sizeof SV_OLDROOT - 1 ? end + 1 : end;
            char saved = prefix[cut];
            prefix[cut] = '\0';
            struct stat st;
            int blocked = sv_raw(SYS_newfstatat, AT_FDCWD, (long)prefix, (long)&st, 0, 0) == 0 &&
                          S_ISDIR(st.st_mode) && sv_raw(SYS_faccessat, AT_FDCWD, (long)prefix, X_OK, 0, 0) == -EACCES;
            if (!blocked) {
                prefix[cut] = saved;
                continue;
            }
            struct sv_text t;
            text_reset(&t);
            text_str(&t, call);
            text_str(&t, "(");
            text_path(&t, staged);
            text_str(&t, ") failed: the container's root is host uid ");
            text_int(&t, c->plan->map_base);
            text_str(&t, " (its id mapping), and the host folder ");
            text_path(&t, prefix);
            text_str(&t, " (mode ");
            text_mode(&t, st.st_mode & 07777);
            text_str(&t, ") does not let it search: give others search permission (chmod o+x) "
                         "or use a folder outside it");
            sv_fail(c, err, &t);
        }
    }
    sv_fail_call(c, err, call, staged);
}

void mounts_host_path(struct sv_child *c, const char *host_path, const char *what, char *out, size_t size,
                      struct stat *st)
{
    if (sv_join_path(out, size, SV_OLDROOT, host_path) < 0)
        sv_fail_call(c, ENAMETOOLONG, what, host_path);
    /* Reached as the container's root: a folder on the way that it cannot
     * search is the usual cause of failure, and gets its own message. */
    long r = sv_raw(SYS_newfstatat, AT_FDCWD, (long)out, (long)st, 0, 0);
    if (r < 0)
        fail_host_path(c, (int)-r, "stat", out);
}

/* An id-mapped bind: the supervisor (root where the filesystem was mounted,
 * which the kernel requires) cloned the source's tree and set its id mapping;
 * the detached tree only needs moving into place. */
static void move_idmapped(struct sv_child *c, const struct sv_bind *b, char *target, size_t size)
{
    int fd = c->idmapped_fd[c->nidmapped++];
    struct stat st;
    long r = sv_raw(SYS_newfstatat, fd, (long)"", (long)&st, AT_EMPTY_PATH, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "fstat(the id-mapped mount of)", b->src);
    mounts_point(c, b->dst, S_ISDIR(st.st_mode), target, size);
    r = sv_raw(SYS_move_mount, fd, (long)"", AT_FDCWD, (long)target, MOVE_MOUNT_F_EMPTY_PATH);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "move_mount(the id-mapped mount of ");
        text_quoted(&t, b->src);
        text_str(&t, ", ");
        text_path(&t, target);
        text_str(&t, ") failed");
        sv_fail(c, (int)-r, &t);
    }
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
}

static void bind(struct sv_child *c, const struct sv_bind *b)
{
    char source[SV_PATH_MAX], target[SV_PATH_MAX];
    if (b->idmapped) {
        move_idmapped(c, b, target, sizeof target);
    } else {
        struct stat st;
        mounts_host_path(c, b->src, "bind", source, sizeof source, &st);
        mounts_point(c, b->dst, S_ISDIR(st.st_mode), target, sizeof target);
        sv_mount(c, source, target, NULL, MS_BIND | MS_REC, NULL);
    }
    uint64_t attrs = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (b->read_only ? MOUNT_ATTR_RDONLY : 0);
    sv_mount_setattr(c, target, attrs, 1);
    if (b->propagation)
        sv_mount(c, NULL, target, NULL, b->propagation, NULL);
}

/* An OCI bundle's mounts, in its config's order (SpawnConfig.mount_order):
 * what a later one mounts over an earlier one wins, as the spec says. */
static void mount_in_order(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    size_t tmpfs = 0, binds = 0;
    char node[SV_PATH_MAX];
    for (const char *k = p->mount_order; *k; k++) {
        switch (*k) {
        case 'p':
            mount_proc(c);
            sysctl_apply(c); /* through the fresh /proc, before the masks */
            break;
        case 'd':
            mount_dev(c, 0);
            break;
        case 't':
            mounts_point(c, "/dev/pts", 1, node, sizeof node);
            devpts_at(c, node);
            break;
        case 'q':
            mount_mqueue(c);
            break;
        case 's':
            mount_sys(c);
            break;
        case 'T':
            mount_tmpfs(c, &p->tmpfs[tmpfs++]);
            break;
        default: /* 'B', checked with the plan */
            bind(c, &p->binds[binds++]);
            break;
        }
    }
}

void mounts_filesystems(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    if (p->mount_order[0]) {
        mount_in_order(c);
        devices_create(c);
        masks_apply(c);
        if (p->read_only_root)
            sv_mount_setattr(c, SV_NEWROOT, MOUNT_ATTR_RDONLY, 0);
        return;
    }
    mount_proc(c);
    sysctl_apply(c); /* through the fresh /proc, before the masks */
    mount_dev(c, 1);
    mount_sys(c);
    mount_own_tmpfs(c, "/tmp", "mode=1777");
    if (p->rootfs == NULL) {
        mount_own_tmpfs(c, "/root", "mode=0700");
        mount_own_tmpfs(c, "/home", "mode=0755");
    }
    /* The caller's tmpfs mounts, after ours (one may replace /tmp) and before
     * the binds (which may then go inside one). */
    for (size_t i = 0; i < p->ntmpfs; i++)
        mount_tmpfs(c, &p->tmpfs[i]);
    /* Before the caller's binds, so that one of /etc/hosts still wins. */
    if (p->hosts != NULL)
        mount_hosts(c);
    for (size_t i = 0; i < p->nbinds; i++)
        bind(c, &p->binds[i]);
    masks_apply(c);
    if (p->read_only_root || p->rootfs == NULL) {
        /* The root mount alone (not recursive): /tmp, /dev... stay writable. */
        sv_mount_setattr(c, SV_NEWROOT, MOUNT_ATTR_RDONLY, 0);
    }
}
