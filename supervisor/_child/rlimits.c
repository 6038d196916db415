/* Resource limits, set in PID 1 so that they bind the payload and never the
 * supervisor (crabcan set RLIMIT_NOFILE on its own parent). The supervisor
 * checked them against the caller's hard limits: no privilege is needed. */
#include <sys/resource.h>
#include <sys/syscall.h>

#include "sv.h"

void rlimits_apply(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    for (size_t i = 0; i < p->nrlimits; i++) {
        struct rlimit rl = {.rlim_cur = p->rlimits[i].soft, .rlim_max = p->rlimits[i].hard};
        long r = sv_raw(SYS_prlimit64, 0, p->rlimits[i].resource, (long)&rl, 0, 0);
        if (r < 0) {
            struct sv_text t;
            text_reset(&t);
            text_str(&t, "setrlimit(");
            text_int(&t, p->rlimits[i].resource);
            text_str(&t, ", (");
            text_int(&t, (long long)p->rlimits[i].soft);
            text_str(&t, ", ");
            text_int(&t, (long long)p->rlimits[i].hard);
            text_str(&t, ")) failed");
            sv_fail(c, (int)-r, &t);
        }
    }
}
