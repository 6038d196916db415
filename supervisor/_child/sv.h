/* PID 1's setup: the plan it runs, the channel it reports on, the helpers.
 *
 * Everything declared here runs in a freshly cloned process, from the clone
 * to the payload's execve. The rules for that side (see setup.c):
 *   - no allocation, no stdio, no locks: only system calls (raw where glibc's
 *     wrapper keeps state, as the credential calls do) and our own code on
 *     this process's stack and the plan;
 *   - no global state: a container's state is its struct sv_child, passed
 *     down, so two children never share a byte of it;
 *   - every failure is reported once, as one FAIL record, then _exit(125).
 *
 * The plan is filled in the calling process before the clone (plan.c), from
 * the declared spawn configuration (supervisor._protocol.SpawnConfig); the
 * record layouts and phase numbers come from the same declaration, through
 * the generated sv_protocol.h.
 */
#ifndef SV_H
#define SV_H

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sv_protocol.h"

/* Longest path PID 1 builds (PATH_MAX). */
#define SV_PATH_MAX 4096

/* --- the plan: everything PID 1 needs, resolved before the clone ------- */

struct sv_bind {
    const char *src; /* host path, absolute and resolved */
    const char *dst; /* container path */
    int read_only;
    int idmapped; /* moved into place from a descriptor of the supervisor's (idmap.c) */
    unsigned long propagation; /* MS_SHARED... (MS_REC) set once in place, or 0 */
};

struct sv_sysdir {
    const char *name; /* a host top-level folder of the embedded default root */
    const char *link; /* its symlink target on merged-/usr hosts, else NULL */
};

/* A cgroup entry file the supervisor opened before the clone. */
enum sv_cgroup_kind {
    SV_CGROUP_CLONE, /* a v2 directory: clone3(CLONE_INTO_CGROUP) starts PID 1 there */
    SV_CGROUP_PROCS, /* its cgroup.procs: written only where clone3 could not be used */
    SV_CGROUP_TASKS, /* a v1 tasks file: always written */
};

struct sv_cgroup_entry {
    enum sv_cgroup_kind kind;
    const char *path; /* host path, for messages */
};

struct sv_rlimit {
    int resource;
    uint64_t soft, hard;
};

/* A tmpfs of the caller's (mounts.c). */
struct sv_tmpfs {
    const char *path;    /* container path */
    const char *options; /* the mount's data */
    const char *source;  /* what mountinfo shows as its source ("tmpfs") */
    int read_only, exec;
    unsigned long propagation; /* as sv_bind's */
};

/* A kernel parameter of the container's namespaces (sysctl.c). */
struct sv_sysctl {
    const char *path;  /* below /proc/sys: "net/ipv4/ping_group_range" */
    const char *value;
};

/* A device node of an OCI bundle's (devices.c). */
struct sv_device {
    const char *path; /* container path */
    char kind;        /* 'c', 'b' or 'p' (a FIFO) */
    uint32_t major, minor, mode, uid, gid;
};

/* A namespace an OCI bundle joins by path (join.c). */
struct sv_ns_path {
    unsigned long kind; /* CLONE_NEWNET... */
    const char *path;   /* host path: /proc/PID/ns/net, /run/netns/NAME */
};

/* One line of /proc/PID/timens_offsets. */
struct sv_time_offset {
    const char *clock; /* "monotonic" or "boottime" */
    int64_t seconds;
    uint32_t nanoseconds; /* 0..999999999, added to seconds (also when negative) */
};

struct sv_plan {
    unsigned long clone_flags;
    char *const *argv;
    char *const *envp;
    const char *search_path; /* $PATH inside the container, for the lookup */
    const char *cwd;
    const char *hostname;
    const char *hosts; /* the text of /etc/hosts, or NULL: the root's own */
    uid_t uid;
    gid_t gid;
    uint32_t map_base, map_size; /* container uids from map_uid_inside are host uids map_base.. */
    uint32_t map_gid_base;       /* and gids from map_gid_inside host gids map_gid_base.. */
    uint32_t map_gid_size;       /* how many gids (map_size, but for an OCI bundle's maps) */
    uint32_t map_uid_inside, map_gid_inside; /* 0, but rootless with the caller's own ids: the payload's */
    uint32_t sub_uid_base, sub_gid_base, sub_size; /* container ids 1..sub_size: subordinate ids, or 0 */
    const char *uid_helper, *gid_helper; /* newuidmap/newgidmap, or NULL: the maps are written directly */
    int rootless;   /* not root: PID 1 dumpable until its maps are written (SpawnConfig) */
    int own_memory; /* PID 1 cloned without CLONE_VM: its ids leave the caller's (derived) */
    const char *rootfs; /* host path, or NULL for the embedded default root */
    int overlay, read_only_root, tty;
    int network_request; /* ask the supervisor for the NETWORK step */
    int own_loopback;    /* bring up lo (not with the host's network) */
    int live_phases;
    int init; /* PID 1 forks the payload and stays as its init (init.c) */
    int time_namespace; /* a time namespace for the payload (timens.c) */
    int start_gate; /* OCI create: PID 1 outlives its creator and waits for `start` (gate.c) */
    int umask;      /* the payload's file mode creation mask, or -1: the caller's */
    const char *mount_order; /* an OCI bundle's mounts in order (SpawnConfig.mount_order), or "" */
    int join;       /* OCI exec: enter the running container of the last descriptor, a pidfd (join.c) */
    const gid_t *groups; /* the payload's supplementary groups */
    size_t ngroups;
    int fault; /* test-only: the phase to fail at, or 0 */
    int id_maps_fault; /* test-only: SV_MAPS_FAULT_* for the clone thread's step, or 0 */
    uint64_t capabilities; /* the kept set, as a mask */
    uint64_t inheritable, ambient; /* OCI: the payload's; else 0 */
    int no_new_privs; /* set before exec (always, but for an OCI bundle that says not to) */
    unsigned long rootfs_propagation; /* MS_SHARED... for the whole tree after the pivot, or 0 */
    int filter_privileged; /* a filter without no_new_privs: CAP_SYS_ADMIN kept for it (derived) */
    int last_cap;          /* the highest capability this kernel knows */
    const struct sv_sysdir *system;
    size_t nsystem;
    const struct sv_bind *binds;
    size_t nbinds;
    size_t nidmapped; /* binds with idmapped set */
    const struct sv_tmpfs *tmpfs;
    size_t ntmpfs;
    const char *const *masked;
    size_t nmasked;
    const char *const *readonly;
    size_t nreadonly;
    const struct sv_rlimit *rlimits;
    size_t nrlimits;
    const struct sv_sysctl *sysctls;
    size_t nsysctls;
    const struct sv_device *devices; /* made by mknod (OCI, without a user namespace) */
    size_t ndevices;
    const struct sv_ns_path *ns_paths; /* joined by PID 1 first (the PID namespace's by the clone thread) */
    size_t nns_paths;
    const struct sv_time_offset *time_offsets; /* none: the clocks of the initial namespace */
    size_t ntime_offsets;
    struct sock_fprog seccomp; /* .len == 0: no filter */
    unsigned int seccomp_flags;
    const struct sv_cgroup_entry *cgroup;
    size_t ncgroup;
    /* Descriptors as the caller holds them: the control socket, stdin,
     * stdout, stderr, the passed ones, one per cgroup entry, one per
     * id-mapped bind, then with start_gate the listening socket, with join
     * the container's pidfd. */
    const int *fds;
    size_t npassed;
};

/* The id maps, written by the supervisor's clone thread right after the
 * clone while PID 1 waits for them at USERNS (userns.c). It lives beside the
 * plan, in memory the two share (CLONE_VM), or in a shared page of its own
 * when PID 1 has its own memory (own_memory); `state` is a futex word. */
struct sv_idmaps {
    int32_t state;  /* 0 pending; 1 written; -errno: the step failed */
    int32_t failed; /* then what: SV_MAPS_UID, SV_MAPS_GID, SV_MAPS_SETGROUPS or SV_MAPS_FAULT_* */
    int32_t pid;    /* PID 1's host pid, for the failure's text */
    int32_t helper_status; /* a helper's (newuidmap's) exit status, or -1 */
    char helper_said[160]; /* the end of what it printed, NUL-terminated */
};
enum { SV_MAPS_UID, SV_MAPS_GID, SV_MAPS_FAULT_BEFORE, SV_MAPS_FAULT_AFTER, SV_MAPS_SETGROUPS };

/* --- PID 1's state ------------------------------------------------------ */

struct sv_text {
    char buf[SV_MAX_MESSAGE];
    size_t len;
};

struct sv_channel {
    int fd;
    uint32_t phase;
    int live;
    int fault;
    uint32_t npending;
    struct sv_mark pending[SV_MAX_MARKS];
};

#define SV_MAX_OWNED 16
/* Most supplementary groups of the payload (the kernel's NGROUPS_MAX is larger). */
#define SV_MAX_GROUPS 64

struct sv_child {
    const struct sv_plan *plan;
    struct sv_idmaps *maps;
    struct sv_channel ch;
    /* Container paths of the filesystems we mounted ourselves (tmpfs): only
     * there may a missing mount point be created. */
    const char *owned[SV_MAX_OWNED];
    size_t nowned;
    /* The cgroup files to write 0 to, once PID 1 adopted its descriptors. */
    int join_fd[SV_MAX_CGROUP_FDS];
    const char *join_path[SV_MAX_CGROUP_FDS];
    size_t njoins;
    /* The supervisor's id-mapped mounts, in the order of their binds. */
    int idmapped_fd[SV_MAX_IDMAPPED];
    size_t nidmapped;
    /* Where the fresh procfs and sysfs are (below /newroot): a hostile
     * rootfs can make /proc a symlink, and masks must follow the mount. */
    char proc_at[SV_PATH_MAX];
    char sys_at[SV_PATH_MAX];
    /* With init: that procfs, opened (O_PATH) where it was mounted, for the
     * payload's name; else -1. */
    int proc_fd;
    /* With start_gate: the listening socket `start` connects to; else -1. */
    int gate_fd;
    /* With join: the pidfd of the container's PID 1; else -1. */
    int target_pidfd;
    /* What the current step is doing, when a call alone would not say it
     * ("masking /proc/kcore"): it leads the failure's text. */
    const char *context;
};

/* The kernel's struct sigaction (x86_64 and aarch64 share this layout) and
 * its 64-bit signal set. */
struct sv_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};
#define SV_SIGSET_SIZE 8

/* --- text, without stdio (text.c) -------------------------------------- */

void text_reset(struct sv_text *t);
void text_str(struct sv_text *t, const char *s);
void text_quoted(struct sv_text *t, const char *s); /* "s", escaped */
void text_path(struct sv_text *t, const char *staged); /* a staging path, as the user knows it */
void text_int(struct sv_text *t, long long v);
void text_hex(struct sv_text *t, unsigned long long v);
void text_mode(struct sv_text *t, unsigned int mode); /* permission bits, 4 octal digits */
void text_mount_flags(struct sv_text *t, unsigned long flags);
size_t sv_strlen(const char *s);
int sv_streq(const char *a, const char *b);
int sv_startswith(const char *s, const char *prefix);
/* Joins a and b into a fixed buffer; -ENAMETOOLONG if it does not fit. */
int sv_join_path(char *out, size_t size, const char *a, const char *b);

/* --- the channel (channel.c) ------------------------------------------ */

void channel_init(struct sv_channel *ch, int fd, int live, int fault);
void channel_enter(struct sv_child *c, uint32_t phase);
void channel_request(struct sv_child *c, uint32_t phase);
/* A request in the current phase, entered already: send, wait for the ACK. */
void channel_ask(struct sv_child *c);
void channel_flush(struct sv_child *c);
int channel_send_fd(struct sv_child *c, uint32_t tag, int fd);
/* Report the failure of the current phase: errno and the text, once. */
_Noreturn void sv_fail(struct sv_child *c, int err, const struct sv_text *t);
/* The same with a text of one string. */
_Noreturn void sv_fail_str(struct sv_child *c, int err, const char *what);
/* The same with the text `before`, a number (in hex with `hex`), `after`. */
_Noreturn void sv_fail_num(struct sv_child *c, int err, const char *before, long long value, int hex,
                           const char *after);

/* --- system calls that name themselves on failure (syscalls.c) --------- */

long sv_raw(long nr, long a, long b, long c, long d, long e); /* -errno on failure */
void sv_mount(struct sv_child *c, const char *src, const char *dst, const char *fstype, unsigned long flags,
              const char *data);
void sv_mount_setattr(struct sv_child *c, const char *path, uint64_t attrs, int recursive);
void sv_mkdir(struct sv_child *c, const char *path, mode_t mode);
void sv_symlink(struct sv_child *c, const char *target, const char *path);
void sv_touch(struct sv_child *c, const char *path, mode_t mode);
void sv_chdir(struct sv_child *c, const char *path);
void sv_prctl(struct sv_child *c, int option, unsigned long arg, const char *name);
/* The failure of call `call` on path `path` (shown as the user knows it). */
_Noreturn void sv_fail_call(struct sv_child *c, int err, const char *call, const char *path);

/* --- the steps, one file per kernel concept ----------------------------- */

void userns_wait_maps(struct sv_child *c);               /* userns.c */
void userns_become_root(struct sv_child *c);             /* userns.c */
void userns_become_payload(struct sv_child *c);          /* userns.c */
void cgroups_enter(struct sv_child *c);                  /* cgroups.c */
void network_loopback_up(struct sv_child *c);            /* network.c */
void rootfs_stage(struct sv_child *c);                   /* rootfs.c */
void rootfs_bind_root(struct sv_child *c);               /* rootfs.c */
void rootfs_pivot(struct sv_child *c);                   /* rootfs.c */
void rootfs_own(struct sv_child *c, const char *path);   /* rootfs.c: a filesystem of ours */
int rootfs_owned(const struct sv_child *c, const char *resolved); /* rootfs.c */
void mounts_filesystems(struct sv_child *c);             /* mounts.c */
void masks_apply(struct sv_child *c);                    /* masks.c */
void devices_create(struct sv_child *c);                 /* devices.c */
void capabilities_limit(struct sv_child *c);             /* capabilities.c */
void capabilities_finish(struct sv_child *c);            /* capabilities.c */
void capabilities_after_filter(struct sv_child *c);      /* capabilities.c */
void rlimits_apply(struct sv_child *c);                  /* rlimits.c */
void timens_unshare(struct sv_child *c);                 /* timens.c */
void tty_attach(struct sv_child *c);                     /* tty.c */
void seccomp_load(struct sv_child *c);                   /* seccomp.c */
void gate_wait(struct sv_child *c);                      /* gate.c */
void sysctl_apply(struct sv_child *c);                   /* sysctl.c */
void join_enter(struct sv_child *c);                     /* join.c */
void join_paths(struct sv_child *c);                     /* join.c */
void exec_find(struct sv_child *c, char *out, size_t size); /* exec.c */
void exec_reset_signals(void);                           /* exec.c */
_Noreturn void exec_payload(struct sv_child *c, const char *path); /* exec.c */
/* Fork the payload and become its init: returns in the payload only (init.c). */
void init_fork_payload(struct sv_child *c);

/* The mount point of container path `path` below /newroot, created in a
 * filesystem of ours if missing (mounts.c). */
int mounts_point(struct sv_child *c, const char *path, int directory, char *out, size_t size); /* 1: made it */
/* Host path `host_path` as PID 1 reaches it (below /oldroot) into `out`,
 * and its stat; a failure is reported (`what` failing), and for EACCES it
 * names the folder the container's root cannot search. */
struct stat;
void mounts_host_path(struct sv_child *c, const char *host_path, const char *what, char *out, size_t size,
                      struct stat *st);

/* The supervisor's side of id-mapped binds, before the clone (idmap.c): a
 * user namespace mapping owner_uid/gid to to_uid/gid (its descriptor), and
 * a detached clone of path's tree with that mapping (its descriptor); -errno. */
int idmap_userns(uid_t owner_uid, uid_t to_uid, gid_t owner_gid, gid_t to_gid);
int idmap_tree(const char *path, int userns_fd);

/* clone3(args, size) starting the child in fn(arg) on the stack that args
 * names; the pid, 0 never (the child does not return here), or -errno
 * (clone.c). */
struct clone_args;
long sv_clone3(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);

/* The supervisor's half of USERNS, in its clone thread right after the
 * clone of `pid`: write the maps, publish the outcome, wake PID 1 (userns.c). */
void userns_write_maps(const struct sv_plan *plan, struct sv_idmaps *maps, long pid);

/* PID 1's whole life, from the clone (setup.c). */
_Noreturn void sv_pid1_main(const struct sv_plan *plan, struct sv_idmaps *maps, int cloned_into_cgroup);

#define SV_STAGING "/tmp"
#define SV_NEWROOT "/newroot"
#define SV_OLDROOT "/oldroot"

#endif
