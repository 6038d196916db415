"""What the supervisor needs of the user that runs it: root, or a rootless mode.

As root, each container's ids map to a range of host ids nobody owns, and the
supervisor makes cgroups and network links. As any other user (rootless), the
kernel lets the supervisor map one id only, the caller's own, to the
container's root, and gives it no host network links, and cgroups only in a
cgroup v2 subtree delegated to the caller (``Spec.cgroup_parent``): what
needs more is refused with a line that says so (:func:`rootless_refusal`).
"""

from __future__ import annotations

import errno
import os

#: The sysctls that turn unprivileged user namespaces off, with the value that does.
_USERNS_SWITCHES = (
    ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces=0"),
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone=0"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "kernel.apparmor_restrict_unprivileged_userns=1"),
)


def is_rootless() -> bool:
    """Whether the supervisor runs rootless (its effective uid is not 0)."""
    return os.geteuid() != 0


def userns_refused() -> str | None:
    """The sysctl that keeps an unprivileged user from making user namespaces, or None."""
    for path, off, setting in _USERNS_SWITCHES:
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue  # this kernel has no such switch
        if value == off:
            return setting
    return None


def check_privileges() -> None:
    """Refuse to start where neither root nor the rootless mode can work.

    Raises:
        PermissionError: the effective uid is not 0 and this kernel does not
            let an unprivileged user make user namespaces (naming the sysctl).
    """
    if not is_rootless():
        return
    refused = userns_refused()
    if refused is not None:
        raise PermissionError(
            errno.EPERM,
            f"running as uid {os.geteuid()} (rootless) needs unprivileged user namespaces, which this host "
            f"turns off ({refused}): run as root, or let users make them (sysctl)",
        )


def rootless_refusal(what: str) -> str:
    """Why a rootless supervisor refuses ``what`` (a key of the table below), in one line."""
    return f"needs root: running as uid {os.geteuid()} (rootless), the supervisor has no {_NEEDS[what]}"


_NEEDS = {
    "limits": (
        "cgroup of its own to write limits to: give cgroup_parent (--cgroup-parent), a cgroup v2 path in a "
        "subtree delegated to you; rlimits still apply"
    ),
    "network": "host network links (bridge and veths need CAP_NET_ADMIN on the host); network='none' works",
    "map_base": "id ranges: the one id it can map is its own, shown as the container's root",
    "uid": "ids but its own, which is the container's root (uid 0)",
    "idmap": "right to make id-mapped mounts (CAP_SYS_ADMIN on the host)",
    "procfs": (
        "way to keep a bind of /proc from the caller's own processes: the container's root is the caller's "
        "uid, which may read and trace them there"
    ),
    "init": (
        "non-dumpable memory to run an init in: the init shares the supervisor's memory, whose ptrace "
        "protection would also shut the supervisor out of its containers' id maps"
    ),
}
