/* An OCI bundle's device nodes (linux.devices), made by PID 1 in the new
 * root with mknod, as root of the host's user namespace (a bundle with a
 * user namespace of its own lists none: the kernel lets no one there make
 * a device node). After the mounts, so that a node may go into a tmpfs of
 * the bundle's; before the masks, which may hide one. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "sv.h"

static void make_node(struct sv_child *c, const struct sv_device *d)
{
    char target[SV_PATH_MAX];
    /* Resolved inside the new root, its folders made. Something already
     * there (the rootfs's own node, a bind of the host's /dev) is left as it
     * is, as runc leaves it; only the empty file mounts_point has just made
     * in its place is replaced. */
    if (!mounts_point(c, d->path, 0, target, sizeof target))
        return;
    long r = sv_raw(SYS_unlinkat, AT_FDCWD, (long)target, 0, 0, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "unlink (to make the device node)", d->path);
    mode_t kind = d->kind == 'c' ? S_IFCHR : d->kind == 'b' ? S_IFBLK : S_IFIFO;
    unsigned long dev = d->kind == 'p' ? 0 : makedev(d->major, d->minor);
    r = sv_raw(SYS_mknodat, AT_FDCWD, (long)target, (long)(kind | (d->mode & 07777)), (long)dev, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "mknod", d->path);
    /* The mode exactly (mknod's is cut by the umask), then the owner; the
     * container has no process yet that could swap the node meanwhile. */
    r = sv_raw(SYS_fchmodat, AT_FDCWD, (long)target, (long)(d->mode & 07777), 0, 0);
    if (r == 0)
        r = sv_raw(SYS_fchownat, AT_FDCWD, (long)target, (long)d->uid, (long)d->gid, AT_SYMLINK_NOFOLLOW);
    if (r < 0)
        sv_fail_call(c, (int)-r, "chmod or chown of the device node", d->path);
}

void devices_create(struct sv_child *c)
{
    for (size_t i = 0; i < c->plan->ndevices; i++)
        make_node(c, &c->plan->devices[i]);
}
