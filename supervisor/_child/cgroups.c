/* PID 1 joins its cgroups through files the supervisor opened for it.
 *
 * Writing "0" moves the writer: to a v1 `tasks` file, this one thread, which
 * takes no global lock (we are single-threaded); to the v2 `cgroup.procs`
 * only where clone3 could not clone us into it. The kernel checks the
 * credentials of whoever opened the file (the supervisor), not ours. */
#include <errno.h>
#include <sys/syscall.h>

#include "sv.h"

void cgroups_enter(struct sv_child *c)
{
    for (size_t i = 0; i < c->njoins; i++) {
        long r;
        do
            r = sv_raw(SYS_write, c->join_fd[i], (long)"0", 1, 0, 0);
        while (r == -EINTR);
        if (r < 0) {
            struct sv_text t;
            text_reset(&t);
            text_str(&t, "enter the cgroup: write(\"0\") to ");
            text_str(&t, c->join_path[i]);
            text_str(&t, " failed");
            sv_fail(c, (int)-r, &t);
        }
        sv_raw(SYS_close, c->join_fd[i], 0, 0, 0, 0);
    }
    c->njoins = 0;
}
