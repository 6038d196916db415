"""Kernel constants the supervisor uses, each with the header it comes from.

PID 1's own (the C side) come from the kernel's headers themselves.
"""

from __future__ import annotations

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>: propagation types (mount(2) with no source).
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000

# <linux/wait.h>
P_PIDFD = 3

# <asm-generic/unistd.h>: one number on every architecture.
SYS_PIDFD_SEND_SIGNAL = 424

# The flags the container's namespaces are created with, in one clone(2).
# CLONE_NEWUSER comes first by the kernel's own rule (clone(2): the user
# namespace is created first, and owns the others).
CONTAINER_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID
