/* PID 1's ids inside its user namespace: root of the container during setup,
 * then the payload's ids. Raw calls: glibc's wrappers would try to change
 * the ids of threads the calling process had, which this child does not. */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "sv.h"

static void set_ids(struct sv_child *c, uid_t uid, gid_t gid)
{
    long r = sv_raw(SYS_setgroups, 0, 0, 0, 0, 0);
    if (r < 0)
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
