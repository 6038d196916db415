/* The container's terminal: a pty pair from the container's own devpts
 * instance (so ttyname() and /dev/pts agree inside), the slave made PID 1's
 * stdio and controlling terminal, the master sent to the supervisor. */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "sv.h"

void tty_attach(struct sv_child *c)
{
    long master = sv_raw(SYS_openat, AT_FDCWD, (long)"/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC, 0, 0);
    if (master < 0)
        sv_fail_call(c, (int)-master, "open", "/dev/ptmx");
    int unlock = 0;
    unsigned int number = 0;
    long r = sv_raw(SYS_ioctl, master, TIOCSPTLCK, (long)&unlock, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "ioctl(/dev/ptmx, TIOCSPTLCK) failed");
    r = sv_raw(SYS_ioctl, master, TIOCGPTN, (long)&number, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "ioctl(/dev/ptmx, TIOCGPTN) failed");
    char path[32];
    struct sv_text digits;
    text_reset(&digits);
    text_int(&digits, number);
    digits.buf[digits.len] = '\0';
    sv_join_path(path, sizeof path, "/dev/pts/", digits.buf);
    long slave = sv_raw(SYS_openat, AT_FDCWD, (long)path, O_RDWR | O_NOCTTY, 0, 0);
    if (slave < 0)
        sv_fail_call(c, (int)-slave, "open", path);
    r = sv_raw(SYS_ioctl, slave, TIOCSCTTY, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, (int)-r, "ioctl(TIOCSCTTY) failed");
    for (int fd = 0; fd < 3; fd++)
        sv_raw(SYS_dup3, slave, fd, 0, 0, 0);
    sv_raw(SYS_close, slave, 0, 0, 0, 0);
    r = channel_send_fd(c, SV_REC_PTY, (int)master);
    sv_raw(SYS_close, master, 0, 0, 0, 0);
    if (r < 0)
        sv_fail_str(c, -(int)r, "sendmsg(the terminal's master to the supervisor) failed");
}
