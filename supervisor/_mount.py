"""A bind mount of a host path into the container: :class:`Mount`."""

from __future__ import annotations

import os

from ._record import record


@record
class Mount:
    """A bind mount of a host path into the container (crabcan's ``--add``).

    The container's ids are host ids nobody owns (``Spec.map_base``..., 100000
    and up by default), so in a plain bind the host's files belong to no one
    the container knows: it reads and writes them through their "others"
    permission bits, and what it creates belongs to host uid 100000. An
    *id-mapped* bind (Linux 5.12+, a filesystem that supports it: ext4, xfs,
    btrfs, tmpfs 6.3+...) shows the files of the source's owner as the
    payload's own, and the payload's writes land on the host as that owner,
    as ``git`` and build tools expect of a work folder.

    Args:
        source: host path; must exist when the container starts.
        target: absolute path inside the container.
        read_only: mount read-only (recursively).
        idmap: ``True``: id-mapped (refused where the kernel or the filesystem
            cannot); ``False``: never; ``None`` (the default): id-mapped when
            the bind is writable, the source is owned by a user other than
            the host's root, and its filesystem supports it. A root-owned
            source is id-mapped only when asked, since the container would
            then write as the host's root (see docs/security).

    Raises:
        ValueError: ``target`` is not absolute, or either path is empty.
        TypeError: a path is not a string or path-like.
    """

    source: str
    target: str
    read_only: bool = False
    idmap: bool | None = None

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"Mount.{name} must be a path, not {type(value).__name__}")
            value = os.fspath(value)
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"Mount.{name} must be a non-empty path without NUL bytes")
            object.__setattr__(self, name, value)
        if not self.target.startswith("/"):
            raise ValueError(f"Mount.target must be absolute, got {self.target!r}")
        if not self.target.strip("/"):  # "/", "//" (normpath keeps a leading "//")
            raise ValueError("Mount.target cannot be / (use Spec.rootfs)")
        if not isinstance(self.read_only, bool):
            raise TypeError("Mount.read_only must be a bool")
        if self.idmap is not None and not isinstance(self.idmap, bool):
            raise TypeError("Mount.idmap must be a bool or None")

    @classmethod
    def parse(cls, text: str) -> Mount:
        """Parse docker's ``SRC:DST[:OPTIONS]`` (crabcan's ``--add`` ``from:to``).

        ``OPTIONS`` is a comma-separated list of ``ro`` or ``rw``, and
        ``idmap`` or ``noidmap`` (podman's names).

        Raises:
            ValueError: not of that form.
        """
        parts = text.split(":")
        if len(parts) == 2:
            src, dst, options = parts[0], parts[1], []
        elif len(parts) == 3:
            src, dst, options = parts[0], parts[1], parts[2].split(",")
        else:
            raise ValueError(f"mount {text!r} is not SRC:DST[:OPTIONS]")
        read_only, idmap = False, None
        for option in options:
            if option in ("ro", "rw"):
                read_only = option == "ro"
            elif option in ("idmap", "noidmap"):
                idmap = option == "idmap"
            else:
                raise ValueError(f"mount {text!r}: unknown option {option!r} (ro, rw, idmap, noidmap)")
        return cls(os.path.abspath(src) if src else src, dst, read_only, idmap)
