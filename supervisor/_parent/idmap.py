"""Id-mapped bind mounts: the payload writes a host folder as its owner.

The container's ids are host ids that own nothing (``Spec.map_base``...), so
in a plain bind a work folder belongs to no one the container knows. An
id-mapped mount (``MOUNT_ATTR_IDMAP``, Linux 5.12+) translates ids between
the folder and the container: here, the source's owner (uid and gid) is
shown as the payload's user and group, and what the payload creates lands on
the host as that owner. Other owners' files stay unmapped (``nobody``), as in
a plain bind.

Only a process privileged where the filesystem was mounted may set a mapping,
so the supervisor makes the mount before the clone (a detached clone of the
source's tree, :func:`open_trees`) and PID 1 moves it into place. The mapping
is a user namespace, made for the spawn (about 0.1 ms) and closed once the
mounts have it: nothing outlives the spawn but the mounts themselves.
"""

from __future__ import annotations

import errno
import os

from .._errors import SetupError
from .._privileges import is_rootless
from .._protocol import MAX_IDMAPPED, Bind, Phase, SpawnConfig
from .._spec import Mount, Spec

#: The errors that say the kernel or the filesystem has no id-mapped mounts.
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)

#: Filesystems (st_dev) found without support: automatic binds stay plain there.
_unsupported_devices: set[int] = set()


def wanted(mount: Mount) -> bool:
    """Whether ``mount`` is to be id-mapped, by the policy of :class:`Mount.idmap`.

    Args:
        mount: a bind of the Spec (its source exists).

    Returns:
        ``True`` if the supervisor should make it id-mapped.
    """
    if mount.idmap is not None:
        return mount.idmap
    if mount.read_only or is_rootless():
        return False  # rootless: the caller's own files already are the container root's
    try:
        st = os.stat(mount.source)
    except OSError:
        return False  # PID 1's own stat names the problem
    return st.st_uid != 0 and st.st_dev not in _unsupported_devices


def open_trees(spec: Spec, config: SpawnConfig) -> list[int]:
    """The detached id-mapped mounts of ``config``'s id-mapped binds, in order.

    A bind that was id-mapped only by default (``Mount.idmap is None``) on a
    filesystem without support becomes a plain bind (in ``config.binds``), and
    that filesystem is remembered.

    Args:
        spec: the container's spec (its mounts are the last ``config.binds``).
        config: the spawn's configuration.

    Returns:
        one descriptor per id-mapped bind, for the spawn (the caller closes them).

    Raises:
        SetupError: in phase ``mounts``, naming the source, when an asked-for
            id-mapped mount cannot be made.
    """
    fds: list[int] = []
    namespaces: dict[tuple[int, int, int, int], int] = {}
    first = len(config.binds) - len(spec.mounts)
    try:
        for i, bind in enumerate(config.binds):
            if not bind.idmapped:
                continue
            mount = spec.mounts[i - first]
            fd = _tree(bind, mount, spec, config.map_base, namespaces)
            if fd is None:
                config.binds[i] = Bind(bind.src, bind.dst, bind.read_only)
            else:
                fds.append(fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return fds


def _tree(
    bind: Bind, mount: Mount, spec: Spec, base: int, namespaces: dict[tuple[int, int, int, int], int]
) -> int | None:
    from .._child import _spawn

    try:
        st = os.stat(bind.src)
    except OSError as exc:
        raise SetupError(Phase.MOUNTS, exc.errno or 0, f"stat({mount.source!r}) failed: {exc.strerror}") from None
    gid = spec.gid if spec.gid is not None else spec.uid
    try:
        key = (st.st_uid, base + spec.uid, st.st_gid, base + gid)
        if key not in namespaces:
            namespaces[key] = _spawn.idmap_userns(*key)
        return _spawn.idmap_tree(bind.src, namespaces[key])
    except OSError as exc:
        if mount.idmap is None and exc.errno in _UNSUPPORTED:
            _unsupported_devices.add(st.st_dev)
            return None
        why = " (this kernel or filesystem has no id-mapped mounts)" if exc.errno in _UNSUPPORTED else ""
        raise SetupError(
            Phase.MOUNTS,
            exc.errno or 0,
            f"id-mapped bind of {mount.source!r} at {mount.target!r}: {exc.strerror}{why}",
        ) from None


def binds_of(spec: Spec) -> list[Bind]:
    """The :class:`Bind` records of ``spec.mounts``, id-mapped as :func:`wanted` says.

    Sources are resolved here: PID 1 opens them below its old root, where an
    absolute symlink on the way (/var/run -> /run) would point into its
    staging root instead of the host.
    """
    # One descriptor each, at most MAX_IDMAPPED: the asked-for ones (Spec
    # bounds them) first, the automatic ones in what room is left.
    room = MAX_IDMAPPED - sum(m.idmap is True for m in spec.mounts)
    binds = []
    for m in spec.mounts:
        idmapped = wanted(m) and (m.idmap is True or room > 0)
        if idmapped and m.idmap is None:
            room -= 1
        binds.append(Bind(os.path.realpath(m.source), m.target, m.read_only, idmapped))
    return binds
