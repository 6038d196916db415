/* The container's init (Spec.init, docker's --init, tini): at the end of
 * EXEC, PID 1 forks the payload, which becomes PID 2 and execs, and PID 1
 * stays behind as a tiny init. It reaps every process that ends up as its
 * child (orphans are re-parented to a PID namespace's init), forwards the
 * signals it gets to the payload, and exits with the payload's status:
 * its exit code, or 128+N when signal N killed it. When it exits, the kernel
 * kills what is left of the container.
 *
 * Why: a payload that is PID 1 is spared every signal it has no handler for
 * (pid_namespaces(7)), so SIGTERM cannot stop it, and nothing reaps the
 * orphans it does not wait for. As PID 2, its signals have their default
 * actions.
 *
 * The init keeps the supervisor's view of the setup exact. The payload
 * holds the write end of a close-on-exec pipe: end-of-file on it means the
 * payload's execve closed it, or the payload died. Until then PID 1 keeps
 * its end of the control socket, still named "sv-pid1-setup"; once the
 * payload runs it takes the name "sv-init" and closes the socket, which is
 * the end-of-file after EXEC that the supervisor takes for "running". A
 * payload that died before execve (a seccomp profile that kills execve; its
 * zombie still has the setup name) is reported by the init in one FAIL
 * record; a payload whose execve failed has reported that itself.
 *
 * The init runs with what the payload got at SECCOMP (the same bounding set,
 * no_new_privs, the payload's ids), keeps of its capabilities only CAP_KILL
 * (to signal a payload that changed its uid), and loads no seccomp filter:
 * the profile is written for the payload, and one that denies what an init
 * needs (kill, waitid) would break the container in ways its author never
 * meant, while the init runs no code but this extension's and reads nothing
 * but signals and exit statuses. It is non-dumpable (no one in the container
 * can ptrace it or read its memory), holds none of the payload's descriptors
 * (its pipes reach end-of-file when the payload closes them). It runs in the
 * supervisor's memory, as PID 1 was cloned (CLONE_VM), on its own stack:
 * it costs no memory of its own but that stack's few touched pages, and it
 * touches nothing else of that memory. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "sv.h"

#define INIT_COMM "sv-init"

/* Signals the init keeps for itself: SIGCHLD (it reaps), those the kernel
 * sends a process for its own fault, and the terminal's stop-on-I/O (tini
 * leaves the same out). Every other one is forwarded. */
static int forwarded(int sig)
{
    switch (sig) {
    case SIGCHLD:
    case SIGKILL:
    case SIGSTOP:
    case SIGILL:
    case SIGTRAP:
    case SIGABRT:
    case SIGBUS:
    case SIGFPE:
    case SIGSEGV:
    case SIGSYS:
    case SIGTTIN:
    case SIGTTOU:
        return 0;
    default:
        return 1;
    }
}

static void set_mask(uint64_t mask) { sv_raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, SV_SIGSET_SIZE, 0); }

/* Installed for every forwarded signal, and never run: the init keeps every
 * signal blocked and reads them from a signalfd. A handler is what makes the
 * kernel deliver a signal to a namespace's init at all, and what
 * /proc/PID/status lists in SigCgt, where the supervisor looks before it
 * sends SIGTERM. */
static void never_runs(int sig) { (void)sig; }

/* 1 if process `pid` still has the setup name, 0 if execve renamed it, -1
 * if that cannot be read (then, as in the supervisor, end-of-file counts as
 * the exec). */
static int has_setup_name(const struct sv_child *c, long pid)
{
    struct sv_text path;
    text_reset(&path);
    text_int(&path, pid);
    text_str(&path, "/comm");
    if (path.len >= sizeof path.buf)
        return -1;
    path.buf[path.len] = '\0';
    long fd = sv_raw(SYS_openat, c->proc_fd, (long)path.buf, O_RDONLY | O_CLOEXEC, 0, 0);
    if (fd < 0)
        return -1;
    char name[32];
    long n = sv_raw(SYS_read, fd, (long)name, sizeof name - 1, 0, 0);
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
    if (n <= 0)
        return -1;
    if (name[n - 1] == '\n')
        n--;
    name[n] = '\0';
    return sv_streq(name, SV_SETUP_COMM);
}

/* Wait until the payload has exec'd; return then. If it died before, report
 * that (unless it reported its own failure) and exit. */
static void await_exec(struct sv_child *c, long pid, int pipe_fd)
{
    char byte;
    long n;
    do
        n = sv_raw(SYS_read, pipe_fd, (long)&byte, 1, 0, 0);
    while (n == -EINTR);
    sv_raw(SYS_close, pipe_fd, 0, 0, 0, 0);
    /* End-of-file: execve closed the pipe (the new name follows a moment
     * later), or the payload died. A zombie keeps its name, and WNOWAIT
     * keeps the zombie. */
    for (int tries = 0; tries < 1000; tries++) {
        siginfo_t info;
        info.si_pid = 0;
        long r = sv_raw(SYS_waitid, P_PID, pid, (long)&info, WEXITED | WNOHANG | WNOWAIT, 0);
        int exited = r == 0 && info.si_pid == pid;
        int setup = has_setup_name(c, pid);
        if (setup != 1)
            return;
        if (exited) {
            /* Its own FAIL record went first (sv_fail exits 125). */
            if (info.si_code == CLD_EXITED && info.si_status == 125)
                sv_raw(SYS_exit_group, 125, 0, 0, 0, 0);
            struct sv_text t;
            text_reset(&t);
            if (info.si_code == CLD_EXITED) {
                text_str(&t, "the payload exited before execve (exit status ");
            } else {
                text_str(&t, "the payload died before execve (killed by signal ");
            }
            text_int(&t, info.si_status);
            text_str(&t, ")");
            sv_fail(c, 0, &t);
        }
        struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
        sv_raw(SYS_nanosleep, (long)&ms, 0, 0, 0, 0);
    }
}

/* Reap every child that has exited; exit with the payload's status once it
 * is among them. */
static void reap(long payload)
{
    for (;;) {
        siginfo_t info;
        info.si_pid = 0;
        long r = sv_raw(SYS_waitid, P_ALL, 0, (long)&info, WEXITED | WNOHANG, 0);
        if (r < 0 || info.si_pid == 0)
            return;
        if (info.si_pid == payload) {
            int status = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
            for (;;)
                sv_raw(SYS_exit_group, status, 0, 0, 0, 0);
        }
    }
}

_Noreturn static void serve(long payload, int sfd)
{
    for (;;) {
        struct signalfd_siginfo si;
        long n = sv_raw(SYS_read, sfd, (long)&si, sizeof si, 0, 0);
        if (n != (long)sizeof si)
            continue; /* EINTR: nothing is lost, the signal stays queued */
        if (si.ssi_signo == SIGCHLD)
            reap(payload);
        else
            sv_raw(SYS_kill, payload, si.ssi_signo, 0, 0, 0);
    }
}

/* The payload, between the fork and its seccomp filter: a process group of
 * its own, the terminal's foreground one with a terminal (so ^C and window
 * changes reach it once, not also through the init), then signals unblocked. */
static void payload_prepare(struct sv_child *c)
{
    long r = sv_raw(SYS_setpgid, 0, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "setpgid(0, 0) failed");
    if (c->plan->tty) {
        int pgid = (int)sv_raw(SYS_getpid, 0, 0, 0, 0, 0);
        /* From a background group: allowed since SIGTTOU is blocked. */
        r = sv_raw(SYS_ioctl, 0, TIOCSPGRP, (long)&pgid, 0, 0);
        if (r < 0)
            sv_fail_str(c, (int)-r, "ioctl(TIOCSPGRP) on the container's terminal failed");
    }
    set_mask(0);
}

static void keep_only_cap_kill(struct sv_child *c)
{
    uint64_t keep = c->plan->uid == 0 ? c->plan->capabilities & (1ULL << CAP_KILL) : 0;
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {
        {.effective = (uint32_t)keep, .permitted = (uint32_t)keep, .inheritable = 0},
        {.effective = (uint32_t)(keep >> 32), .permitted = (uint32_t)(keep >> 32), .inheritable = 0},
    };
    long r = sv_raw(SYS_capset, (long)&header, (long)data, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "capset(CAP_KILL only) for the init failed");
}

void init_fork_payload(struct sv_child *c)
{
    /* Blocked from before the fork: the init reads every signal from its
     * signalfd; the payload unblocks them before execve. */
    set_mask(~0ULL);
    int pipe_fds[2];
    long r = sv_raw(SYS_pipe2, (long)pipe_fds, O_CLOEXEC, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "pipe2(O_CLOEXEC) for the payload's exec failed");
    /* fork(2) semantics: SIGCHLD to the init, no shared memory. The payload
     * inherits PID 1's state as it is here: non-dumpable until execve, the
     * final capability sets and ids, no_new_privs. */
    long pid = sv_raw(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        sv_fail_str(c, (int)-pid, "clone(SIGCHLD) of the payload failed");
    if (pid == 0) {
        sv_raw(SYS_close, pipe_fds[0], 0, 0, 0, 0);
        payload_prepare(c);
        return; /* to the seccomp filter and execve; the pipe's end closes there */
    }
    sv_raw(SYS_close, pipe_fds[1], 0, 0, 0, 0);
    /* None of the payload's descriptors: stdio and the passed ones. */
    sv_raw(SYS_close_range, 0, c->ch.fd - 1, 0, 0, 0);
    keep_only_cap_kill(c);
    await_exec(c, pid, pipe_fds[0]);

    /* The payload runs. Become its init before the supervisor hears of it:
     * the handlers (SigCgt) and the name must be in place when the control
     * socket reaches end-of-file. */
    struct sv_sigaction act = {.handler = never_runs, .flags = 0, .restorer = NULL, .mask = ~0ULL};
    uint64_t mask = ~0ULL;
    for (int sig = 1; sig < 65; sig++) {
        if (forwarded(sig))
            sv_raw(SYS_rt_sigaction, sig, (long)&act, 0, SV_SIGSET_SIZE, 0);
    }
    long sfd = sv_raw(SYS_signalfd4, -1, (long)&mask, SV_SIGSET_SIZE, SFD_CLOEXEC, 0);
    if (sfd < 0)
        sv_fail_str(c, (int)-sfd, "signalfd for the init failed");
    sv_raw(SYS_prctl, PR_SET_NAME, (long)INIT_COMM, 0, 0, 0);
    /* Everything but the signalfd, the control socket last: its end-of-file
     * tells the supervisor the payload runs, and the init is as it stays. */
    if (sfd > 0)
        sv_raw(SYS_close_range, 0, sfd - 1, 0, 0, 0);
    sv_raw(SYS_close_range, sfd + 1, ~0U, 0, 0, 0);
    /* It may have exited already; its SIGCHLD is queued anyway. */
    reap(pid);
    serve(pid, (int)sfd);
}
