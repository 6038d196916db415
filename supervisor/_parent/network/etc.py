"""The container's ``/etc/hosts`` and ``/etc/resolv.conf`` on a bridge:
their content and their writing, into the folder PID 1 binds them from."""

from __future__ import annotations

import os

from ..config import hosts_text
from ..rundir import run_root


def host_files(hostname: str, address: str) -> dict[str, str]:
    """The contents of the container's ``/etc/hosts`` and ``/etc/resolv.conf``.

    The bridge is host-local, so there is no DNS server to name: names resolve
    through ``/etc/hosts`` only.

    Args:
        hostname: the container's hostname.
        address: its bridge address.

    Returns:
        ``{"hosts": ..., "resolv.conf": ...}``.
    """
    hosts = hosts_text(hostname, address, "written by supervisor (network=bridge)")
    resolv = (
        "# written by supervisor (network=bridge): the bridge is host-local and\n"
        "# has no DNS server; names resolve through /etc/hosts only.\n"
        "options ndots:0\n"
    )
    return {"hosts": hosts, "resolv.conf": resolv}


def write_host_files(etc_dir: str, hostname: str, address: str) -> None:
    """Write :func:`host_files` into ``etc_dir``, which must not exist yet.

    The container's root (an unprivileged host uid) bind-mounts them, so they
    and the folders above them are world-readable whatever our umask is.

    Raises:
        OSError: a folder or file could not be made.
    """
    parent = os.path.dirname(etc_dir)
    os.makedirs(parent, exist_ok=True)
    os.chmod(parent, 0o755)
    root_mode = os.stat(run_root()).st_mode
    if root_mode & 0o001 == 0:  # created under a strict umask: allow traversal (not listing)
        os.chmod(run_root(), (root_mode & 0o7777) | 0o001)
    os.mkdir(etc_dir)
    os.chmod(etc_dir, 0o755)
    for name, text in host_files(hostname, address).items():
        fd = os.open(os.path.join(etc_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
