/* Kernel parameters of the container's own namespaces (an OCI config's
 * linux.sysctl), written through the container's fresh /proc.
 *
 * The supervisor admits only parameters that belong to a namespace the
 * container has of its own (its IPC, UTS and network namespaces), so a
 * write here changes nothing outside the container. They are written right
 * after /proc is mounted, before the masks make /proc/sys read-only. */
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>

#include "sv.h"

void sysctl_apply(struct sv_child *c)
{
    const struct sv_plan *p = c->plan;
    for (size_t i = 0; i < p->nsysctls; i++) {
        char path[SV_PATH_MAX];
        if (sv_join_path(path, sizeof path, c->proc_at, "/sys/") < 0 ||
            sv_join_path(path, sizeof path, path, p->sysctls[i].path) < 0)
            sv_fail_call(c, ENAMETOOLONG, "sysctl: open", p->sysctls[i].path);
        long fd = sv_raw(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0, 0);
        if (fd < 0)
            sv_fail_call(c, (int)-fd, "sysctl: open", path);
        const char *value = p->sysctls[i].value;
        long n;
        do
            n = sv_raw(SYS_write, fd, (long)value, (long)sv_strlen(value), 0, 0);
        while (n == -EINTR);
        sv_raw(SYS_close, fd, 0, 0, 0, 0);
        if (n < 0) {
            struct sv_text t;
            text_reset(&t);
            text_str(&t, "sysctl: write(");
            text_quoted(&t, value);
            text_str(&t, ") to ");
            text_path(&t, path);
            text_str(&t, " failed");
            sv_fail(c, (int)-n, &t);
        }
    }
}
