/* The last steps: find the program, give the payload clean signals, exec. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sv.h"

void exec_find(struct sv_child *c, char *out, size_t size)
{
    const char *name = c->plan->argv[0];
    for (const char *s = name; *s; s++) {
        if (*s == '/') {
            if (sv_join_path(out, size, name, NULL) < 0)
                sv_fail_call(c, ENAMETOOLONG, "execve", name);
            /* Waiting for `start` (OCI), a missing program must fail the
             * create, not the start: looked at here (execve still decides). */
            struct stat st;
            long r = c->plan->start_gate ? sv_raw(SYS_newfstatat, AT_FDCWD, (long)out, (long)&st, 0, 0) : 0;
            if (r < 0)
                sv_fail_call(c, (int)-r, "execve: stat", name);
            return;
        }
    }
    /* PATH lookup inside the container, as execvp does, but before exec so
     * that "not found" and "not executable" are told apart. */
    char candidate[SV_PATH_MAX], denied[SV_PATH_MAX];
    denied[0] = '\0';
    const char *dir = c->plan->search_path;
    for (;;) {
        const char *end = dir;
        while (*end && *end != ':')
            end++;
        size_t n = (size_t)(end - dir);
        if (n + 1 + sv_strlen(name) + 1 <= sizeof candidate) {
            size_t k = 0;
            if (n == 0)
                candidate[k++] = '.';
            for (size_t i = 0; i < n; i++)
                candidate[k++] = dir[i];
            candidate[k] = '\0';
            sv_join_path(candidate, sizeof candidate, candidate, "/");
            sv_join_path(candidate, sizeof candidate, candidate, name);
            struct stat st;
            if (sv_raw(SYS_newfstatat, AT_FDCWD, (long)candidate, (long)&st, 0, 0) == 0) {
                if (!S_ISDIR(st.st_mode) && sv_raw(SYS_faccessat, AT_FDCWD, (long)candidate, X_OK, 0, 0) == 0) {
                    sv_join_path(out, size, candidate, NULL);
                    return;
                }
                sv_join_path(denied, sizeof denied, candidate, NULL);
            }
        }
        if (*end == '\0')
            break;
        dir = end + 1;
    }
    struct sv_text t;
    text_reset(&t);
    if (denied[0]) {
        text_str(&t, denied);
        text_str(&t, ": permission denied");
        sv_fail(c, EACCES, &t);
    }
    text_str(&t, "executable file not found in $PATH: ");
    text_str(&t, name);
    sv_fail(c, ENOENT, &t);
}

void exec_reset_signals(void)
{
    /* Every disposition at its default, nothing blocked: what the payload
     * starts with (ignored signals and the mask survive execve). */
    struct sv_sigaction dfl = {.handler = SIG_DFL, .flags = 0, .restorer = NULL, .mask = 0};
    for (int sig = 1; sig < 65; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            sv_raw(SYS_rt_sigaction, sig, (long)&dfl, 0, SV_SIGSET_SIZE, 0);
    }
    uint64_t empty = 0;
    sv_raw(SYS_rt_sigprocmask, SIG_SETMASK, (long)&empty, 0, SV_SIGSET_SIZE, 0);
}

_Noreturn void exec_payload(struct sv_child *c, const char *path)
{
    long r = sv_raw(SYS_execve, (long)path, (long)c->plan->argv, (long)c->plan->envp, 0, 0);
    struct sv_text t;
    text_reset(&t);
    text_str(&t, "execve(");
    text_quoted(&t, path);
    text_str(&t, ") failed");
    sv_fail(c, (int)-r, &t);
}
