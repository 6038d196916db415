/* The user namespace: its id maps, and PID 1's ids inside it.
 *
 * The maps are written from the host's side by the supervisor's clone thread
 * (userns_write_maps, run in the supervisor right after the clone) while PID
 * 1 waits for them (userns_wait_maps): no round trip through the event loop.
 * The two share the struct sv_idmaps beside the plan (CLONE_VM), or a shared
 * page when PID 1 has memory of its own; its state is a futex word. Rootless
 * with subordinate ids (/etc/subuid), the thread has newuidmap and newgidmap
 * write them, setuid helpers that check the caller's grant: a process of the
 * supervisor's, so posix_spawn is fine there (PID 1 itself spawns nothing).
 *
 * PID 1's ids are then set with raw calls: glibc's wrappers would try to
 * change the ids of threads the calling process had, which this child does
 * not. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sv.h"

/* A text as a C string (cut to fit). */
static const char *text_cstr(struct sv_text *t)
{
    size_t end = t->len < sizeof t->buf ? t->len : sizeof t->buf - 1;
    t->buf[end] = '\0';
    return t->buf;
}

static void map_path(struct sv_text *t, long pid, const char *name)
{
    text_reset(t);
    text_str(t, "/proc/");
    text_int(t, pid);
    text_str(t, "/");
    text_str(t, name);
}

/* The lines of uid_map (gid false) or gid_map (gid true), separated by
 * `sep`: the first extent, then the subordinate ids if any. */
static void map_lines(struct sv_text *t, const struct sv_plan *p, int gid, const char *sep)
{
    text_reset(t);
    text_int(t, gid ? p->map_gid_inside : p->map_uid_inside);
    text_str(t, " ");
    text_int(t, gid ? p->map_gid_base : p->map_base);
    text_str(t, " ");
    text_int(t, gid ? p->map_gid_size : p->map_size);
    if (p->sub_size > 0) {
        text_str(t, sep);
        text_str(t, "1 ");
        text_int(t, gid ? p->sub_gid_base : p->sub_uid_base);
        text_str(t, " ");
        text_int(t, p->sub_size);
    }
}

/* Write a text to /proc/PID/NAME; 0 or -errno. */
static long write_proc(long pid, const char *name, const struct sv_text *text)
{
    struct sv_text path;
    map_path(&path, pid, name);
    long fd = sv_raw(SYS_openat, AT_FDCWD, (long)text_cstr(&path), O_WRONLY | O_CLOEXEC, 0, 0);
    if (fd < 0)
        return fd;
    long r = sv_raw(SYS_write, fd, (long)text->buf, (long)text->len, 0, 0);
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
    return r < 0 ? r : r == (long)text->len ? 0 : -EIO;
}

/* Write one map file; 0 or -errno. */
static long write_map(long pid, const char *name, const struct sv_plan *p)
{
    struct sv_text line;
    map_lines(&line, p, name[0] == 'g', "\n");
    text_str(&line, "\n");
    return write_proc(pid, name, &line);
}

/* Have the setuid helper (newuidmap, newgidmap) write one map file: only it
 * may map the caller's subordinate ids (/etc/subuid). Its output is kept for
 * the failure's text. 0 or -errno (EPERM for a refusal). */
static long run_helper(const char *helper, long pid, const struct sv_plan *p, int gid, struct sv_idmaps *m)
{
    struct sv_text words, pidtext;
    map_lines(&words, p, gid, " ");
    text_cstr(&words);
    text_reset(&pidtext);
    text_int(&pidtext, pid);
    char *argv[2 + 6 + 1];
    size_t argc = 0;
    argv[argc++] = (char *)helper;
    argv[argc++] = (char *)text_cstr(&pidtext);
    for (char *w = words.buf; *w != '\0' && argc < 8;) { /* the lines' numbers, split in place */
        argv[argc++] = w;
        while (*w != '\0' && *w != ' ')
            w++;
        if (*w == ' ')
            *w++ = '\0';
    }
    argv[argc] = NULL;
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none); /* the clone thread blocks every signal */
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    char *envp[] = {NULL};
    pid_t child;
    int rc = posix_spawn(&child, helper, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(out[1]);
    long r = 0;
    if (rc != 0) {
        r = -rc;
    } else {
        /* Keep the end of what it says: the reason is on its last line. */
        char said[sizeof m->helper_said * 2];
        size_t len = 0, keep = sizeof m->helper_said - 1;
        ssize_t n;
        while ((n = read(out[0], said + len, sizeof said - len)) > 0 || (n < 0 && errno == EINTR)) {
            len += n > 0 ? (size_t)n : 0;
            if (len > keep) { /* make room: only the last `keep` bytes matter */
                memmove(said, said + len - keep, keep);
                len = keep;
            }
        }
        memcpy(m->helper_said, said, len);
        while (len > 0 && (m->helper_said[len - 1] == '\n' || m->helper_said[len - 1] == ' '))
            len--;
        m->helper_said[len] = '\0';
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR)
            ;
        m->helper_status = status;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            r = -EPERM;
    }
    close(out[0]);
    return r;
}

/* Rootless: the kernel lets the caller map its own gid only once setgroups
 * is denied in the namespace (else dropping a group could grant access). */
static long deny_setgroups_of(long pid)
{
    struct sv_text deny;
    text_reset(&deny);
    text_str(&deny, "deny");
    return write_proc(pid, "setgroups", &deny);
}

void userns_write_maps(const struct sv_plan *p, struct sv_idmaps *m, long pid)
{
    /* PID 1 is our child and not reaped before this step is done, so
     * /proc/PID is it. uid_map first, as the kernel checks nothing between
     * the two that the other would change. */
    long r = 0;
    int32_t failed = SV_MAPS_FAULT_BEFORE;
    m->helper_status = -1;
    m->helper_said[0] = '\0';
    if (p->id_maps_fault == SV_MAPS_FAULT_BEFORE)
        r = -EIO;
    if (p->uid_helper != NULL) {
        /* newgidmap denies setgroups itself unless /etc/subgid grants the
         * range: then the container may drop the caller's groups. */
        if (r == 0 && (r = run_helper(p->uid_helper, pid, p, 0, m)) < 0)
            failed = SV_MAPS_UID;
        if (r == 0 && (r = run_helper(p->gid_helper, pid, p, 1, m)) < 0)
            failed = SV_MAPS_GID;
    } else {
        if (r == 0 && (r = write_map(pid, "uid_map", p)) < 0)
            failed = SV_MAPS_UID;
        if (r == 0 && p->rootless && (r = deny_setgroups_of(pid)) < 0)
            failed = SV_MAPS_SETGROUPS;
        if (r == 0 && (r = write_map(pid, "gid_map", p)) < 0)
            failed = SV_MAPS_GID;
    }
    if (r == 0 && p->id_maps_fault == SV_MAPS_FAULT_AFTER) {
        r = -EIO;
        failed = SV_MAPS_FAULT_AFTER;
    }
    m->failed = failed;
    m->pid = (int32_t)pid;
    __atomic_store_n(&m->state, r < 0 ? (int32_t)r : 1, __ATOMIC_RELEASE);
    sv_raw(SYS_futex, (long)&m->state, p->own_memory ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, 1, 0, 0);
}

void userns_wait_maps(struct sv_child *c)
{
    struct sv_idmaps *m = c->maps;
    int32_t state;
    /* The maps come within microseconds of the clone, unless the supervisor
     * died before writing them; then nobody ever wakes us, and our
     * parent-death signal may have been armed too late to fire. So the wait
     * has a timeout, after which a hung-up control socket (the supervisor's
     * end closed with it) ends us, as a missing answer to a request does. */
    struct timespec wait = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
    while ((state = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE)) == 0) {
        sv_raw(SYS_futex, (long)&m->state, c->plan->own_memory ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, 0, (long)&wait,
               0); /* or EAGAIN, EINTR */
        if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) != 0)
            continue;
        struct pollfd control = {.fd = c->ch.fd, .events = POLLRDHUP};
        struct timespec now = {0, 0};
        if (sv_raw(SYS_ppoll, (long)&control, 1, (long)&now, 0, 0) > 0 &&
            (control.revents & (POLLHUP | POLLRDHUP | POLLERR)))
            sv_raw(SYS_exit_group, 1, 0, 0, 0, 0);
    }
    if (state > 0)
        return;
    struct sv_text t;
    if (m->failed == SV_MAPS_FAULT_BEFORE || m->failed == SV_MAPS_FAULT_AFTER) {
        text_reset(&t);
        text_str(&t, m->failed == SV_MAPS_FAULT_BEFORE ? "fault injected in" : "fault injected after");
        text_str(&t, " the supervisor's userns step (supervisor.testing)");
    } else if (c->plan->uid_helper != NULL) {
        struct sv_text line;
        map_lines(&line, c->plan, m->failed == SV_MAPS_GID, " ");
        text_reset(&t);
        text_str(&t, "the supervisor's ");
        text_str(&t, m->failed == SV_MAPS_GID ? c->plan->gid_helper : c->plan->uid_helper);
        text_str(&t, " ");
        text_int(&t, m->pid);
        text_str(&t, " ");
        text_str(&t, text_cstr(&line));
        if (m->helper_status < 0) {
            text_str(&t, " could not run");
        } else {
            text_str(&t, " failed");
            if (m->helper_said[0] != '\0') {
                text_str(&t, ": ");
                text_str(&t, m->helper_said);
            }
        }
    } else {
        struct sv_text line, path;
        if (m->failed == SV_MAPS_SETGROUPS) {
            text_reset(&line);
            text_str(&line, "deny");
        } else {
            map_lines(&line, c->plan, m->failed == SV_MAPS_GID, "\\n");
        }
        map_path(&path, m->pid,
                 m->failed == SV_MAPS_UID ? "uid_map" : m->failed == SV_MAPS_GID ? "gid_map" : "setgroups");
        text_reset(&t);
        text_str(&t, "the supervisor's write of ");
        text_quoted(&t, text_cstr(&line));
        text_str(&t, " to ");
        text_str(&t, text_cstr(&path));
        text_str(&t, " failed");
    }
    sv_fail(c, -state, &t);
}

static void set_ids(struct sv_child *c, uid_t uid, gid_t gid, int payload)
{
    long r = 0;
    const struct sv_plan *p = c->plan;
    /* With setgroups denied (rootless, unless newgidmap mapped subordinate
     * gids) PID 1 keeps the caller's groups: the kernel lets nobody in the
     * namespace change them. The payload gets its own list, root none. */
    size_t n = payload ? p->ngroups : 0;
    if ((!p->rootless || p->sub_size > 0) && (r = sv_raw(SYS_setgroups, (long)n, (long)p->groups, 0, 0, 0)) < 0)
        sv_fail_num(c, (int)-r, "setgroups() of ", (long long)n, 0, " groups failed (are they mapped?)");
    r = sv_raw(SYS_setresgid, gid, gid, gid, 0, 0);
    if (r < 0)
        sv_fail_num(c, (int)-r, "setresgid(", gid, 0, ") failed (is the gid mapped?)");
    r = sv_raw(SYS_setresuid, uid, uid, uid, 0, 0);
    if (r < 0)
        sv_fail_num(c, (int)-r, "setresuid(", uid, 0, ") failed (is the uid mapped?)");
    /* A uid change clears the parent-death signal (commit_creds): re-arm it
     * at once, so there is no window in which our parent's death spares us
     * (OCI's start_gate and join are meant to outlive their parent). */
    if (!p->start_gate && !p->join)
        sv_prctl(c, PR_SET_PDEATHSIG, SIGKILL, "PR_SET_PDEATHSIG");
}

void userns_become_root(struct sv_child *c) { set_ids(c, c->plan->map_uid_inside, c->plan->map_gid_inside, 0); }

void userns_become_payload(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    /* A non-root payload with inheritable or ambient capabilities (an OCI
     * bundle's), or that keeps CAP_SYS_ADMIN for its filter: permitted
     * survives the uid switch, so that capset may still set them (the flag
     * itself does not survive execve). */
    if (p->uid != 0 && (p->inheritable || p->ambient || p->filter_privileged))
        sv_prctl(c, PR_SET_KEEPCAPS, 1, "PR_SET_KEEPCAPS");
    set_ids(c, p->uid, p->gid, 1);
}
