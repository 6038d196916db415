/* The start gate of an OCI container: PID 1 between `create` and `start`.
 *
 * The OCI runtime's `create` leaves the container set up and waiting before
 * its execve, and exits; `start`, another process, later lets it go. PID 1
 * was cloned with a listening socket of `create`'s (SpawnConfig.start_gate)
 * and without a parent-death signal. Here it first asks `create` to record
 * the container as created (a REQUEST of EXEC, answered once the state file
 * is written: if `create` dies instead, PID 1 exits, and no container is
 * left that nobody knows of). Then it waits for the one connection of
 * `start` and makes it its control socket: the rest of the protocol (the
 * phases held back, a failure of the last steps, the end-of-file of execve)
 * goes to `start`, which reports it. */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "sv.h"

/* One connection of `start`'s whose first record is its go (the ACK of
 * EXEC), or -1 for one that closed without saying it. */
static long accept_go(struct sv_child *c)
{
    long conn;
    do
        conn = sv_raw(SYS_accept4, c->gate_fd, 0, 0, SOCK_CLOEXEC, 0);
    while (conn == -EINTR || conn == -ECONNABORTED);
    if (conn < 0)
        sv_fail_str(c, (int)-conn, "accept4() on the start socket failed");
    struct sv_header go;
    long n;
    do
        n = sv_raw(SYS_recvfrom, conn, (long)&go, sizeof go, 0, 0);
    while (n == -EINTR);
    if (n == (long)sizeof go && go.tag == SV_REC_ACK && go.phase == SV_PHASE_EXEC)
        return conn;
    sv_raw(SYS_close, conn, 0, 0, 0, 0);
    return -1;
}

void gate_wait(struct sv_child *c)
{
    channel_ask(c); /* in EXEC, entered before the program's lookup */
    /* A `start` that died before its go leaves the container created, for
     * the next one. */
    long conn;
    while ((conn = accept_go(c)) < 0)
        ;
    /* The connection takes the control socket's number (its old end, whose
     * peer has exited, closes), so that everything after reports there. */
    long r = sv_raw(SYS_dup3, conn, c->ch.fd, O_CLOEXEC, 0, 0);
    sv_raw(SYS_close, conn, 0, 0, 0, 0);
    sv_raw(SYS_close, c->gate_fd, 0, 0, 0, 0);
    c->gate_fd = -1;
    if (r < 0)
        sv_raw(SYS_exit_group, 125, 0, 0, 0, 0); /* no channel left to report on */
}
