/* Joining namespaces instead of making them: a running container's, for
 * OCI `exec`, or those an OCI bundle names by path (join_paths).
 *
 * For exec:
 * The supervisor's clone thread cloned this process into the container's
 * PID namespace (setns of its own pid_for_children, for the one clone) and,
 * by clone3, into its cgroup v2 directory; the last descriptor is a pidfd
 * of the container's PID 1. Here one setns(2) on that pidfd enters every
 * other namespace at once, the user namespace first as the kernel orders
 * them, which gives us the capabilities of the container's root there and
 * nowhere else; the mount namespace's root and working directory become
 * ours. From CAPABILITIES on, the setup is a new container's. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>

#include "sv.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

void join_enter(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    /* USERNS: the container's user namespace and the rest with it. */
    channel_enter(c, SV_PHASE_USERNS);
    unsigned long flags = (p->clone_flags & ~(unsigned long)CLONE_NEWPID) | CLONE_NEWCGROUP |
                          (p->time_namespace ? CLONE_NEWTIME : 0);
    long r = sv_raw(SYS_setns, c->target_pidfd, (long)flags, 0, 0, 0);
    if (r < 0)
        sv_fail_num(c, (int)-r, "setns() into the container's namespaces (flags ", (long long)flags, 1,
                    ") failed");
    sv_raw(SYS_close, c->target_pidfd, 0, 0, 0, 0);
    c->target_pidfd = -1;
    /* CGROUP: the v1 hierarchies through the files the supervisor opened
     * (clone3 placed us in the v2 directory). */
    channel_enter(c, SV_PHASE_CGROUP);
    cgroups_enter(c);
}

/* An OCI bundle's namespaces by path (the network namespace podman made,
 * /proc/PID/ns/ipc of another container...), entered first, as root of the
 * host's user namespace (such a bundle has no user namespace of its own):
 * all opened before any is entered, since the mount namespace changes what
 * a path names. The PID namespace is not among them: a process cannot
 * change its own, and the clone thread cloned us into it. */
void join_paths(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    int fds[8];
    size_t n = 0;
    for (size_t i = 0; i < p->nns_paths && n < sizeof fds / sizeof fds[0]; i++) {
        if (p->ns_paths[i].kind == CLONE_NEWPID)
            continue;
        long fd = sv_raw(SYS_openat, AT_FDCWD, (long)p->ns_paths[i].path, O_RDONLY | O_CLOEXEC, 0, 0);
        if (fd < 0)
            sv_fail_call(c, (int)-fd, "open the namespace to join", p->ns_paths[i].path);
        fds[n++] = (int)fd;
    }
    n = 0;
    for (size_t i = 0; i < p->nns_paths && n < sizeof fds / sizeof fds[0]; i++) {
        if (p->ns_paths[i].kind == CLONE_NEWPID)
            continue;
        long r = sv_raw(SYS_setns, fds[n], (long)p->ns_paths[i].kind, 0, 0, 0);
        if (r < 0)
            sv_fail_call(c, (int)-r, "setns() into the namespace", p->ns_paths[i].path);
        sv_raw(SYS_close, fds[n++], 0, 0, 0, 0);
    }
}
