/* System calls for PID 1, raw, each naming itself on failure.
 *
 * Raw (not glibc's wrappers) for two reasons: they return -errno instead of
 * writing the thread-local errno, which a child that shares its parent's
 * memory must never touch; and glibc's credential wrappers signal every
 * thread the parent had, which a cloned child does not have. */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "sv.h"

#if defined(__x86_64__)
long sv_raw(long nr, long a, long b, long c, long d, long e)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

uintptr_t sv_thread_pointer(void)
{
    unsigned long fs = 0;
    sv_raw(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, (long)&fs, 0, 0, 0);
    return fs;
}
#elif defined(__aarch64__)
long sv_raw(long nr, long a, long b, long c, long d, long e)
{
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4) : "memory", "cc");
    return x0;
}

uintptr_t sv_thread_pointer(void) { return (uintptr_t)__builtin_thread_pointer(); }
#else
#error "PID 1's raw system calls are written for x86_64 and aarch64"
#endif

_Noreturn void sv_fail_call(struct sv_child *c, int err, const char *call, const char *path)
{
    struct sv_text t;
    text_reset(&t);
    text_str(&t, call);
    text_str(&t, "(");
    text_path(&t, path);
    text_str(&t, ") failed");
    sv_fail(c, err, &t);
}

void sv_mount(struct sv_child *c, const char *src, const char *dst, const char *fstype, unsigned long flags,
              const char *data)
{
    long r = sv_raw(SYS_mount, (long)src, (long)dst, (long)fstype, (long)flags, (long)data);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "mount(");
        if (flags & MS_BIND)
            text_path(&t, src);
        else
            text_quoted(&t, src);
        text_str(&t, ", ");
        text_path(&t, dst);
        text_str(&t, ", ");
        text_quoted(&t, fstype);
        text_str(&t, ", ");
        text_mount_flags(&t, flags);
        if (data) {
            text_str(&t, ", ");
            text_quoted(&t, data);
        }
        text_str(&t, ") failed");
        sv_fail(c, (int)-r, &t);
    }
}

void sv_mount_setattr(struct sv_child *c, const char *path, uint64_t attrs, int recursive)
{
    struct mount_attr attr = {.attr_set = attrs};
    unsigned int flags = recursive ? AT_RECURSIVE : 0;
    long r = sv_raw(SYS_mount_setattr, AT_FDCWD, (long)path, flags, (long)&attr, sizeof attr);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "mount_setattr(");
        text_path(&t, path);
        text_str(&t, ", attr_set=");
        text_hex(&t, attrs);
        text_str(&t, recursive ? ", AT_RECURSIVE) failed" : ") failed");
        sv_fail(c, (int)-r, &t);
    }
}

void sv_mkdir(struct sv_child *c, const char *path, mode_t mode)
{
    long r = sv_raw(SYS_mkdirat, AT_FDCWD, (long)path, mode, 0, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "mkdir", path);
}

void sv_symlink(struct sv_child *c, const char *target, const char *path)
{
    long r = sv_raw(SYS_symlinkat, (long)target, AT_FDCWD, (long)path, 0, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "symlink", path);
}

void sv_touch(struct sv_child *c, const char *path, mode_t mode)
{
    long fd = sv_raw(SYS_openat, AT_FDCWD, (long)path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode, 0);
    if (fd < 0)
        sv_fail_call(c, (int)-fd, "open(O_CREAT)", path);
    sv_raw(SYS_close, fd, 0, 0, 0, 0);
}

void sv_chdir(struct sv_child *c, const char *path)
{
    long r = sv_raw(SYS_chdir, (long)path, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_call(c, (int)-r, "chdir", path);
}

void sv_prctl(struct sv_child *c, int option, unsigned long arg, const char *name)
{
    long r = sv_raw(SYS_prctl, option, (long)arg, 0, 0, 0);
    if (r < 0) {
        struct sv_text t;
        text_reset(&t);
        text_str(&t, "prctl(");
        text_str(&t, name);
        text_str(&t, ", ");
        text_int(&t, (long long)arg);
        text_str(&t, ") failed");
        sv_fail(c, (int)-r, &t);
    }
}
