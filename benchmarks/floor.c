/*
 * floor: the kernel cost of supervisor's default isolation, with no Python.
 *
 * This is a measuring instrument for benchmarks/startup.py, not part of the
 * product. It performs, in C and in the same order, the system calls that one
 * supervisor container with the default Spec makes on both sides of the fork:
 *
 *   parent: clone (user, mount, UTS, IPC, network, PID namespaces), uid/gid
 *           maps of 65536 ids, one cgroup per given hierarchy (mkdir, move
 *           the child in, rmdir after exit);
 *   child:  loopback up, hostname, private /, staging tmpfs and pivot, the
 *           rootfs bound nodev/nosuid, /proc, /dev (tmpfs, 6 bound nodes,
 *           devpts, shm, symlinks), /sys, /tmp, runc's masked and read-only
 *           paths, pivot_root(".", ".") and detach, cgroup namespace,
 *           capabilities cut to a kept set, no_new_privs, a seccomp filter
 *           (the BPF program supervisor compiles for its "default" profile),
 *           close_range, execve.
 *
 * It skips what only the product needs: the phase reports, the Python driver,
 * the checks against hostile rootfs symlinks, fd plumbing. Its time is thus a
 * lower bound for any implementation of this isolation, whatever the
 * language, started as one process per container (like bwrap).
 *
 * Usage: floor [-n N -k K] ROOTFS BPF_FILE CAPS_HEX [CGROUP_PARENT...] -- PROGRAM [ARG...]
 * Without -n: one container; the exit status is the payload's, 128+N if it
 * was killed by signal N. With -n N -k K: N containers, at most K at a time,
 * all from this one process (the floor of a supervisor written in C); exit
 * status 0 when every payload exited 0. 125 if setup failed, with a message
 * on stderr naming the call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define ATTR_RDONLY 0x1
#define ATTR_NOSUID 0x2
#define ATTR_NODEV 0x4
#define ATTR_NOEXEC 0x8
#define AT_REC 0x8000

struct mount_attr_s {
    unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

static int ctl[2];
static int in_parent; /* die() in the parent first kills and cleans up its containers */
static void cleanup_all(void);

static void die(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int err = errno;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (err)
        dprintf(2, "floor: %s: %s\n", buf, strerror(err));
    else
        dprintf(2, "floor: %s\n", buf);
    if (in_parent) {
        in_parent = 0; /* once */
        cleanup_all();
    }
    _exit(125);
}

static void xmount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
    if (mount(src, dst, type, flags, data) != 0)
        die("mount(%s, %s, %s, %#lx, %s)", src ? src : "NULL", dst, type ? type : "NULL", flags,
            data ? data : "NULL");
}

static void setattr(const char *path, unsigned long long set, int recursive)
{
    struct mount_attr_s a = {set, 0, 0, 0};
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_REC : 0, &a, sizeof a) != 0)
        die("mount_setattr(%s, %#llx)", path, set);
}

static void wait_parent(void)
{
    char b;
    if (read(ctl[1], &b, 1) != 1)
        die("read(control)");
}

static void mask(const char *path, int null_fd)
{
    char fdpath[64];
    struct stat st;
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die("open(%s)", path);
    }
    if (fstat(fd, &st) != 0)
        die("fstat(%s)", path);
    snprintf(fdpath, sizeof fdpath, "/newroot/proc/self/fd/%d", fd);
    if (S_ISDIR(st.st_mode)) {
        xmount("tmpfs", fdpath, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555,size=4k");
    } else {
        char nullpath[64];
        snprintf(nullpath, sizeof nullpath, "/newroot/proc/self/fd/%d", null_fd);
        xmount(nullpath, fdpath, NULL, MS_BIND, NULL);
    }
    close(fd);
}

static void read_only(const char *path)
{
    char fdpath[64];
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die("open(%s)", path);
    }
    snprintf(fdpath, sizeof fdpath, "/newroot/proc/self/fd/%d", fd);
    xmount(fdpath, fdpath, NULL, MS_BIND | MS_REC, NULL);
    close(fd);
    fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        die("open(%s)", path);
    snprintf(fdpath, sizeof fdpath, "/newroot/proc/self/fd/%d", fd);
    setattr(fdpath, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC, 1);
    close(fd);
}

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *const masked[] = {
    "/newroot/proc/acpi", "/newroot/proc/asound", "/newroot/proc/kcore", "/newroot/proc/keys",
    "/newroot/proc/latency_stats", "/newroot/proc/timer_list", "/newroot/proc/timer_stats",
    "/newroot/proc/sched_debug", "/newroot/proc/scsi", "/newroot/sys/firmware",
};
static const char *const readonly[] = {
    "/newroot/proc/bus", "/newroot/proc/fs", "/newroot/proc/irq", "/newroot/proc/sys",
    "/newroot/proc/sysrq-trigger",
};

static int child(const char *rootfs, struct sock_fprog *prog, unsigned long long caps, char **argv)
{
    char path[4096];
    size_t i;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 0);
    setsid();
    wait_parent(); /* the id maps */
    if (setgroups(0, NULL) != 0 || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
        die("become root of the user namespace");
    prctl(PR_SET_PDEATHSIG, SIGKILL);

    /* loopback up */
    {
        struct ifreq ifr;
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
            die("SIOCGIFFLAGS lo");
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
            die("SIOCSIFFLAGS lo");
        close(s);
    }
    if (sethostname("floor-0123", 10) != 0)
        die("sethostname");

    /* rootfs */
    xmount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    xmount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k");
    if (mkdir("/tmp/newroot", 0755) != 0 || mkdir("/tmp/oldroot", 0755) != 0)
        die("mkdir staging");
    if (syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot") != 0)
        die("pivot_root(/tmp, /tmp/oldroot)");
    if (chdir("/") != 0)
        die("chdir(/)");
    snprintf(path, sizeof path, "/oldroot%s", rootfs);
    xmount(path, "/newroot", NULL, MS_BIND | MS_REC, NULL);
    setattr("/newroot", ATTR_NODEV | ATTR_NOSUID, 1);

    /* mounts */
    xmount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    xmount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k");
    for (i = 0; i < sizeof dev_nodes / sizeof *dev_nodes; i++) {
        char src[64];
        int fd;
        snprintf(path, sizeof path, "/newroot/dev/%s", dev_nodes[i]);
        fd = open(path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0)
            die("open(%s)", path);
        close(fd);
        snprintf(src, sizeof src, "/oldroot/dev/%s", dev_nodes[i]);
        xmount(src, path, NULL, MS_BIND, NULL);
    }
    if (mkdir("/newroot/dev/pts", 0755) != 0 || mkdir("/newroot/dev/shm", 01777) != 0)
        die("mkdir /dev/pts, /dev/shm");
    xmount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
    xmount("tmpfs", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    if (symlink("/proc/self/fd", "/newroot/dev/fd") || symlink("/proc/self/fd/0", "/newroot/dev/stdin") ||
        symlink("/proc/self/fd/1", "/newroot/dev/stdout") || symlink("/proc/self/fd/2", "/newroot/dev/stderr") ||
        symlink("pts/ptmx", "/newroot/dev/ptmx"))
        die("symlinks in /dev");
    xmount("sysfs", "/newroot/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    xmount("tmpfs", "/newroot/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    {
        struct stat st;
        int null_fd = open("/oldroot/dev/null", O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (null_fd < 0 || fstat(null_fd, &st) != 0)
            die("open(/oldroot/dev/null)");
        for (i = 0; i < sizeof masked / sizeof *masked; i++)
            mask(masked[i], null_fd);
        close(null_fd);
    }
    for (i = 0; i < sizeof readonly / sizeof *readonly; i++)
        read_only(readonly[i]);

    /* pivot */
    if (chdir("/newroot") != 0)
        die("chdir(/newroot)");
    if (syscall(SYS_pivot_root, ".", ".") != 0)
        die("pivot_root(., .)");
    if (umount2(".", MNT_DETACH) != 0)
        die("umount2(., MNT_DETACH)");
    if (chdir("/") != 0)
        die("chdir(/)");
    wait_parent(); /* the cgroup */
    if (unshare(CLONE_NEWCGROUP) != 0)
        die("unshare(CLONE_NEWCGROUP)");

    /* capabilities: bounding set, then the sets */
    for (i = 0; i <= 63; i++) {
        if (caps & (1ULL << i))
            continue;
        if (prctl(PR_CAPBSET_DROP, i) != 0) {
            if (errno == EINVAL)
                break; /* past the last capability of this kernel */
            die("prctl(PR_CAPBSET_DROP, %zu)", i);
        }
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    {
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        unsigned long long keep = caps | (1ULL << CAP_SETUID) | (1ULL << CAP_SETGID);
        data[0].effective = data[0].permitted = (unsigned)keep;
        data[1].effective = data[1].permitted = (unsigned)(keep >> 32);
        data[0].inheritable = data[1].inheritable = 0;
        if (syscall(SYS_capset, &hdr, data) != 0)
            die("capset");
        /* identity */
        if (setgroups(0, NULL) != 0 || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
            die("identity");
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (chdir("/") != 0)
            die("chdir(/)");
        data[0].effective = data[0].permitted = (unsigned)caps;
        data[1].effective = data[1].permitted = (unsigned)(caps >> 32);
        if (syscall(SYS_capset, &hdr, data) != 0)
            die("capset");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("PR_SET_NO_NEW_PRIVS");
    if (syscall(SYS_close_range, 3, ~0U, 0) != 0)
        die("close_range");
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0)
        die("seccomp");
    execv(argv[0], argv);
    die("execv(%s)", argv[0]);
    return 125;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t n = strlen(text);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n)
        die("write(%s, %s)", path, text);
    close(fd);
}

static char cg_parents[16][512];
static int ncg;

static void cgroup_path(char *out, size_t size, int i, int seq)
{
    snprintf(out, size, "%s/floor-%d-%d", cg_parents[i], (int)getpid(), seq);
}

/* clone one container and do the parent's steps (its pid goes to *slot_pid at once) */
static void start_one(int seq, const char *rootfs, struct sock_fprog *prog, unsigned long long caps, char **argv,
                      pid_t *slot_pid, int *sock)
{
    char path[sizeof cg_parents[0] + 64], text[32];
    pid_t pid;
    int i;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0)
        die("socketpair");
    pid = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
                                        CLONE_NEWPID | SIGCHLD,
                         NULL, NULL, NULL, NULL);
    if (pid < 0)
        die("clone");
    *slot_pid = pid;
    if (pid == 0) {
        in_parent = 0;
        _exit(child(rootfs, prog, caps, argv));
    }
    close(ctl[1]);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    write_file(path, "0 100000 65536\n");
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    write_file(path, "0 100000 65536\n");
    /* A child that died early closed its end: go on, so that it is reaped
     * and its cgroups removed (MSG_NOSIGNAL: no SIGPIPE). */
    send(ctl[0], "u", 1, MSG_NOSIGNAL);
    snprintf(text, sizeof text, "%d\n", (int)pid);
    for (i = 0; i < ncg; i++) {
        int fd;
        cgroup_path(path, sizeof path, i, seq);
        if (mkdir(path, 0755) != 0)
            die("mkdir(%s)", path);
        strcat(path, "/cgroup.procs");
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            die("open(%s)", path);
        if (write(fd, text, strlen(text)) < 0 && errno != ESRCH) /* ESRCH: it died already */
            die("write(%s, %d)", path, (int)pid);
        close(fd);
    }
    send(ctl[0], "c", 1, MSG_NOSIGNAL);
    *sock = ctl[0];
}

static void finish_one(int seq)
{
    char path[sizeof cg_parents[0] + 64];
    int i;
    for (i = 0; i < ncg; i++) {
        cgroup_path(path, sizeof path, i, seq);
        if (rmdir(path) != 0)
            die("rmdir(%s)", path);
    }
}

static struct {
    pid_t pid;
    int sock, seq;
} slots[256];
static int live;

/* SIGINT, SIGTERM, SIGHUP: noted here, acted on by the main loop (cleanup_all) */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void cleanup_all(void)
{
    int i, status;
    for (i = 0; i < live; i++)
        if (slots[i].pid > 0)
            kill(slots[i].pid, SIGKILL);
    for (i = 0; i < live; i++) {
        char path[sizeof cg_parents[0] + 64];
        int j;
        if (slots[i].pid > 0)
            waitpid(slots[i].pid, &status, 0);
        for (j = 0; j < ncg; j++) {
            cgroup_path(path, sizeof path, j, slots[i].seq);
            rmdir(path);
        }
    }
    live = 0;
}

int main(int argc, char **argv)
{
    const char *rootfs, *bpf_path;
    unsigned long long caps;
    static struct sock_filter filter[4096];
    struct sock_fprog prog;
    int total = 1, in_flight = 1, started = 0, i, status = 0, fd, a = 1;
    ssize_t size;

    if (argc > 5 && strcmp(argv[1], "-n") == 0 && strcmp(argv[3], "-k") == 0) {
        total = atoi(argv[2]);
        in_flight = atoi(argv[4]);
        a = 5;
    }
    if (argc - a < 5 || total < 1 || in_flight < 1 || in_flight > 256)
        return fprintf(stderr, "usage: floor [-n N -k K] ROOTFS BPF_FILE CAPS_HEX [CGROUP_PARENT...] -- PROGRAM [ARG...]\n"),
               2;
    rootfs = argv[a];
    bpf_path = argv[a + 1];
    caps = strtoull(argv[a + 2], NULL, 16);
    for (i = a + 3; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (ncg == 16)
            return fprintf(stderr, "floor: at most 16 cgroups\n"), 2;
        snprintf(cg_parents[ncg++], sizeof cg_parents[0], "%s", argv[i]);
    }
    if (i + 1 >= argc)
        return fprintf(stderr, "floor: no program after --\n"), 2;
    argv += i + 1;
    fd = open(bpf_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (size = read(fd, filter, sizeof filter)) <= 0 || size % sizeof *filter)
        die("read(%s)", bpf_path);
    close(fd);
    prog.len = (unsigned short)(size / sizeof *filter);
    prog.filter = filter;

    /* With -n/-k: one process starts N containers, K at a time, as a fork
     * server written in C would (no exec of a runtime per container). */
    {
        /* No SA_RESTART: waitpid returns EINTR, and the loop cleans up. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
    }
    in_parent = 1;
    while (started < total || live > 0) {
        pid_t pid;
        if (stop_signal) {
            cleanup_all();
            return 128 + stop_signal;
        }
        if (started < total && live < in_flight) {
            /* registered before it exists, so that die() kills it and removes its cgroups */
            int n = live++;
            slots[n].seq = started++;
            slots[n].pid = 0;
            slots[n].sock = -1;
            start_one(slots[n].seq, rootfs, &prog, caps, argv, &slots[n].pid, &slots[n].sock);
            continue;
        }
        pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            die("waitpid");
        }
        for (i = 0; i < live && slots[i].pid != pid; i++)
            ;
        if (i == live)
            continue; /* not one of ours */
        finish_one(slots[i].seq);
        close(slots[i].sock);
        slots[i] = slots[--live];
        if (total > 1 && status != 0) {
            errno = 0;
            die("a container ended with status %#x", status);
        }
    }
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
