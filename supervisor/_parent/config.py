"""Turn a :class:`~supervisor.Spec` into the plain dict that PID 1 executes.

The child side gets only JSON-able values with everything resolved here, once,
in the supervisor: paths made absolute, the environment completed, the
embedded default root described. PID 1 then needs no policy of its own.
"""

from __future__ import annotations

import contextvars
import functools
import os
import resource
from typing import Any

from .._child.rootfs import resolve_in_root
from .._protocol import Phase
from .._spec import Spec
from .._sys import constants as c
from .seccomp import compile_profile

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The host folders the embedded default root shows, read-only.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")

#: Test-only: the phase at which PID 1 must fail (see supervisor.testing).
FAULT: contextvars.ContextVar[Phase | None] = contextvars.ContextVar("supervisor_fault", default=None)


@functools.lru_cache(maxsize=1)
def system_entries() -> tuple[tuple[str, str, str], ...]:
    """(name, kind, symlink target) for each host system folder that exists.

    Merged-/usr hosts have /bin -> usr/bin and friends: those stay symlinks.
    """
    out = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            out.append((name, "symlink", os.readlink(path)))
        elif os.path.isdir(path):
            out.append((name, "dir", ""))
    return tuple(out)


def default_home(spec: Spec) -> str:
    """HOME: /root for uid 0; /home on the default root; / otherwise."""
    if spec.uid == 0:
        return "/root"
    return "/home" if spec.rootfs is None else "/"


def build_env(spec: Spec, hostname: str, tty: bool = False) -> dict[str, str]:
    """The payload's clean environment: sane defaults, then the caller's."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": default_home(spec),
        "TERM": "xterm" if tty else "dumb",
        "HOSTNAME": hostname,
    }
    env.update(spec.env)
    return env


def build_config(spec: Spec, hostname: str, *, network: bool = False, etc_dir: str | None = None) -> dict[str, Any]:
    """The record PID 1 runs from.

    ``etc_dir`` is the per-container folder where the supervisor writes
    ``hosts`` and ``resolv.conf`` in bridge mode (see :func:`network_mounts`).
    ``cgroup`` is filled in by the caller once the cgroup exists: the
    ``[kind, path]`` of each entry fd sent with the spawn request, in order
    (see :meth:`supervisor._parent.cgroups.ContainerCgroup.entry_fds`).
    """
    fault = FAULT.get()
    return {
        # network="host": no network namespace of its own (unsafe, documented).
        "clone_flags": c.CONTAINER_NAMESPACES & ~c.CLONE_NEWNET if spec.network == "host" else c.CONTAINER_NAMESPACES,
        "argv": list(spec.command),
        "env": build_env(spec, hostname, tty=spec.tty),
        "cwd": spec.cwd,
        "hostname": hostname,
        "uid": spec.uid,
        "gid": spec.gid,
        # Host paths resolved here: PID 1 opens them below /oldroot, where an
        # absolute symlink on the way (/var/run -> /run) would point into its
        # staging root instead of the host.
        "rootfs": os.path.realpath(spec.rootfs) if spec.rootfs is not None else None,
        "read_only_root": spec.read_only,
        "tty": spec.tty,
        "overlay": spec.overlay,
        "system": [{"name": n, "kind": k, "target": t} for n, k, t in system_entries()],
        "mounts": network_mounts(spec, etc_dir)
        + [{"src": os.path.realpath(m.source), "dst": m.target, "ro": m.read_only} for m in spec.mounts],
        "cgroup": [],
        "network": network,
        "network_mode": spec.network,
        "fault": int(fault) if fault is not None else None,
        **hardening_config(spec),
    }


def network_mounts(spec: Spec, etc_dir: str | None) -> list[dict[str, Any]]:
    """Read-only binds of the supervisor-written ``/etc/hosts`` and ``/etc/resolv.conf``.

    They go first, so the caller's own mounts can still replace them. A bind
    needs its mount point: the embedded default root and overlays always have
    (or may create) one; a plain ``rootfs`` lacking the file keeps its own
    (none), since the supervisor never creates files in the host's rootfs.

    Args:
        spec: the container's spec.
        etc_dir: the host folder holding ``hosts`` and ``resolv.conf``, or
            ``None`` (no bridge network).

    Returns:
        mount records in the ``config["mounts"]`` format.
    """
    if etc_dir is None:
        return []
    out = []
    for name in ("hosts", "resolv.conf"):
        target = "/etc/" + name
        if spec.rootfs is not None and not spec.overlay:
            resolved = resolve_in_root(spec.rootfs, target)
            if not os.path.isfile(spec.rootfs + resolved):
                continue
        out.append({"src": os.path.join(etc_dir, name), "dst": target, "ro": True})
    return out


def hardening_config(spec: Spec) -> dict[str, Any]:
    """The least-privilege part of the config, resolved here once.

    Returns:
        ``capabilities``: the kept capability numbers; ``rlimits``: a list of
        ``[resource, soft, hard]``; ``seccomp``: ``{"bpf": base64, "flags": n}``
        compiled in this process (cached per profile), or ``None``.

    Raises:
        ValueError: ``Spec.seccomp`` names a profile that does not compile.
    """
    caps = spec.capabilities
    compiled = compile_profile(spec.seccomp, caps)
    return {
        "capabilities": sorted(caps),
        "rlimits": [[getattr(resource, "RLIMIT_" + name), soft, hard] for name, (soft, hard) in spec.rlimits.items()],
        "seccomp": compiled.to_config() if compiled is not None else None,
    }
