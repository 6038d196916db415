/* Masked and read-only paths (runc's defaults, or the plan's list).
 *
 * After /proc and /sys exist, before the pivot (the host's /dev/null is
 * still reachable). Masked safely (CVE-2025-31133, where runc bound the
 * container's own /dev/null, which a container could swap for a symlink to a
 * procfs file): the source is the host's /dev/null, opened O_PATH|O_NOFOLLOW
 * and checked to be char device 1:3; every target is opened O_PATH|O_NOFOLLOW
 * from the procfs or sysfs mount itself (never through a rootfs name, which
 * may be a symlink), or elsewhere (an OCI bundle's paths) with openat2
 * resolving inside the new root, and mounted on through self/fd/N of our own
 * new procfs, so that no path is resolved twice. Paths that do not exist
 * (that this kernel lacks) are skipped. */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "sv.h"

/* `fd` as a path, through the procfs we mounted (wherever it is). */
static void fd_path(struct sv_child *c, long fd, char *out, size_t size)
{
    struct sv_text t;
    text_reset(&t);
    text_str(&t, c->proc_at);
    text_str(&t, "/self/fd/");
    text_int(&t, fd);
    if (t.len >= size)
        sv_fail_str(c, ENAMETOOLONG, "procfs path too long");
    for (size_t i = 0; i < t.len; i++)
        out[i] = t.buf[i];
    out[t.len] = '\0';
}

/* O_PATH fd of a path in the new root, never resolved outside it. */
static long open_in_root(const char *path)
{
    long root = sv_raw(SYS_openat, AT_FDCWD, (long)SV_NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, 0);
    if (root < 0)
        return root;
    struct open_how how = {
        .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    long fd = sv_raw(SYS_openat2, root, (long)path, (long)&how, sizeof how, 0);
    sv_raw(SYS_close, root, 0, 0, 0, 0);
    return fd;
}

/* O_PATH fd of the path: /proc/... or /sys/... in the filesystem we
 * mounted, anything else resolved in the new root; -1 when there is no
 * such file; never a symlink. */
static long open_target(struct sv_child *c, const char *path)
{
    const char *base = NULL;
    if (sv_startswith(path, "/proc/"))
        base = c->proc_at;
    else if (sv_startswith(path, "/sys/"))
        base = c->sys_at;
    char full[SV_PATH_MAX];
    if (base != NULL && sv_join_path(full, sizeof full, base, path + (base == c->proc_at ? 5 : 4)) < 0)
        sv_fail_call(c, ENAMETOOLONG, "mask", path);
    long fd = base != NULL ? sv_raw(SYS_openat, AT_FDCWD, (long)full, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, 0)
                           : open_in_root(path);
    if (fd == -ENOENT)
        return -1;
    if (fd < 0)
        sv_fail_call(c, (int)-fd, "open(O_PATH)", path);
    struct stat st;
    long r = sv_raw(SYS_fstat, fd, (long)&st, 0, 0, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "fstat", path);
    if (S_ISLNK(st.st_mode))
        sv_fail_call(c, ELOOP, "refusing to mask a symbolic link: open", path);
    return fd;
}

static void mask(struct sv_child *c, const char *path, long null)
{
    long fd = open_target(c, path);
    if (fd < 0)
        return;
    char target[SV_PATH_MAX], source[SV_PATH_MAX];
    struct stat st;
    sv_raw(SYS_fstat, fd, (long)&st, 0, 0, 0);
    fd_path(c, fd, target, sizeof target);
    c->context = path;
    if (S_ISDIR(st.st_mode)) {
        sv_mount(c, "tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555,size=4k");
    } else {
        fd_path(c, null, source, sizeof source);
        sv_mount(c, source, target, NULL, MS_BIND, NULL);
    }
    c->context = NULL;
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
}

static void read_only(struct sv_child *c, const char *path)
{
    char target[SV_PATH_MAX];
    long fd = open_target(c, path);
    if (fd < 0)
        return;
    fd_path(c, fd, target, sizeof target);
    c->context = path;
    sv_mount(c, target, target, NULL, MS_BIND | MS_REC, NULL);
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
    /* Reopen: the old fd still points below the new bind mount. */
    fd = open_target(c, path);
    if (fd >= 0) {
        fd_path(c, fd, target, sizeof target);
        sv_mount_setattr(c, target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 1);
        sv_raw(SYS_close, fd, 0, 0, 0, 0);
    }
    c->context = NULL;
}

void masks_apply(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    long null = sv_raw(SYS_openat, AT_FDCWD, (long)(SV_OLDROOT "/dev/null"), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, 0);
    if (null < 0)
        sv_fail_call(c, (int)-null, "open(O_PATH)", SV_OLDROOT "/dev/null");
    struct stat st;
    long r = sv_raw(SYS_fstat, null, (long)&st, 0, 0, 0);
    if (r < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 || minor(st.st_rdev) != 3)
        sv_fail_str(c, EPERM, "/dev/null is not the null device (char 1:3): refusing to mask");
    for (size_t i = 0; i < p->nmasked; i++)
        mask(c, p->masked[i], null);
    sv_raw(SYS_close, null, 0, 0, 0, 0);
    for (size_t i = 0; i < p->nreadonly; i++)
        read_only(c, p->readonly[i]);
}
