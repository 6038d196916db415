/* PID 1's capability sets, really applied (crabcan's drop never took effect).
 *
 * Two steps, because the uid switch sits between them:
 *
 * 1. capabilities_limit (phase CAPABILITIES, still root of the container with
 *    every capability): drop everything not kept from the bounding set
 *    (PR_CAPBSET_DROP needs CAP_SETPCAP, which we still have), clear the
 *    ambient set, empty the inheritable set (CVE-2022-29162: a non-empty
 *    inheritable set lets file capabilities raise privileges). Permitted and
 *    effective become the kept set plus CAP_SETUID and CAP_SETGID, which the
 *    IDENTITY phase still needs even when the caller dropped them; so the
 *    working directory is entered without CAP_DAC_OVERRIDE and friends.
 * 2. capabilities_finish (phase SECCOMP, after the uid switch): permitted and
 *    effective become what execve will give the payload: the kept set for
 *    uid 0; for any other uid the ambient set (an OCI bundle's, else empty:
 *    the kernel cleared them on setresuid from 0, unless PID 1 kept them for
 *    the ambient set; we make it explicit). Then all five sets are read back
 *    and checked.
 * 3. capabilities_after_filter, only for an OCI bundle's seccomp filter
 *    without no_new_privs: the kernel lets only a holder of CAP_SYS_ADMIN load
 *    one then, so steps 1 and 2 leave it in permitted and effective, and it
 *    goes right after the filter is in, with one capset (which the filter
 *    must allow, as runc's order needs even more of it).
 *
 * A non-root payload thus gets no capability at all, as with Docker (but for
 * an OCI bundle's ambient set): the kept set stays in its bounding set only,
 * and no_new_privs plus nosuid mounts stop setuid and file-capability
 * binaries from regaining anything. */
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "sv.h"

static void capset_sets(struct sv_child *c, uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2] = {
        {.effective = (uint32_t)effective, .permitted = (uint32_t)permitted, .inheritable = (uint32_t)inheritable},
        {.effective = (uint32_t)(effective >> 32),
         .permitted = (uint32_t)(permitted >> 32),
         .inheritable = (uint32_t)(inheritable >> 32)},
    };
    long r = sv_raw(SYS_capset, (long)&header, (long)data, 0, 0, 0);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "capset(effective=");
        text_hex(&t, effective);
        text_str(&t, ", permitted=");
        text_hex(&t, permitted);
        text_str(&t, ", inheritable=");
        text_hex(&t, inheritable);
        text_str(&t, ") failed");
        sv_fail(c, (int)-r, &t);
    }
}

/* What permitted and effective hold beyond the payload's until the filter
 * is loaded. */
static uint64_t for_filter(const struct sv_plan *p) { return p->filter_privileged ? 1ULL << CAP_SYS_ADMIN : 0; }

/* Permitted and effective as execve leaves them for the payload (no file
 * capabilities, no setuid bit count under no_new_privs or nosuid): root
 * keeps the kept set, any other uid only its ambient set. */
static uint64_t payload_sets(const struct sv_plan *p) { return p->uid == 0 ? p->capabilities : p->ambient; }

void capabilities_limit(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    /* Every capability the running kernel knows is dropped unless kept, so
     * capabilities newer than any table of ours are dropped too. Dropping
     * one that is not in the set is a no-op: no read first. */
    for (int cap = 0; cap <= p->last_cap; cap++) {
        if (p->capabilities & (1ULL << cap))
            continue;
        long r = sv_raw(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (r < 0)
            sv_fail_num(c, (int)-r, "prctl(PR_CAPBSET_DROP, ", cap, 0, ") failed");
    }
    long r = sv_raw(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) failed");
    uint64_t interim = p->capabilities | (1ULL << CAP_SETUID) | (1ULL << CAP_SETGID) | for_filter(p);
    capset_sets(c, interim, interim, 0);
}

void capabilities_finish(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    uint64_t want = payload_sets(p) | for_filter(p);
    /* An OCI bundle's inheritable and ambient sets, the ambient raised once
     * inheritable holds them. */
    capset_sets(c, want, want, p->inheritable);
    for (int cap = 0; cap <= p->last_cap; cap++) {
        if (!(p->ambient & (1ULL << cap)))
            continue;
        long r = sv_raw(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
        if (r < 0)
            sv_fail_num(c, (int)-r, "prctl(PR_CAP_AMBIENT_RAISE, ", cap, 0, ") failed");
    }

    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    long r = sv_raw(SYS_capget, (long)&header, (long)data, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "capget() failed");
    uint64_t effective = data[0].effective | ((uint64_t)data[1].effective << 32);
    uint64_t permitted = data[0].permitted | ((uint64_t)data[1].permitted << 32);
    uint64_t inheritable = data[0].inheritable | ((uint64_t)data[1].inheritable << 32);
    if (effective != want || permitted != want || inheritable != p->inheritable) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "capabilities not applied: effective=");
        text_hex(&t, effective);
        text_str(&t, " permitted=");
        text_hex(&t, permitted);
        text_str(&t, " inheritable=");
        text_hex(&t, inheritable);
        text_str(&t, ", wanted ");
        text_hex(&t, want);
        text_str(&t, "/");
        text_hex(&t, want);
        text_str(&t, "/");
        text_hex(&t, p->inheritable);
        sv_fail(c, EPERM, &t);
    }
    uint64_t bounding = 0, ambient = 0;
    for (int cap = 0; cap <= p->last_cap; cap++) {
        if (sv_raw(SYS_prctl, PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
            bounding |= 1ULL << cap;
        if (sv_raw(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1)
            ambient |= 1ULL << cap;
    }
    if (bounding & ~p->capabilities)
        sv_fail_num(c, EPERM, "capabilities ", (long long)(bounding & ~p->capabilities), 1,
                    " are still in the bounding set");
    if (ambient != p->ambient)
        sv_fail_num(c, EPERM, "capabilities ", (long long)(ambient ^ p->ambient), 1,
                    " are not in the ambient set as asked");
}

void capabilities_after_filter(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    if (p->filter_privileged)
        capset_sets(c, payload_sets(p), payload_sets(p), p->inheritable);
}
