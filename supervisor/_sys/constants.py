"""Kernel constants, each with the header it comes from (x86_64 and aarch64)."""

from __future__ import annotations

import platform

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PIDFD = 0x00001000
CLONE_INTO_CGROUP = 0x200000000  # clone3(2) only (Linux 5.7)

# <asm/signal.h>
SIGCHLD = 17

# <linux/mount.h> (classic mount(2) flags)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# <linux/mount.h> umount2(2) flags
MNT_DETACH = 0x2

# <linux/mount.h> mount_setattr(2)
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_RECURSIVE = 0x8000
AT_FDCWD = -100

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>
LINUX_CAPABILITY_VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
#: Most instructions a classic BPF program may have (<linux/bpf_common.h> BPF_MAXINSNS).
BPF_MAXINSNS = 4096

# <linux/close_range.h>
CLOSE_RANGE_CLOEXEC = 1 << 2

# <asm-generic/ioctls.h>
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430

# <linux/wait.h>
P_PIDFD = 3

_MACHINE = platform.machine()

# Syscall numbers: <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64).
if _MACHINE in ("aarch64", "arm64"):
    SYS_CLONE = 220
    SYS_PIVOT_ROOT = 41
    SYS_SECCOMP = 277
    SYS_CAPGET = 90
    SYS_CAPSET = 91
else:
    SYS_CLONE = 56
    SYS_PIVOT_ROOT = 155
    SYS_SECCOMP = 317
    SYS_CAPGET = 125
    SYS_CAPSET = 126
# Newer syscalls share one number on every architecture (<asm-generic/unistd.h>).
SYS_PIDFD_SEND_SIGNAL = 424
SYS_CLONE3 = 435
SYS_CLOSE_RANGE = 436
SYS_MOUNT_SETATTR = 442

# The flags the container's namespaces are created with, in one clone(2).
# CLONE_NEWUSER comes first by the kernel's own rule (clone(2): the user
# namespace is created first, and owns the others).
CONTAINER_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID

_MS_NAMES = {
    MS_RDONLY: "MS_RDONLY",
    MS_NOSUID: "MS_NOSUID",
    MS_NODEV: "MS_NODEV",
    MS_NOEXEC: "MS_NOEXEC",
    MS_REMOUNT: "MS_REMOUNT",
    MS_NOATIME: "MS_NOATIME",
    MS_NODIRATIME: "MS_NODIRATIME",
    MS_BIND: "MS_BIND",
    MS_MOVE: "MS_MOVE",
    MS_REC: "MS_REC",
    MS_SILENT: "MS_SILENT",
    MS_PRIVATE: "MS_PRIVATE",
    MS_SLAVE: "MS_SLAVE",
    MS_RELATIME: "MS_RELATIME",
    MS_STRICTATIME: "MS_STRICTATIME",
}


def mount_flag_names(flags: int) -> str:
    """Render mount(2) flags as ``MS_BIND|MS_REC`` for error messages."""
    names = [name for bit, name in _MS_NAMES.items() if flags & bit]
    rest = flags & ~sum(_MS_NAMES)
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"
