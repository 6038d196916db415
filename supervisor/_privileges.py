"""What the supervisor needs of the user that runs it: root, or a rootless mode.

As root, each container's ids map to a range of host ids nobody owns, and the
supervisor makes cgroups and network links. As any other user (rootless), the
kernel lets the supervisor map one id only, the caller's own; an
administrator's grant of subordinate ids (``/etc/subuid``, ``/etc/subgid``)
with the setuid helpers ``newuidmap`` and ``newgidmap`` maps a range beside it
(:func:`subid_grant`). Rootless, there are no host network links, and cgroups
only in a cgroup v2 subtree delegated to the caller (``Spec.cgroup_parent``):
what needs more is refused with a line that says so (:func:`rootless_refusal`).
"""

from __future__ import annotations

import errno
import functools
import os
import pwd

from ._record import record

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


#: Where the id-map helpers are looked for after ``$PATH`` (Debian's ``uidmap``
#: puts them in /usr/bin).
_HELPER_DIRS = "/usr/bin:/usr/sbin:/bin:/sbin"


@record
class SubIdGrant:
    """The caller's subordinate ids, and the helpers that may map them."""

    uid_base: int
    """First subordinate uid (``/etc/subuid``)."""
    gid_base: int
    """First subordinate gid (``/etc/subgid``)."""
    size: int
    """How many of each (the smaller grant of the two)."""
    uid_helper: str
    """The ``newuidmap`` found."""
    gid_helper: str
    """The ``newgidmap`` found."""


def _first_range(path: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    """The first ``name:start:count`` line of ``path`` for one of ``names``."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        valid = len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()
        if valid and parts[0] in names and int(parts[2]) > 0:
            return int(parts[1]), int(parts[2])
    return None


def _helper(name: str) -> str | None:
    import shutil  # only rootless, only here: not on root's command line path

    found = shutil.which(name) or shutil.which(name, path=_HELPER_DIRS)
    return os.path.abspath(found) if found else None


_SUBID_FILES = ("/etc/subuid", "/etc/subgid")


def subid_grant() -> SubIdGrant | None:
    """The caller's subordinate id grant, or None (root, no grant, no helpers).

    The first range of ``/etc/subuid`` and of ``/etc/subgid`` whose line names
    the caller (by login name or uid), as podman reads them; the helpers from
    ``$PATH``, else the system folders. Whether the helpers accept the grant
    is theirs to say, at the first spawn (their refusal is its error). Read
    again only when either file changed (each spawn asks: two ``stat`` calls).
    """
    if not is_rootless():
        return None
    stamps: list[tuple[int, int, int] | None] = []
    for path in _SUBID_FILES:
        try:
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append(None)
    return _read_grant(os.geteuid(), tuple(stamps), os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=4)
def _read_grant(uid: int, stamps: tuple[object, ...], search_path: str) -> SubIdGrant | None:
    """:func:`subid_grant` for one state of the files (``stamps``) and ``$PATH``."""
    del stamps, search_path  # the cache's key only
    try:
        names: tuple[str, ...] = (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        names = (str(uid),)
    uids, gids = (_first_range(path, names) for path in _SUBID_FILES)
    if uids is None or gids is None:
        return None
    uid_helper, gid_helper = _helper("newuidmap"), _helper("newgidmap")
    if uid_helper is None or gid_helper is None:
        return None
    return SubIdGrant(uids[0], gids[0], min(uids[1], gids[1]), uid_helper, gid_helper)


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
        "cgroup of its own to write limits to: none above its own is delegated to you (owned by you, with "
        "controllers in cgroup.subtree_control); run it in one (systemd-run --user --scope -p Delegate=yes) or "
        "give cgroup_parent (--cgroup-parent) in one; rlimits still apply"
    ),
    "network": "host network links (bridge and veths need CAP_NET_ADMIN on the host); network='none' works",
    "map_base": "host id ranges of its own to lease (subordinate ids, if granted, are one fixed range)",
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
