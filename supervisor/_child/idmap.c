/* Id-mapped bind mounts, made in the supervisor before the clone.
 *
 * The kernel lets only a process privileged where a filesystem was mounted
 * (the host's root, for the host's disks) give a mount an id mapping, so
 * PID 1 cannot: the supervisor clones the source's tree here (a detached
 * mount), sets MOUNT_ATTR_IDMAP on it, and hands PID 1 the descriptor, which
 * PID 1 moves into place (mounts.c).
 *
 * A mapping is a user namespace: the mount shows a file owned by host id X as
 * owned by whatever X maps to there. One with "OWNER PAYLOAD 1" lines makes
 * the folder's owner the container's payload, and the payload's writes land
 * as that owner. Such a namespace needs a process only while its maps are
 * written: a child is cloned into it, kept waiting, and killed once its
 * namespace is open. This runs in the supervisor with the GIL held, not after
 * a clone of PID 1; the waiting child shares our memory and touches nothing
 * but its own stack. */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sv.h"

/* The waiting child's stack: it makes no call but pause. */
static char idle_stack[16 * 1024] __attribute__((aligned(16)));

static int idle(void *arg)
{
    (void)arg;
    for (;;)
        sv_raw(SYS_pause, 0, 0, 0, 0, 0);
    return 0;
}

static int write_map(pid_t pid, const char *file, unsigned long inside, unsigned long outside)
{
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int n = snprintf(line, sizeof line, "%lu %lu 1\n", inside, outside);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = write(fd, line, (size_t)n) == n ? 0 : -errno;
    close(fd);
    return r;
}

int idmap_userns(uid_t owner_uid, uid_t to_uid, gid_t owner_gid, gid_t to_gid)
{
    sigset_t all, old;
    sigfillset(&all);
    /* No handler of ours may run on the child's stack: it starts with every
     * signal blocked and never unblocks one (SIGKILL still ends it). */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(idle, idle_stack + sizeof idle_stack, CLONE_NEWUSER | CLONE_VM, NULL);
    int err = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return -err;
    int r = write_map(pid, "uid_map", owner_uid, to_uid);
    if (r == 0)
        r = write_map(pid, "gid_map", owner_gid, to_gid);
    if (r == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        r = open(path, O_RDONLY | O_CLOEXEC);
        if (r < 0)
            r = -errno;
    }
    kill(pid, SIGKILL);
    /* Exit signal 0: no SIGCHLD for the caller's handlers, and no waitpid(-1)
     * of theirs sees it; only __WALL reaps it. */
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
        ;
    return r;
}

int idmap_tree(const char *path, int userns_fd)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return -errno;
    /* Private too: the clone joined the source's peer group (the host's /
     * is shared), and a mount made later below the bind must never
     * propagate back to the host. */
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns_fd, .propagation = MS_PRIVATE};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}
