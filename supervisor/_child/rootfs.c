/* The container's root: staging, the new root, the pivot.
 *
 * The sequence follows bubblewrap: a private tmpfs is pivoted to first, so
 * the host's tree stays reachable as /oldroot while /newroot is built, and
 * nothing is ever created on the host (crabcan left /tmp/crabcan.* and
 * mount-point folders behind). Then pivot_root(".", ".") into /newroot and a
 * lazy unmount of the stacked old root make the host unreachable. */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "sv.h"

#ifndef MNT_DETACH
#define MNT_DETACH 2 /* <sys/mount.h>, which cannot be included beside <linux/mount.h> */
#endif

void rootfs_stage(struct sv_child *c)
{
    /* Before any mount: nothing we mount may propagate to the host, and
     * nothing the host mounts later may appear in the container; or, for
     * an OCI bundle's shared or slave root, the host's mounts still may. */
    unsigned long kind = c->plan->rootfs_propagation & ~(unsigned long)MS_REC;
    sv_mount(c, NULL, "/", NULL, MS_REC | (kind == MS_SHARED || kind == MS_SLAVE ? MS_SLAVE : MS_PRIVATE), NULL);
    sv_mount(c, "tmpfs", SV_STAGING, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k");
    sv_mkdir(c, SV_STAGING SV_NEWROOT, 0755);
    sv_mkdir(c, SV_STAGING SV_OLDROOT, 0755);
    long r = sv_raw(SYS_pivot_root, (long)SV_STAGING, (long)(SV_STAGING SV_OLDROOT), 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "pivot_root(staging tmpfs, its oldroot) failed");
    sv_chdir(c, "/");
}

static void own(struct sv_child *c, const char *path)
{
    if (c->nowned < SV_MAX_OWNED)
        c->owned[c->nowned++] = path;
}

static int lexists(const char *path)
{
    struct stat st;
    return sv_raw(SYS_newfstatat, AT_FDCWD, (long)path, (long)&st, AT_SYMLINK_NOFOLLOW, 0) == 0;
}

static void bind_overlay(struct sv_child *c, const char *rootfs)
{
    /* Copy-on-write root: the rootfs is the read-only lower layer; the upper
     * layer lives in a tmpfs of this mount namespace only, so the
     * container's writes vanish with it and the host folder is never written
     * (possible unprivileged in a user namespace since Linux 5.11). */
    sv_mkdir(c, "/overlay", 0700);
    sv_mount(c, "tmpfs", "/overlay", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    sv_mkdir(c, "/overlay/upper", 0755);
    sv_mkdir(c, "/overlay/work", 0755);
    struct sv_text options;
    text_reset(&options);
    text_str(&options, "lowerdir=" SV_OLDROOT);
    text_str(&options, rootfs);
    text_str(&options, ",upperdir=/overlay/upper,workdir=/overlay/work");
    if (options.len >= sizeof options.buf)
        sv_fail_str(c, ENAMETOOLONG, "overlay options too long for the rootfs path");
    options.buf[options.len] = '\0';
    c->context = "mounting the overlay root";
    sv_mount(c, "overlay", SV_NEWROOT, "overlay", MS_NODEV | MS_NOSUID, options.buf);
    c->context = NULL;
    own(c, "/");
}

static void build_default_root(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    char target[SV_PATH_MAX], source[SV_PATH_MAX];
    sv_mount(c, "tmpfs", SV_NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m");
    own(c, "/");
    for (size_t i = 0; i < p->nsystem; i++) {
        const struct sv_sysdir *d = &p->system[i];
        if (sv_join_path(target, sizeof target, SV_NEWROOT "/", d->name) < 0 ||
            sv_join_path(source, sizeof source, SV_OLDROOT "/", d->name) < 0)
            sv_fail_call(c, ENAMETOOLONG, "join", d->name);
        if (d->link != NULL) {
            sv_symlink(c, d->link, target);
            continue;
        }
        sv_mkdir(c, target, 0755);
        sv_mount(c, source, target, NULL, MS_BIND | MS_REC, NULL);
        /* The host's setuid programs (su, mount...) stay inert too. */
        sv_mount_setattr(c, target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, 1);
    }
    static const char *const tops[] = {"proc", "dev", "sys", "tmp", "root", "home"};
    for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++) {
        sv_join_path(target, sizeof target, SV_NEWROOT "/", tops[i]);
        if (!lexists(target))
            sv_mkdir(c, target, 0755);
    }
}

void rootfs_bind_root(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    if (p->rootfs == NULL) {
        build_default_root(c);
        return;
    }
    char source[SV_PATH_MAX];
    struct stat st;
    mounts_host_path(c, p->rootfs, "bind the rootfs", source, sizeof source, &st);
    if (p->overlay) {
        bind_overlay(c, p->rootfs);
        return;
    }
    sv_mount(c, source, SV_NEWROOT, NULL, MS_BIND | MS_REC, NULL);
    /* No device node of the rootfs folder is usable: the only devices are
     * those of the /dev we build. No setuid bit counts either (no_new_privs
     * already stops them; this is the second lock). */
    sv_mount_setattr(c, SV_NEWROOT, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID, 1);
}

void rootfs_pivot(struct sv_child *c)
{
    sv_chdir(c, SV_NEWROOT);
    /* pivot_root(".", ".") stacks the old root on top of the new one; the
     * kernel allows it (runc and LXC do the same), and it needs no put_old
     * directory inside the new root. */
    long r = sv_raw(SYS_pivot_root, (long)".", (long)".", 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "pivot_root(\".\", \".\") into the new root failed");
    r = sv_raw(SYS_umount2, (long)".", MNT_DETACH, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "umount2(old root, MNT_DETACH) failed");
    sv_chdir(c, "/");
    /* An OCI bundle's root propagation, on the root that is now the
     * container's (no sooner: pivot_root refuses a shared one), and with
     * MS_REC on what is below it, mounts with their own type included. */
    if (c->plan->rootfs_propagation)
        sv_mount(c, NULL, "/", NULL, c->plan->rootfs_propagation, NULL);
}

/* Whether container path `resolved` lies in one of the host's system folders
 * that the default root binds read-only (/usr, /etc...). */
static int in_host_folder(const struct sv_child *c, const char *resolved)
{
    const struct sv_plan *p = c->plan;
    if (p->rootfs != NULL)
        return 0;
    for (size_t i = 0; i < p->nsystem; i++) {
        const char *name = p->system[i].name;
        size_t n = sv_strlen(name);
        if (p->system[i].link == NULL && sv_startswith(resolved + 1, name) &&
            (resolved[1 + n] == '\0' || resolved[1 + n] == '/'))
            return 1;
    }
    return 0;
}

int rootfs_owned(const struct sv_child *c, const char *resolved)
{
    if (in_host_folder(c, resolved))
        return 0;
    for (size_t i = 0; i < c->nowned; i++) {
        const char *o = c->owned[i];
        if (sv_streq(o, "/"))
            return 1;
        if (sv_startswith(resolved, o) && (resolved[sv_strlen(o)] == '\0' || resolved[sv_strlen(o)] == '/'))
            return 1;
    }
    return 0;
}

void rootfs_own(struct sv_child *c, const char *path) { own(c, path); }
