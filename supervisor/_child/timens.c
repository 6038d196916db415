/* The container's time namespace: CLOCK_MONOTONIC and CLOCK_BOOTTIME of its
 * own, shifted by the offsets asked for (Spec.time_offsets), the same as the
 * supervisor's otherwise. CLOCK_REALTIME is never namespaced.
 *
 * unshare(CLONE_NEWTIME) moves no one: the namespace is for PID 1's
 * children, and execve enters it too (Linux 6.2+ switches to
 * time_for_children at exec; before, the supervisor asks for a namespace
 * only with init, whose forked payload enters it), so PID 1 itself keeps the
 * caller's clocks for its phase marks. The offsets are relative to the initial namespace and
 * can only be written until the first process enters. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>

#include "sv.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

void timens_unshare(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    long r = sv_raw(SYS_unshare, CLONE_NEWTIME, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "unshare(CLONE_NEWTIME) failed");
    if (p->ntime_offsets == 0)
        return;
    struct sv_text lines;
    text_reset(&lines);
    for (size_t i = 0; i < p->ntime_offsets; i++) {
        text_str(&lines, p->time_offsets[i].clock);
        text_str(&lines, " ");
        text_int(&lines, p->time_offsets[i].seconds);
        text_str(&lines, " ");
        text_int(&lines, p->time_offsets[i].nanoseconds);
        text_str(&lines, "\n");
    }
    /* The host's procfs (the only one so far), for ourselves: opened with
     * the credentials that still own our /proc entries. */
    const char *path = "/proc/self/timens_offsets";
    long fd = sv_raw(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0, 0);
    if (fd < 0)
        sv_fail_call(c, (int)-fd, "open", path);
    /* One write: the kernel takes the whole set at once, or none of it. */
    r = sv_raw(SYS_write, fd, (long)lines.buf, (long)lines.len, 0, 0);
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
    if (r != (long)lines.len) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "write(");
        text_str(&t, path);
        text_str(&t, ", ");
        lines.buf[lines.len < sizeof lines.buf ? lines.len : sizeof lines.buf - 1] = '\0';
        text_quoted(&t, lines.buf);
        text_str(&t, ") failed");
        sv_fail(c, r < 0 ? (int)-r : EIO, &t);
    }
}
