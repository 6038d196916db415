/* PID 1's setup: one linear sequence, each step with the reason it sits there.
 *
 * This runs in the child of the clone, which already created the user,
 * mount, UTS, IPC, network and PID namespaces (the user namespace first,
 * owning the rest). It is the executable form of the container's security
 * argument: read sv_pid1_main top to bottom. The phases are those of
 * supervisor.Phase, in the same order; each is reported as it starts. */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "sv.h"

/* The first descriptor above stdio: the caller's passed descriptors start
 * here, and the control socket comes right after them. */
#define FIRST_FD 3

/* Move stdio, the passed descriptors and the control socket into place, and
 * close everything else: nothing of the process we were cloned from (its
 * socket to the supervisor, other containers' pidfds) survives into the
 * container, not even until exec. Returns the control socket. */
static int adopt_fds(struct sv_child *c, int cloned_into_cgroup)
{
    const struct sv_plan *p = c->plan;
    size_t njoined = 0;
    int joined[SV_MAX_CGROUP_FDS];
    const char *paths[SV_MAX_CGROUP_FDS];
    for (size_t i = 0; i < p->ncgroup && njoined < SV_MAX_CGROUP_FDS; i++) {
        enum sv_cgroup_kind kind = p->cgroup[i].kind;
        if (kind == SV_CGROUP_TASKS || (kind == SV_CGROUP_PROCS && !cloned_into_cgroup)) {
            joined[njoined] = p->fds[4 + p->npassed + i];
            paths[njoined++] = p->cgroup[i].path;
        }
    }
    const int *idmapped = &p->fds[4 + p->npassed + p->ncgroup];
    /* In order: stdin, stdout, stderr, passed..., control, joins..., id-mapped
     * mounts..., the start gate. */
    size_t kept = 3 + p->npassed + 1 + njoined, total = kept + p->nidmapped + (size_t)(p->start_gate || p->join);
    int high[3 + SV_MAX_PASS_FDS + 1 + SV_MAX_CGROUP_FDS + SV_MAX_IDMAPPED + 1];
    long floor = 64 + (long)total;
    for (size_t i = 0; i < total; i++) {
        int fd;
        if (i < 3 + p->npassed)
            fd = p->fds[1 + i];
        else if (i == 3 + p->npassed)
            fd = p->fds[0];
        else if (i < kept)
            fd = joined[i - 4 - p->npassed];
        else if (i < kept + p->nidmapped)
            fd = idmapped[i - kept];
        else
            fd = idmapped[p->nidmapped]; /* the start gate or the joined pidfd, after the mounts */
        long r = sv_raw(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor, 0, 0);
        if (r < 0)
            sv_raw(SYS_exit_group, 125, 0, 0, 0, 0); /* nothing to report to yet */
        high[i] = (int)r;
    }
    for (size_t i = 0; i < total; i++) {
        int cloexec = i >= 3 + p->npassed; /* the control socket, the joins, the mounts */
        if (sv_raw(SYS_dup3, high[i], (long)i, cloexec ? O_CLOEXEC : 0, 0, 0) < 0)
            sv_raw(SYS_exit_group, 125, 0, 0, 0, 0);
    }
    int control = FIRST_FD + (int)p->npassed;
    for (size_t i = 0; i < njoined; i++) {
        c->join_fd[i] = control + 1 + (int)i;
        c->join_path[i] = paths[i];
    }
    c->njoins = njoined;
    for (size_t i = 0; i < p->nidmapped; i++)
        c->idmapped_fd[i] = (int)(kept + i);
    c->nidmapped = 0; /* how many bind() has moved into place */
    c->gate_fd = p->start_gate ? (int)(total - 1) : -1;
    c->target_pidfd = p->join ? (int)(total - 1) : -1;
    sv_raw(SYS_close_range, (long)total, ~0U, 0, 0, 0);
    return control;
}

/* SPAWNED to PIVOT for a new container: its time namespace, its id maps,
 * its cgroup, network, hostname, root and mounts, the pivot, the terminal. */
static void make_container(struct sv_child *c)
{
    const struct sv_plan *plan = c->plan;
    long r;
    /* An OCI bundle's namespaces by path: before anything is done in them. */
    if (plan->nns_paths > 0)
        join_paths(c);
    /* A time namespace for the payload, unshared here (clone(2) has no room
     * for CLONE_NEWTIME) while PID 1 still has the supervisor's credentials:
     * its offsets must be written before anyone enters it, through
     * /proc/self/timens_offsets, and after the uid switch below the entries
     * of a non-dumpable process belong to the host's root, out of our reach.
     * PID 1 stays in the caller's namespace; execve (or, with init, the
     * payload's fork) enters the new one. */
    if (plan->time_namespace)
        timens_unshare(c);

    /* USERNS: first, because files created and ids checked from here on need
     * the maps. The supervisor's clone thread writes them (root in the host
     * user namespace; rootless, the caller: its own id, or with newuidmap
     * and newgidmap its subordinate ids too) as soon as the clone returns,
     * without a round trip through its event loop; then we become root of
     * the container (still without host privilege; rootless with only the
     * caller's own id mapped, the payload's id, which is that id). */
    channel_enter(c, SV_PHASE_USERNS);
    if (plan->clone_flags & CLONE_NEWUSER) /* not for an OCI bundle without one */
        userns_wait_maps(c);
    /* With memory of our own (rootless, for a payload id that is not the
     * caller's), non-dumpable from here, as a root-started PID 1 is from
     * SPAWNED: the maps were the last writes to our /proc files from outside. */
    if (plan->own_memory)
        sv_prctl(c, PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE");
    userns_become_root(c);

    /* CGROUP: right after the maps, before any other work, so that the whole
     * setup is accounted to the container. The supervisor made the cgroup
     * before the clone and clone3 put us in its v2 directory; join the v1
     * ones through the files it opened for us. */
    channel_enter(c, SV_PHASE_CGROUP);
    cgroups_enter(c);

    /* NETWORK: the namespace exists since the clone; bring loopback up here,
     * in the namespace's owner, and let the supervisor add its veth if asked. */
    if (plan->network_request)
        channel_request(c, SV_PHASE_NETWORK);
    else
        channel_enter(c, SV_PHASE_NETWORK);
    if (plan->own_loopback) /* with the host's network, lo is not ours to touch */
        network_loopback_up(c);

    /* HOSTNAME: in the new UTS namespace (or one an OCI bundle joins;
     * empty: an OCI bundle's that sets none); independent of the filesystem. */
    channel_enter(c, SV_PHASE_HOSTNAME);
    r = plan->hostname[0] ? sv_raw(SYS_sethostname, (long)plan->hostname, (long)sv_strlen(plan->hostname), 0, 0, 0)
                          : 0;
    if (r < 0)
        sv_fail_call(c, (int)-r, "sethostname", plan->hostname);

    /* ROOTFS: / private before any mount; a staging tmpfs; the new root. */
    channel_enter(c, SV_PHASE_ROOTFS);
    rootfs_stage(c);
    rootfs_bind_root(c);

    /* MOUNTS: /proc (mounted by a process inside the PID namespace: us),
     * /dev, /sys, /tmp, then the caller's binds and the masks, while the host
     * is still reachable as /oldroot. */
    channel_enter(c, SV_PHASE_MOUNTS);
    mounts_filesystems(c);

    /* PIVOT: into the new root; the old root is detached and unreachable. */
    channel_enter(c, SV_PHASE_PIVOT);
    rootfs_pivot(c);
    /* In our cgroup since CGROUP, unshare the cgroup namespace, so that its
     * root is the container's own cgroup; while we still hold CAP_SYS_ADMIN,
     * and before any payload code. */
    r = sv_raw(SYS_unshare, CLONE_NEWCGROUP, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "unshare(CLONE_NEWCGROUP) failed");
    /* A terminal from the container's own devpts instance (mounted above),
     * so that ttyname() and /dev/pts agree inside; the master goes to the
     * supervisor. */
    if (plan->tty)
        tty_attach(c);
}

_Noreturn void sv_pid1_main(const struct sv_plan *plan, struct sv_idmaps *maps, int cloned_into_cgroup)
{
    struct sv_child child = {
        .plan = plan,
        .maps = maps,
        .nowned = 0,
        .njoins = 0,
        .nidmapped = 0,
        .proc_fd = -1,
        .gate_fd = -1,
        .target_pidfd = -1,
        .context = NULL,
    };
    struct sv_child *c = &child;
    char program[SV_PATH_MAX];

    /* Default dispositions and an empty mask, first: the clone ran with
     * every signal blocked (no handler of the caller may run here), and an
     * ignored signal would stay ignored across execve (Python ignores
     * SIGPIPE and SIGXFSZ). Nothing below installs a handler. */
    exec_reset_signals();
    channel_init(&c->ch, adopt_fds(c, cloned_into_cgroup), plan->live_phases, plan->fault);
    /* Named until execve renames it: its exit then says whether it got there
     * (a seccomp profile that kills execve must not pass for the payload's
     * own death). */
    sv_raw(SYS_prctl, PR_SET_NAME, (long)SV_SETUP_COMM, 0, 0, 0);

    /* SPAWNED: die with our parent, and stay non-dumpable until exec so that
     * nothing in the container can ptrace us or read our memory (rootless:
     * dumpable, see SpawnConfig.rootless; the memory we share is then the
     * supervisor's, whose dumpable flag is ours too, and the clone thread's
     * map writes need it). A session of our own: the payload can never reach
     * the caller's terminal (TIOCSTI) and is not hit by the caller's Ctrl-C. */
    if (!plan->start_gate && !plan->join) /* OCI: the container outlives the runtime's command */
        sv_prctl(c, PR_SET_PDEATHSIG, SIGKILL, "PR_SET_PDEATHSIG");
    if (!plan->rootless)
        sv_prctl(c, PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE");
    sv_raw(SYS_setsid, 0, 0, 0, 0, 0);
    channel_enter(c, SV_PHASE_SPAWNED);
    /* A new container's namespaces, root and mounts (make_container,
     * above), or, for OCI exec, those of a running one (join.c), with the
     * terminal from its devpts. */
    if (plan->join) {
        join_enter(c);
        if (plan->tty)
            tty_attach(c);
    } else {
        make_container(c);
    }


    /* CAPABILITIES: after the last privileged mount and the pivot, which need
     * CAP_SYS_ADMIN: the bounding set cut to the kept set (dropping needs
     * CAP_SETPCAP, which we still hold), ambient and inheritable emptied,
     * permitted and effective cut to the kept set plus CAP_SETUID/SETGID,
     * which IDENTITY still needs. Their final value is set after the uid
     * switch. */
    channel_enter(c, SV_PHASE_CAPABILITIES);
    capabilities_limit(c);

    /* RLIMITS: in PID 1, so that they bind the payload and never the
     * supervisor; checked against the caller's hard limits beforehand, so
     * that no privilege is needed. */
    channel_enter(c, SV_PHASE_RLIMITS);
    rlimits_apply(c);

    /* IDENTITY: the payload's ids; then the working directory, entered as
     * that user and checked to be inside the container (CVE-2024-21626: a
     * directory fd leaked from outside would make getcwd unreachable). */
    channel_enter(c, SV_PHASE_IDENTITY);
    userns_become_payload(c);
    if (plan->umask >= 0)
        sv_raw(SYS_umask, plan->umask, 0, 0, 0, 0);
    long r = sv_raw(SYS_chdir, (long)plan->cwd, 0, 0, 0, 0);
    char cwd[SV_PATH_MAX];
    if (r >= 0)
        r = sv_raw(SYS_getcwd, (long)cwd, sizeof cwd, 0, 0, 0);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "enter the working directory: chdir(");
        text_quoted(&t, plan->cwd);
        text_str(&t, ") failed");
        sv_fail(c, (int)-r, &t);
    }
    if (cwd[0] != '/')
        sv_fail_call(c, EPERM, "the working directory is outside the container: getcwd", plan->cwd);

    /* SECCOMP: first the final capability sets, now that the uid switch is
     * done (uid 0 keeps the kept set; any other uid has none: the kernel
     * cleared them at setresuid, and we make it explicit and verify all
     * five). Then no_new_privs, before the filter (an unprivileged filter
     * requires it, and it stops setuid and file-capability gains); always,
     * but for an OCI bundle that says not to, whose filter is loaded with
     * CAP_SYS_ADMIN instead (kept until then, capabilities.c).
     * The filter itself is loaded at the very end of EXEC. The parent-death
     * signal re-armed after the uid switch stays: capset only shrinks the
     * sets, which commit_creds does not count as a change. */
    channel_enter(c, SV_PHASE_SECCOMP);
    capabilities_finish(c);
    if (plan->no_new_privs)
        sv_prctl(c, PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS");

    /* EXEC: resolve the program in the container's PATH, report, execve. */
    channel_enter(c, SV_PHASE_EXEC);
    exec_find(c, program, sizeof program);
    /* Nothing but stdio and the passed descriptors survives execve: every fd
     * from the control socket up becomes close-on-exec (the control socket
     * already is, so its end-of-file still reports the exec). */
    sv_raw(SYS_close_range, c->ch.fd, ~0U, CLOSE_RANGE_CLOEXEC, 0, 0);
    /* OCI create: here, with everything set up and the program found, PID 1
     * waits for `start` (gate.c); the rest of the protocol goes to it. */
    if (plan->start_gate)
        gate_wait(c);
    channel_flush(c); /* the phases held back, EXEC included */
    /* With init, PID 1 forks the payload here and stays its init (init.c):
     * only the payload, PID 2, goes on. */
    if (plan->init)
        init_fork_payload(c);
    /* The seccomp filter, last: after it only execve runs, so the profile
     * never has to allow anything of our setup (youki does the same). */
    seccomp_load(c);
    exec_payload(c, program);
}
