"""Building the container's root: staging, the new root, mounts, pivot.

Runs in PID 1, in its own mount namespace, owned by the container's user
namespace. The sequence follows bubblewrap: a private tmpfs is pivoted to first,
so the host's tree stays reachable as ``/oldroot`` while ``/newroot`` is built,
and nothing is ever created on the host (crabcan left ``/tmp/crabcan.*`` and
mount-point folders behind). Then ``pivot_root(".", ".")`` into ``/newroot`` and
a lazy unmount of the stacked old root make the host unreachable.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from .._sys import constants as c
from .._sys import linux

STAGING = "/tmp"
NEWROOT = "/newroot"
OLDROOT = "/oldroot"

#: Device nodes bound from the host's /dev (bubblewrap's --dev set).
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


#: Hidden from the container (runc's defaults): files under a /dev/null bind,
#: directories under an empty read-only tmpfs.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
#: Made read-only (runc's defaults).
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_NULL_DEVICE = (1, 3)  # major, minor of /dev/null (<linux/major.h> MEM_MAJOR)


class RootBuilder:
    """Mount operations for one container, with the tmpfs mounts we own.

    ``owned`` lists the container paths of filesystems that we created (tmpfs):
    under them we may create mount points; anywhere else (the host's rootfs
    folder) we refuse, so nothing is ever created on the host.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.owned: list[str] = []
        #: Where the fresh procfs and sysfs really are (a hostile rootfs may
        #: make ``/proc`` a symlink: the mount then lands where it points,
        #: and masking must follow the mount, not the name).
        self.mounted: dict[str, str] = {}

    # -- ROOTFS -----------------------------------------------------------
    def stage(self) -> None:
        """Make ``/`` private, pivot to a private staging tmpfs."""
        # Before any mount: nothing we mount may propagate to the host, and
        # nothing the host mounts later may appear in the container.
        linux.mount(None, "/", None, c.MS_REC | c.MS_PRIVATE)
        linux.mount("tmpfs", STAGING, "tmpfs", c.MS_NOSUID | c.MS_NODEV, "mode=0755,size=64k")
        os.mkdir(STAGING + NEWROOT, 0o755)
        os.mkdir(STAGING + OLDROOT, 0o755)
        linux.pivot_root(STAGING, STAGING + OLDROOT)
        os.chdir("/")

    def bind_root(self) -> None:
        """Bind the rootfs (or build the embedded default root) at /newroot."""
        rootfs = self.config.get("rootfs")
        if rootfs and self.config.get("overlay"):
            # Copy-on-write root: the rootfs is the read-only lower layer; the
            # upper layer lives in a tmpfs of this mount namespace only, so the
            # container's writes vanish with it and the host folder is never
            # written (possible unprivileged in a user namespace since 5.11).
            os.mkdir("/overlay", 0o700)
            linux.mount("tmpfs", "/overlay", "tmpfs", c.MS_NOSUID | c.MS_NODEV, "mode=0755")
            os.mkdir("/overlay/upper", 0o755)
            os.mkdir("/overlay/work", 0o755)
            options = f"lowerdir={OLDROOT + rootfs},upperdir=/overlay/upper,workdir=/overlay/work"
            linux.mount("overlay", NEWROOT, "overlay", c.MS_NODEV | c.MS_NOSUID, options)
            self.owned.append("/")
            return
        if rootfs:
            linux.mount(OLDROOT + rootfs, NEWROOT, None, c.MS_BIND | c.MS_REC)
            # No device node of the rootfs folder is usable: the only devices
            # are those of the /dev we build. No setuid bit counts either
            # (no_new_privs already stops them; this is the second lock).
            linux.mount_setattr(NEWROOT, c.MOUNT_ATTR_NODEV | c.MOUNT_ATTR_NOSUID)
            return
        linux.mount("tmpfs", NEWROOT, "tmpfs", c.MS_NOSUID | c.MS_NODEV, "mode=0755,size=1m")
        self.owned.append("/")
        for entry in self.config["system"]:
            name = entry["name"]
            target = NEWROOT + "/" + name
            if entry["kind"] == "symlink":
                os.symlink(entry["target"], target)
            else:
                os.mkdir(target, 0o755)
                linux.mount(OLDROOT + "/" + name, target, None, c.MS_BIND | c.MS_REC)
                # The host's setuid programs (su, mount...) stay inert too.
                linux.mount_setattr(target, c.MOUNT_ATTR_RDONLY | c.MOUNT_ATTR_NODEV | c.MOUNT_ATTR_NOSUID)
        for name in ("proc", "dev", "sys", "tmp", "root", "home"):
            if not os.path.lexists(NEWROOT + "/" + name):
                os.mkdir(NEWROOT + "/" + name, 0o755)

    # -- MOUNTS -----------------------------------------------------------
    def mount_filesystems(self) -> None:
        """Fresh /proc, /dev, /sys and /tmp, the home, then the extra mounts."""
        self.mount_proc()
        self.mount_dev()
        self.mount_sys()
        self.mount_tmpfs("/tmp", "mode=1777", c.MS_NOSUID | c.MS_NODEV)
        if not self.config.get("rootfs"):
            self.mount_tmpfs("/root", "mode=0700", c.MS_NOSUID | c.MS_NODEV)
            self.mount_tmpfs("/home", "mode=0755", c.MS_NOSUID | c.MS_NODEV)
        for m in self.config["mounts"]:
            self.bind(m["src"], m["dst"], bool(m["ro"]))
        self.mask_paths()
        if self.config.get("read_only_root") or not self.config.get("rootfs"):
            # The root mount alone (not recursive): /tmp, /dev, ... stay writable.
            linux.mount_setattr(NEWROOT, c.MOUNT_ATTR_RDONLY, recursive=False)

    def mask_paths(self) -> None:
        """Mask :data:`MASKED_PATHS`, make :data:`READONLY_PATHS` read-only.

        After /proc and /sys exist, before pivot (the host's /dev/null is still
        reachable). Masked safely (CVE-2025-31133, where runc bound the
        container's own /dev/null, which a container could swap for a symlink
        to a procfs file): the source is the host's /dev/null, opened
        ``O_PATH|O_NOFOLLOW`` and checked to be char device 1:3; every target is
        opened ``O_PATH|O_NOFOLLOW`` from the procfs or sysfs mount itself
        (never through a rootfs name, which may be a symlink) and mounted on
        through ``self/fd/N`` of our own new procfs, so no path is resolved
        twice. Paths this kernel does not have are skipped.

        Raises:
            OSError: the host's /dev/null is not the null device, a target is a
                symlink, or a mount failed (naming it).
        """
        null = os.open(OLDROOT + "/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(null)
            if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != _NULL_DEVICE:
                raise OSError(errno.EPERM, f"{OLDROOT}/dev/null is not the null device (char 1:3): refusing to mask")
            for path in MASKED_PATHS:
                self._mask(path, null)
        finally:
            os.close(null)
        for path in READONLY_PATHS:
            self._read_only(path)

    def _fd_path(self, fd: int) -> str:
        """``fd`` as a path, through the procfs we mounted (wherever it is)."""
        return f"{self.mounted['/proc']}/self/fd/{fd}"

    def _open_target(self, path: str) -> int | None:
        """``O_PATH|O_NOFOLLOW`` fd of ``path`` (``/proc/...`` or ``/sys/...``)
        in the procfs or sysfs we mounted; None if this kernel has no such
        file; never a symlink.

        The name is resolved from the mount itself, not through the rootfs:
        a rootfs whose ``/proc`` is a symlink cannot make a mask miss.
        """
        top, _, rest = path.lstrip("/").partition("/")
        try:
            fd = os.open(f"{self.mounted['/' + top]}/{rest}", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.ELOOP, f"refusing to mask {path}: it is a symbolic link")
        return fd

    def _mask(self, path: str, null: int) -> None:
        fd = self._open_target(path)
        if fd is None:
            return
        try:
            by_fd = self._fd_path(fd)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                flags = c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC
                linux.mount("tmpfs", by_fd, "tmpfs", flags, "mode=0555,size=4k")
            else:
                linux.mount(self._fd_path(null), by_fd, None, c.MS_BIND)
        finally:
            os.close(fd)

    def _read_only(self, path: str) -> None:
        fd = self._open_target(path)
        if fd is None:
            return
        try:
            by_fd = self._fd_path(fd)
            linux.mount(by_fd, by_fd, None, c.MS_BIND | c.MS_REC)
        finally:
            os.close(fd)
        # Reopen: the old fd still points below the new bind mount.
        fd = self._open_target(path)
        if fd is None:  # pragma: no cover - it was just there
            return
        try:
            attrs = c.MOUNT_ATTR_RDONLY | c.MOUNT_ATTR_NOSUID | c.MOUNT_ATTR_NODEV | c.MOUNT_ATTR_NOEXEC
            linux.mount_setattr(self._fd_path(fd), attrs)
        finally:
            os.close(fd)

    def mount_proc(self) -> None:
        target = self.mountpoint("/proc", directory=True)
        # A new procfs, tied to the container's PID namespace (mounted by its PID 1).
        linux.mount("proc", target, "proc", c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC)
        self.mounted["/proc"] = target

    def mount_dev(self) -> None:
        target = self.mountpoint("/dev", directory=True)
        linux.mount("tmpfs", target, "tmpfs", c.MS_NOSUID | c.MS_NOEXEC, "mode=0755,size=64k")
        self.owned.append("/dev")
        for name in DEV_NODES:
            node = target + "/" + name
            os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o666))
            # Bind the host's node: mknod is not allowed in a user namespace.
            linux.mount(OLDROOT + "/dev/" + name, node, None, c.MS_BIND)
        os.mkdir(target + "/pts", 0o755)
        linux.mount(
            "devpts", target + "/pts", "devpts", c.MS_NOSUID | c.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"
        )
        os.mkdir(target + "/shm", 0o1777)
        linux.mount("tmpfs", target + "/shm", "tmpfs", c.MS_NOSUID | c.MS_NODEV, "mode=1777")
        for name, dest in DEV_SYMLINKS:
            os.symlink(dest, target + "/" + name)

    def mount_sys(self) -> None:
        target = self.mountpoint("/sys", directory=True)
        flags = c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV | c.MS_NOEXEC
        try:
            # Possible because the network namespace belongs to our user namespace.
            linux.mount("sysfs", target, "sysfs", flags)
        except OSError:
            linux.mount(OLDROOT + "/sys", target, None, c.MS_BIND | c.MS_REC)
            linux.mount_setattr(target, c.MOUNT_ATTR_RDONLY | c.MOUNT_ATTR_NOSUID | c.MOUNT_ATTR_NODEV)
        self.mounted["/sys"] = target

    def mount_tmpfs(self, path: str, options: str, flags: int) -> None:
        target = self.mountpoint(path, directory=True)
        linux.mount("tmpfs", target, "tmpfs", flags, options)
        self.owned.append(path)

    def bind(self, src: str, dst: str, read_only: bool) -> None:
        """Bind host ``src`` at container path ``dst`` (recursively)."""
        source = OLDROOT + src
        st = os.stat(source)
        target = self.mountpoint(dst, directory=stat.S_ISDIR(st.st_mode))
        linux.mount(source, target, None, c.MS_BIND | c.MS_REC)
        attrs = c.MOUNT_ATTR_NODEV | c.MOUNT_ATTR_NOSUID
        if read_only:
            attrs |= c.MOUNT_ATTR_RDONLY
        linux.mount_setattr(target, attrs)

    def mountpoint(self, path: str, *, directory: bool) -> str:
        """Resolve container ``path`` under /newroot, without leaving it.

        Symlinks in the rootfs are followed as if /newroot were ``/`` (absolute
        targets and ``..`` are clamped to the root), so a hostile rootfs cannot
        point a mount at the host. A missing mount point is created only inside
        a tmpfs that we mounted; never in the host's rootfs folder.

        Raises:
            FileNotFoundError: the mount point is missing and may not be created.
            OSError: EINVAL, the path resolves to the root itself (``//``, or a
                rootfs symlink such as ``mnt -> /``): a mount there would hide
                the new root, /proc and /dev included.
        """
        resolved = resolve_in_root(NEWROOT, path)
        if resolved == "/":
            raise OSError(errno.EINVAL, f"mount point {path} resolves to the container's root /")
        full = NEWROOT + resolved
        if os.path.lexists(full):
            return full
        if not any(resolved == o or resolved.startswith(o.rstrip("/") + "/") for o in self.owned):
            raise FileNotFoundError(
                2,
                f"mount point {path} does not exist in the rootfs {self.config.get('rootfs')} "
                "(supervisor never creates files in the host's rootfs: create it there)",
            )
        parent = os.path.dirname(full)
        os.makedirs(parent, 0o755, exist_ok=True)
        if directory:
            os.mkdir(full, 0o755)
        else:
            os.close(os.open(full, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
        return full

    # -- PIVOT ------------------------------------------------------------
    def pivot(self) -> None:
        """Enter /newroot and detach everything else, the host included."""
        os.chdir(NEWROOT)
        # pivot_root(".", ".") stacks the old root on top of the new one; the
        # kernel allows it (runc and LXC do the same), and it needs no put_old
        # directory inside the new root.
        linux.pivot_root(".", ".")
        linux.umount2(".", c.MNT_DETACH)
        os.chdir("/")


def resolve_in_root(root: str, path: str) -> str:
    """Resolve ``path`` as if ``root`` were ``/``; return the container path.

    Follows symlinks found under ``root`` but never lets ``..`` or an absolute
    target escape it (the same contract as ``openat2(RESOLVE_IN_ROOT)``).
    A missing tail is kept as is.

    Raises:
        OSError: too many levels of symbolic links (ELOOP).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    budget = 40
    missing = False
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        if missing:
            done.append(part)
            continue
        candidate = root + "/" + "/".join([*done, part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            missing = True
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            budget -= 1
            if budget == 0:
                raise OSError(40, f"too many levels of symbolic links resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return "/" + "/".join(done)
