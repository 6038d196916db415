/* PID 1's half of seccomp: hand the kernel the filter the supervisor
 * compiled (libseccomp, once per profile). PID 1 never parses a profile and
 * never links libseccomp. Loaded right before execve, so that the filter
 * never has to allow anything our own setup does (but capset, for an OCI
 * bundle's filter without no_new_privs: capabilities.c). */
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include "sv.h"

void seccomp_load(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    if (p->seccomp.len == 0)
        return;
    /* After PR_SET_NO_NEW_PRIVS: that lets us load it without
     * CAP_SYS_ADMIN, and the kernel requires it for an unprivileged filter;
     * or (filter_privileged) with CAP_SYS_ADMIN, dropped right after. */
    long r = sv_raw(SYS_seccomp, SECCOMP_SET_MODE_FILTER, p->seccomp_flags, (long)&p->seccomp, 0, 0);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "seccomp(SECCOMP_SET_MODE_FILTER, ");
        text_hex(&t, p->seccomp_flags);
        text_str(&t, ", ");
        text_int(&t, p->seccomp.len);
        text_str(&t, " instructions) failed");
        sv_fail(c, (int)-r, &t);
    }
    capabilities_after_filter(c);
}
