/* PID 1's end of the control socket: phase marks, requests, the failure.
 *
 * Each phase start is stamped (CLOCK_MONOTONIC) as it happens. In live mode
 * (someone in the supervisor watches phases as they come) each mark is sent
 * at once; otherwise marks are held back and go with the next record that is
 * sent anyway: a request, the terminal's PTY record, the failure, or the last
 * PHASE record before execve. That saves the supervisor a wake-up per phase. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sv.h"

void channel_init(struct sv_channel *ch, int fd, int live, int fault)
{
    ch->fd = fd;
    ch->phase = SV_PHASE_SPAWNED;
    ch->live = live;
    ch->fault = fault;
    ch->npending = 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts = {0, 0};
    sv_raw(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts, 0, 0, 0);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void mark(struct sv_channel *ch, uint32_t phase)
{
    if (ch->npending < SV_MAX_MARKS) {
        struct sv_mark *m = &ch->pending[ch->npending++];
        m->phase = phase;
        m->pad = 0;
        m->ts = now_ns();
    }
}

/* One record: the header, the held-back marks, an optional text, an
 * optional descriptor. Returns 0 or -errno. */
static long send_record(struct sv_channel *ch, uint32_t tag, int32_t err, const struct sv_text *t, int fd)
{
    struct sv_header h = {.tag = tag, .phase = ch->phase, .err = err, .nmarks = ch->npending};
    struct iovec iov[3] = {
        {.iov_base = &h, .iov_len = sizeof h},
        {.iov_base = ch->pending, .iov_len = ch->npending * sizeof ch->pending[0]},
        {.iov_base = t ? (void *)t->buf : NULL, .iov_len = t ? t->len : 0},
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    if (fd >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    long r;
    do
        r = sv_raw(SYS_sendmsg, ch->fd, (long)&msg, MSG_NOSIGNAL, 0, 0);
    while (r == -EINTR);
    ch->npending = 0;
    return r < 0 ? r : 0;
}

static void maybe_fault(struct sv_child *c)
{
    if (c->ch.fault != 0 && (uint32_t)c->ch.fault == c->ch.phase) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "fault injected at phase ");
        text_str(&t, sv_phase_label(c->ch.phase));
        text_str(&t, " (supervisor.testing)");
        sv_fail(c, EIO, &t);
    }
}

void channel_enter(struct sv_child *c, uint32_t phase)
{
    c->ch.phase = phase;
    mark(&c->ch, phase);
    if (c->ch.live)
        channel_flush(c);
    maybe_fault(c);
}

void channel_flush(struct sv_child *c)
{
    if (c->ch.npending == 0)
        return;
    if (send_record(&c->ch, SV_REC_PHASE, 0, NULL, -1) < 0)
        sv_raw(SYS_exit_group, 1, 0, 0, 0, 0); /* the supervisor is gone: nothing to report to */
}

void channel_request(struct sv_child *c, uint32_t phase)
{
    c->ch.phase = phase;
    mark(&c->ch, phase);
    maybe_fault(c); /* the mark goes with the failure */
    channel_ask(c);
}

void channel_ask(struct sv_child *c)
{
    uint32_t phase = c->ch.phase;
    if (send_record(&c->ch, SV_REC_REQUEST, 0, NULL, -1) < 0)
        sv_raw(SYS_exit_group, 1, 0, 0, 0, 0);
    struct sv_header ack;
    long n;
    do
        n = sv_raw(SYS_recvfrom, c->ch.fd, (long)&ack, sizeof ack, 0, 0);
    while (n == -EINTR);
    /* The supervisor went away or gave up (it answers nothing else): nothing
     * to report to. */
    if (n != (long)sizeof ack || ack.tag != SV_REC_ACK || ack.phase != phase)
        sv_raw(SYS_exit_group, 1, 0, 0, 0, 0);
}

int channel_send_fd(struct sv_child *c, uint32_t tag, int fd)
{
    return (int)send_record(&c->ch, tag, 0, NULL, fd);
}

_Noreturn void sv_fail(struct sv_child *c, int err, const struct sv_text *t)
{
    if (c->context != NULL) {
        struct sv_text full;
        text_reset(&full);
        text_str(&full, c->context);
        text_str(&full, ": ");
        for (size_t i = 0; i < t->len && full.len < sizeof full.buf; i++)
            full.buf[full.len++] = t->buf[i];
        send_record(&c->ch, SV_REC_FAIL, err, &full, -1);
    } else {
        send_record(&c->ch, SV_REC_FAIL, err, t, -1);
    }
    for (;;)
        sv_raw(SYS_exit_group, 125, 0, 0, 0, 0);
}

_Noreturn void sv_fail_num(struct sv_child *c, int err, const char *before, long long value, int hex,
                           const char *after)
{
    struct sv_text t;
    text_reset(&t);
    text_str(&t, before);
    if (hex)
        text_hex(&t, (unsigned long long)value);
    else
        text_int(&t, value);
    text_str(&t, after);
    sv_fail(c, err, &t);
}

_Noreturn void sv_fail_str(struct sv_child *c, int err, const char *what)
{
    struct sv_text t;
    text_reset(&t);
    text_str(&t, what);
    sv_fail(c, err, &t);
}
