"""The container flags' values (see :mod:`.options`) as a :class:`supervisor.Spec`.

It reads what the flags name (``--env-file`` files, the container's own
``/etc/passwd`` and ``/etc/group`` for ``-u`` names) and checks the values
that have a form of their own (``--ulimit``, ``--time-offset``); the
:class:`~supervisor.Spec` checks the rest.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from .. import Limits, Spec


def spec_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    """The container that the parsed flags describe.

    Args:
        parser: whose ``error()`` reports a missing or doubled command.
        args: the parsed container flags (``run``'s, ``run-many``'s, or a specs file entry's).

    Returns:
        the spec, not yet checked against the host (:meth:`~supervisor.Spec.check_host`).

    Raises:
        ValueError: a value the spec rejects, or a file a flag names that cannot be read.
        TypeError: a value of the wrong type for the spec.
        SystemExit: from ``parser.error()``, when the parser exits on errors.
    """
    from .. import Mount, Publish, Spec

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if args.command is not None:
        if cmd:
            parser.error("give the command either with -c or after --, not both")
        cmd = shlex.split(args.command)
    if not cmd:
        parser.error("no command given (supervisor run [OPTIONS] -- CMD [ARGS...])")
    env: dict[str, str] = {}
    items = [item for path in args.env_file for item in _env_file(path)]
    for item in [*items, *args.env]:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    mounts = [Mount.parse(m) for m in [*args.add, *args.volume]]
    publish = [Publish.parse(p) for p in args.publish]
    limits, rlimits = _limits_from_args(args)
    uid, gid = _ids(args.uid, args.gid, args.rootfs)
    if args.name is not None and args.hostname is not None and args.name != args.hostname:
        raise ValueError("give --name or --hostname, not both: a container's name is its hostname")
    return Spec(
        command=cmd,
        rootfs=args.rootfs,
        hostname=args.hostname if args.hostname is not None else args.name,
        uid=uid,
        gid=gid,
        mounts=mounts,
        env=env,
        cwd=args.workdir,
        read_only=args.read_only,
        tty=getattr(args, "tty", False),
        overlay=args.overlay,
        grace_period=args.grace_period,
        network=args.network,
        ip=args.ip,
        **({"subnet": args.subnet} if args.subnet else {}),
        publish=publish,
        limits=limits,
        rlimits=rlimits,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        seccomp=args.seccomp,
        init=args.init,
        time_offsets=_time_offsets_from_args(args.time_offset),
        tmpfs=dict(item.partition(":")[::2] for item in args.tmpfs),
        cgroup_parent=args.cgroup_parent,
    )


def _container_file(rootfs: str | None, path: str) -> str:
    """The host path of the container's ``path``: the default root's /etc is the host's."""
    if rootfs is None:
        return path
    from .._parent.config import resolve_in_root

    return os.path.join(rootfs, resolve_in_root(rootfs, path).lstrip("/"))


def _lookup(rootfs: str | None, path: str, name: str) -> list[str]:
    """The fields of ``name``'s line in the container's ``path`` (passwd or group format).

    Raises:
        ValueError: no such line, or the file cannot be read.
    """
    where = _container_file(rootfs, path)
    shown = path if rootfs is None else f"{path} of {rootfs}"
    try:
        with open(where, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[0] == name:
                    return fields
    except OSError as exc:
        raise ValueError(f"-u: cannot look up {name!r}: {shown}: {exc.strerror}") from None
    raise ValueError(f"-u: no {'user' if path.endswith('passwd') else 'group'} {name!r} in {shown}")


def _ids(user: tuple[str, str | None], gid: int | None, rootfs: str | None) -> tuple[int, int | None]:
    """``-u``'s uid and gid: numbers as given, names from the container's own
    ``/etc/passwd`` and ``/etc/group`` (as docker does). A user name without a
    group brings that user's primary group; ``-g`` wins over both.

    Raises:
        ValueError: a name that the container's files do not have.
    """
    name, group = user
    primary: int | None = None
    if name.isdigit():
        uid = int(name)
    else:
        fields = _lookup(rootfs, "/etc/passwd", name)
        try:
            uid, primary = int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            raise ValueError(f"-u: the /etc/passwd line of {name!r} has no numeric uid and gid") from None
    if gid is not None:
        return uid, gid
    if group is None:
        return uid, primary
    if group.isdigit():
        return uid, int(group)
    number = _lookup(rootfs, "/etc/group", group)[2]
    if not number.isdigit():
        raise ValueError(f"-u: the /etc/group line of {group!r} has no numeric gid")
    return uid, int(number)


def _env_file(path: str) -> list[str]:
    """The ``KEY=VALUE`` and ``KEY`` lines of an ``--env-file`` (docker's format).

    Raises:
        ValueError: the file cannot be read, or a line has no name.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--env-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    items = []
    for number, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key = text.partition("=")[0].strip()
        if not key or " " in key:
            raise ValueError(f"--env-file {path}, line {number}: {line!r} is not KEY=VALUE")
        items.append(text)
    return items


def _time_offsets_from_args(items: Sequence[str]) -> dict[str, float]:
    """``--time-offset monotonic=S,boottime=S`` (repeatable) as ``Spec.time_offsets``.

    Raises:
        ValueError: an item is not ``CLOCK=SECONDS``.
    """
    offsets: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            clock, sep, value = part.strip().partition("=")
            if not sep or not clock:
                raise ValueError(f"--time-offset {item!r} is not CLOCK=SECONDS[,CLOCK=SECONDS]")
            try:
                offsets[clock] = int(value)
            except ValueError:
                try:
                    offsets[clock] = float(value)
                except ValueError:
                    raise ValueError(f"--time-offset {item!r}: {value!r} is not a number of seconds") from None
    return offsets


def _limits_from_args(args: argparse.Namespace) -> tuple[Limits | None, dict[str, tuple[int, int]]]:
    """Build the cgroup limits and rlimits from the resource flags.

    Raises:
        ValueError: a size or an rlimit is malformed.
    """
    from .. import Limits, parse_size

    base = Limits.crabcan() if args.crabcan_limits else Limits()
    rlimits: dict[str, tuple[int, int]] = Limits.crabcan_rlimits() if args.crabcan_limits else {}
    memory = parse_size(args.memory) if args.memory else base.memory_bytes
    swap = None
    if args.memory_swap:
        swap = -1 if args.memory_swap.strip() == "-1" else parse_size(args.memory_swap)
    limits = Limits(
        memory_bytes=memory,
        memory_swap_bytes=swap,
        cpus=args.cpus if args.cpus is not None else base.cpus,
        cpu_weight=args.cpu_weight if args.cpu_weight is not None else base.cpu_weight,
        pids=args.pids_limit if args.pids_limit is not None else base.pids,
    )
    for item in args.ulimit:
        name, sep, values = item.partition("=")
        soft, _, hard = values.partition(":")
        if not sep or not soft:
            raise ValueError(f"--ulimit {item!r} is not NAME=SOFT[:HARD]")
        try:
            rlimits[name] = (int(soft), int(hard or soft))
        except ValueError:
            raise ValueError(f"--ulimit {item!r}: limits must be integers") from None
    return (None if limits == Limits() else limits), rlimits
