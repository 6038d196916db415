/* The user namespace: its id maps, and PID 1's ids inside it.
 *
 * The maps are written from the host's side by the supervisor's clone thread
 * (userns_write_maps, run in the supervisor right after the clone) while PID
 * 1 waits for them (userns_wait_maps): no round trip through the event loop.
 * The two share the struct sv_idmaps beside the plan (CLONE_VM), whose state
 * is a futex word.
 *
 * PID 1's ids are then set with raw calls: glibc's wrappers would try to
 * change the ids of threads the calling process had, which this child does
 * not. */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

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

/* The one line of uid_map (gid false) or gid_map (gid true). */
static void map_line(struct sv_text *t, const struct sv_plan *p, int gid)
{
    text_reset(t);
    text_str(t, "0 ");
    text_int(t, gid ? p->map_gid_base : p->map_base);
    text_str(t, " ");
    text_int(t, p->map_size);
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
    map_line(&line, p, name[0] == 'g');
    text_str(&line, "\n");
    return write_proc(pid, name, &line);
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
    if (p->id_maps_fault == SV_MAPS_FAULT_BEFORE)
        r = -EIO;
    if (r == 0 && (r = write_map(pid, "uid_map", p)) < 0)
        failed = SV_MAPS_UID;
    if (r == 0 && p->rootless && (r = deny_setgroups_of(pid)) < 0)
        failed = SV_MAPS_SETGROUPS;
    if (r == 0 && (r = write_map(pid, "gid_map", p)) < 0)
        failed = SV_MAPS_GID;
    if (r == 0 && p->id_maps_fault == SV_MAPS_FAULT_AFTER) {
        r = -EIO;
        failed = SV_MAPS_FAULT_AFTER;
    }
    m->failed = failed;
    m->pid = (int32_t)pid;
    __atomic_store_n(&m->state, r < 0 ? (int32_t)r : 1, __ATOMIC_RELEASE);
    sv_raw(SYS_futex, (long)&m->state, FUTEX_WAKE_PRIVATE, 1, 0, 0);
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
        sv_raw(SYS_futex, (long)&m->state, FUTEX_WAIT_PRIVATE, 0, (long)&wait, 0); /* or EAGAIN, EINTR */
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
    } else {
        struct sv_text line, path;
        if (m->failed == SV_MAPS_SETGROUPS) {
            text_reset(&line);
            text_str(&line, "deny");
        } else {
            map_line(&line, c->plan, m->failed == SV_MAPS_GID);
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

static void set_ids(struct sv_child *c, uid_t uid, gid_t gid)
{
    long r = 0;
    /* With setgroups denied (rootless) PID 1 keeps the caller's groups: the
     * kernel lets nobody in the namespace change them. */
    if (!c->plan->rootless && (r = sv_raw(SYS_setgroups, 0, 0, 0, 0, 0)) < 0)
        sv_fail_str(c, (int)-r, "setgroups([]) failed");
    r = sv_raw(SYS_setresgid, gid, gid, gid, 0, 0);
    if (r < 0)
        sv_fail_num(c, (int)-r, "setresgid(", gid, 0, ") failed (is the gid mapped?)");
    r = sv_raw(SYS_setresuid, uid, uid, uid, 0, 0);
    if (r < 0)
        sv_fail_num(c, (int)-r, "setresuid(", uid, 0, ") failed (is the uid mapped?)");
    /* A uid change clears the parent-death signal (commit_creds): re-arm it
     * at once, so there is no window in which our parent's death spares us. */
    sv_prctl(c, PR_SET_PDEATHSIG, SIGKILL, "PR_SET_PDEATHSIG");
}

void userns_become_root(struct sv_child *c) { set_ids(c, 0, 0); }

void userns_become_payload(struct sv_child *c) { set_ids(c, c->plan->uid, c->plan->gid); }
