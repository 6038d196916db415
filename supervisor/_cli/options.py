"""The flags that describe a container, shared by ``run`` and ``run-many``
(and by the entries of a run-many specs file, which are parsed by them).

This module only declares them; :mod:`.spec` turns their values into a
:class:`supervisor.Spec`.
"""

from __future__ import annotations

import argparse


def add_container_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that describe a container (shared by ``run`` and ``run-many``).

    Args:
        parser: the parser to add them to.
    """
    parser.add_argument("-c", "--command", help="command line to run, split like a shell would (crabcan's -c)")
    parser.add_argument(
        "-u",
        "--uid",
        "--user",
        dest="uid",
        type=_user,
        default=("0", None),
        metavar="USER[:GROUP]",
        help="user (and group) to run as inside the container, numbers or names of the container's own"
        " /etc/passwd and /etc/group (default 0; a name brings its primary group)",
    )
    parser.add_argument("-g", "--gid", type=int, default=None, help="gid inside the container (default: the uid)")
    parser.add_argument(
        "-m",
        "--mount",
        "--rootfs",
        dest="rootfs",
        metavar="DIR",
        help="directory to use as the container's root (default: a read-only view of the host's /usr, /etc, ...)",
    )
    parser.add_argument(
        "-a",
        "--add",
        action="append",
        default=[],
        metavar="SRC:DST[:OPTS]",
        help="bind-mount host SRC at DST (crabcan's --add); repeatable. OPTS: ro or rw, idmap or noidmap. "
        "The container reaches SRC as an unprivileged host uid (100000): every folder on the way needs o+x. "
        "A writable SRC owned by a user other than root is id-mapped by default: the payload sees that "
        "user's files as its own and writes as that user; a root-owned SRC only with :idmap",
    )
    parser.add_argument(
        "-v", "--volume", action="append", default=[], metavar="SRC:DST[:OPTS]", help="same as --add (docker's -v)"
    )
    parser.add_argument(
        "--tmpfs",
        action="append",
        default=[],
        metavar="PATH[:OPTS]",
        help="mount a tmpfs at PATH (docker's): OPTS size=, mode=, nr_inodes=, uid=, gid=, ro, exec;"
        " always nosuid, nodev, and noexec unless exec; repeatable",
    )
    parser.add_argument("--hostname", help="hostname (default: a random adjective-noun-N)")
    parser.add_argument(
        "--name",
        help="the container's name (docker's): here its hostname, which names it in events, --json and"
        " run-many's lists; same as --hostname",
    )
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY[=VALUE]", help="set a variable (KEY alone: copy ours)"
    )
    parser.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="set the variables of FILE: KEY=VALUE or KEY lines, # comments (as docker's); -e wins",
    )
    parser.add_argument("-w", "--workdir", default="/", metavar="DIR", help="working directory inside the container")
    parser.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    parser.add_argument(
        "--preserve-fds",
        type=int,
        default=0,
        metavar="N",
        help="pass our fds 3 .. 3+N-1 to the payload as the same numbers (as runc and crun do); no other fd reaches it",
    )
    parser.add_argument(
        "--overlay", action="store_true", help="copy-on-write root: writes go to a private tmpfs, discarded at exit"
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between SIGTERM and SIGKILL (0 to 3600)",
    )
    parser.add_argument(
        "--init",
        action="store_true",
        help="run a tiny init as PID 1 (as docker's --init): the payload, PID 2, gets SIGTERM on a stop even"
        " without a handler, orphans are reaped, signals are forwarded; without it, a payload that has no"
        " SIGTERM handler is SIGKILLed at once on a stop",
    )
    parser.add_argument(
        "--network",
        choices=("none", "bridge", "host"),
        default="none",
        help="none: loopback only (default); bridge: a veth on a host-local bridge with its own address;"
        " host: the host's network (unsafe)",
    )
    parser.add_argument("--ip", metavar="ADDR", help="fixed IPv4 address on the bridge (with --network bridge)")
    parser.add_argument(
        "--subnet",
        metavar="CIDR",
        help="the bridge's IPv4 subnet (with --network bridge; default 10.88.0.0/16); one bridge per subnet",
    )
    parser.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[IP:]HOSTPORT:CONTAINERPORT[/udp]",
        help="forward a host port (on 127.0.0.1 by default) to the container (with --network bridge); repeatable",
    )
    limits = parser.add_argument_group("resources (cgroup limits, rlimits, time)")
    limits.add_argument(
        "--memory", metavar="SIZE", help="memory limit, e.g. 256M or 1G (the whole container is OOM-killed)"
    )
    limits.add_argument("--memory-swap", metavar="SIZE", help="memory plus swap limit (-1: unlimited swap)")
    limits.add_argument("--cpus", type=float, metavar="N", help="CPU quota in CPUs, e.g. 0.5")
    limits.add_argument("--cpu-weight", type=int, metavar="W", help="relative CPU weight, 1..10000 (default 100)")
    limits.add_argument("--pids-limit", type=int, metavar="N", help="most processes and threads at once")
    limits.add_argument(
        "--cgroup-parent",
        metavar="PATH",
        help="make the container's cgroup v2 below this cgroup (e.g. /supervisor; created if missing, with"
        " the cpu, memory and pids controllers) instead of below ours (rootless: the subtree delegated to you"
        " above ours, when there is one)",
    )
    limits.add_argument(
        "--ulimit",
        action="append",
        default=[],
        metavar="NAME=SOFT[:HARD]",
        help="an rlimit for the container, e.g. nofile=64:64 (never above ours); repeatable",
    )
    limits.add_argument(
        "--crabcan-limits",
        action="store_true",
        help="crabcan's preset: memory 1G, pids 64, CPU weight 256, nofile 64 (explicit flags win)",
    )
    limits.add_argument("--timeout", type=float, metavar="S", help="wall-clock limit: then SIGTERM, grace, SIGKILL")
    limits.add_argument(
        "--time-offset",
        action="append",
        default=[],
        metavar="monotonic=S,boottime=S",
        help="shift the container's monotonic and boot-time clocks (and /proc/uptime) by S seconds, in its"
        " time namespace; repeatable",
    )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--cap-add", action="append", default=[], metavar="CAP", help="keep a capability (or ALL); repeatable"
    )
    security.add_argument(
        "--cap-drop", action="append", default=[], metavar="CAP", help="drop a capability (or ALL); repeatable"
    )
    security.add_argument(
        "--seccomp",
        default="default",
        metavar="PROFILE",
        help="seccomp profile: default, unconfined, or an OCI/Docker JSON profile file",
    )


def _user(text: str) -> tuple[str, str | None]:
    """``-u USER[:GROUP]``: each a number or a name, looked up once the root is known.

    Args:
        text: the flag's value.

    Returns:
        the user and the group (None when not given), as given.

    Raises:
        argparse.ArgumentTypeError: an empty user, or an empty group after ``:``.
    """
    user, sep, group = text.partition(":")
    if not user or (sep and not group):
        raise argparse.ArgumentTypeError(f"{text!r}: give USER or USER:GROUP (numbers or names)")
    return user, (group if sep else None)
