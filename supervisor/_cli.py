"""The ``supervisor`` command: a thin layer over the public API.

It parses arguments into a :class:`supervisor.Spec`, runs it with
:func:`supervisor.run`-style calls, and maps the outcome to an exit status:
the payload's own; 128+N when killed by signal N; 125 when setup failed (one
line naming the phase); 126 when the program is not executable; 127 when it
is not found. Library modules never import this one.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import functools
import json
import math
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, NoReturn


if TYPE_CHECKING:
    from . import Container, Limits, Phase, Result, Spec, Supervisor, SupervisorError

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

_EPILOG = """\
exit status: the payload's; 128+N if it was killed by signal N (an OOM kill
is 137); 124 if --timeout struck; 125 if the container could not be set up;
126 if the program is not executable; 127 if it was not found; 130 after
Ctrl-C, 143 after SIGTERM, 129 after SIGHUP (the container is stopped first).

examples:
  supervisor run -- python3 -c 'print(1)'          # embedded default root
  supervisor run -m ./rootfs -u 0 -c /bin/sh -a /lib:/lib   # crabcan's flags
  supervisor run -v "$PWD:/src:ro" -w /src --hostname ci -- ls -l
"""


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, measuring the terminal as ``shutil`` would without
    importing it: argparse makes one for every ``add_argument`` (to check the
    metavar), and ``shutil`` costs a command line some 2.5 ms."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """:class:`_Formatter` keeping the description's and epilog's line breaks."""


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: ``$COLUMNS``, then stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render the CLI docs)."""
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Start, supervise and clean up Linux containers.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run one container",
        description="Run CMD in a new container and exit with its status.",
        usage="supervisor run [OPTIONS] -- CMD [ARGS...]",
        epilog=_EPILOG,
        formatter_class=_RawFormatter,
    )
    _add_container_options(run)
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached (default: /dev/null)")
    run.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="allocate a terminal inside the container. The payload is its PID 1, which ignores the signals it"
        " has no handler for: Ctrl-C stops a shell's child but not a bare 'sleep'; add --init for that",
    )
    run.add_argument(
        "-d", "--debug", action="store_true", help="show each setup phase as it happens, with its duration"
    )
    run.add_argument("--json", action="store_true", help="print the result (with phases and output) as one JSON object")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]", help="the program and its arguments")

    many = sub.add_parser(
        "run-many",
        help="run many containers, with live progress and a summary",
        description=(
            "Run COUNT copies of CMD, or every container listed in FILE (a TOML file of [[container]] tables, or a"
            " JSON list of objects, whose keys are run's long flags, such as memory or volume, or the fields of"
            " supervisor.Spec), at most PARALLEL at a time."
        ),
        usage="supervisor run-many -n COUNT [-j PARALLEL] [OPTIONS] -- CMD [ARGS...]\n       supervisor run-many FILE",
        formatter_class=_Formatter,
        epilog="exit status: 0 if every container exited 0, 1 otherwise (a setup failure counts as a"
        " failed container); 125 for a bad option or specs file.",
    )
    gc = sub.add_parser(
        "gc",
        formatter_class=_Formatter,
        help="remove what crashed supervisors left behind",
        description=(
            "Remove the host-side resources (cgroups, network links, address leases, folders) recorded by"
            " supervisors that died without cleaning up. Running supervisors are left alone."
        ),
    )
    gc.add_argument("--json", action="store_true", help="print what was removed as JSON")
    many.add_argument("-n", "--count", type=int, help="how many copies of CMD to run")
    many.add_argument(
        "-j", "--parallel", type=int, default=None, metavar="PARALLEL", help="containers at once (default: 4 per CPU)"
    )
    _add_container_options(many)
    many.add_argument("--json", action="store_true", help="print the event stream as JSON lines on stdout")
    many.add_argument(
        "--output",
        metavar="DIR",
        help="write each container's stdout, stderr and result to DIR/NAME.out, .err and .json (NAME: its"
        " hostname); without it the output is only in --json's events",
    )
    many.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...] | FILE", help="the program, or a file")
    return parser


def _add_container_options(parser: argparse.ArgumentParser) -> None:
    """Options that describe a container (shared by ``run`` and ``run-many``)."""
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
        " the cpu, memory and pids controllers) instead of below ours",
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


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata would cost
    every run about 25 ms."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {_version()}")
        parser.exit()


def console_main() -> NoReturn:
    """The ``supervisor`` console script: :func:`main`, then a quick exit.

    A normal interpreter exit tears down every module and object after the run
    (about 30 ms once trio and the API are loaded), for a process that ends
    anyway. This does what that exit does for the outside world (flush the
    standard streams, run the ``atexit`` hooks, the veth janitor's among
    them), then ends the process with the run's status.

    Raises:
        SystemExit: from argument parsing (``--help``, a bad option), as usual.
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to tell it
            pass
    atexit._run_exitfuncs()
    os._exit(status)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("supervisor")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.1.0"


def _fail(message: str) -> int:
    print(f"supervisor: {message}", file=sys.stderr)
    return EXIT_SETUP_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supervisor`` console script.

    Returns:
        the process exit status.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The subcommand's usage, not the top level's: the flag was given to it.
        chosen = _subparser(parser, args.subcommand)
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.subcommand == "run":
        return _run(parser, args)
    if args.subcommand == "gc":
        return _gc(args)
    if args.subcommand == "run-many":
        from ._climany import run_many

        return run_many(parser, args, _spec_from_args)
    parser.error(f"unknown command {args.subcommand}")  # pragma: no cover
    return 2  # pragma: no cover


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser  # pragma: no cover - every subcommand has its parser


def _gc(args: argparse.Namespace) -> int:
    from . import collect_garbage

    report = collect_garbage()
    if args.json:
        print(json.dumps({"owners": report.owners, "removed": report.removed, "errors": report.errors}))
    else:
        for record in report.removed:
            print(f"removed {record.get('kind')}: {record.get('path') or record.get('name') or record}")
        for error in report.errors:
            print(f"supervisor: gc: {error}", file=sys.stderr)
        print(f"{len(report.owners)} dead supervisor(s), {len(report.removed)} resource(s) removed")
    return 1 if report.errors else 0


def _spec_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Spec:
    from . import Mount, Publish, Spec

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


def _user(text: str) -> tuple[str, str | None]:
    """``-u USER[:GROUP]``: each a number or a name, looked up once the root is known."""
    user, sep, group = text.partition(":")
    if not user or (sep and not group):
        raise argparse.ArgumentTypeError(f"{text!r}: give USER or USER:GROUP (numbers or names)")
    return user, (group if sep else None)


def _container_file(rootfs: str | None, path: str) -> str:
    """The host path of the container's ``path``: the default root's /etc is the host's."""
    if rootfs is None:
        return path
    from ._parent.config import resolve_in_root

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
    from . import Limits, parse_size

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


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        spec = _spec_from_args(parser, args)
        spec.check_host()
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    if args.tty and not os.isatty(0):
        return _fail("-t needs a terminal on stdin")
    from ._privileges import check_privileges

    try:
        check_privileges()
    except PermissionError as exc:
        return _fail(str(exc.strerror))
    if args.preserve_fds < 0:
        return _fail("--preserve-fds must be 0 or more")
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        return _fail(f"--timeout {args.timeout}: give a number of seconds above 0")
    # Checked before trio and the supervisor open descriptors of their own:
    # a gap in 3..3+N-1 would otherwise be filled by one of ours.
    for fd in range(3, 3 + args.preserve_fds):
        try:
            os.fstat(fd)
        except OSError:
            return _fail(f"--preserve-fds {args.preserve_fds}: fd {fd} is not open")

    from ._parent.oneshot import runs_blocking

    if not args.json and runs_blocking(spec):
        return _run_blocking(spec, args)
    return run_stoppable(_run_async, spec, args)


#: Signals that stop a run: systemd and kill send SIGTERM, a closed terminal
#: SIGHUP, Ctrl-C SIGINT.
_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _run_blocking(spec: Spec, args: argparse.Namespace) -> int:
    """Run without an event loop (see :mod:`supervisor._parent.oneshot`).

    A stop signal (SIGINT, SIGTERM, SIGHUP) stops the container as on
    cancellation and ends with 128+N and one line, as :func:`run_stoppable`
    does: its handler only writes to a wake-up pipe that the run watches.
    """
    import signal

    from ._errors import SupervisorError
    from ._parent.oneshot import run_blocking

    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stopped_by: list[int] = []

    def note(signum: int, _frame: object) -> None:
        stopped_by.append(signum)

    signums = [getattr(signal, name) for name in _STOP_SIGNALS]
    saved = {signum: signal.signal(signum, note) for signum in signums}
    saved_wakeup = signal.set_wakeup_fd(stop_w, warn_on_full_buffer=False)
    phases = _PhasePrinter(args.debug)
    try:
        result = run_blocking(
            spec,
            stdin=0 if args.interactive else None,
            pass_fds=range(3, 3 + args.preserve_fds),  # checked open by _run
            timeout=args.timeout,
            stop_fd=stop_r,
            on_phase=phases.on_phase if args.debug else None,
            on_started=phases.started,
        )
    except (SupervisorError, ValueError, TypeError) as exc:
        return _failed(exc, spec, args)
    finally:
        signal.set_wakeup_fd(saved_wakeup)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        os.close(stop_r)
        os.close(stop_w)
    if stopped_by:
        return _stopped(stopped_by[0])
    return _finished(result, args, phases)


def _stopped(signum: int) -> int:
    """One line naming the stop signal; 128+N."""
    import signal

    try:
        print(f"supervisor: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    except OSError:  # stderr was the terminal that hung up
        pass
    return 128 + signum


class _PhasePrinter:
    """``--debug``: each setup phase with its duration, as the next one starts."""

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self.last: tuple[Phase, float] | None = None

    def on_phase(self, phase: Phase, seconds: float) -> None:
        if self.last is not None:
            prev, start = self.last
            print(f"supervisor: {prev.label:<13} {(seconds - start) * 1e3:8.3f} ms", file=sys.stderr)
        self.last = (phase, seconds)

    def started(self, pid: int = 0) -> None:
        """The payload runs: its phase's line, with PID 1's host PID if given (for ``nsenter -t``)."""
        if self.debug and self.last is not None:
            where = f", host PID {pid}" if pid else ""
            print(f"supervisor: {self.last[0].label:<13} (payload started{where})", file=sys.stderr)
        self.last = None


def _failed(exc: SupervisorError | ValueError | TypeError, spec: Spec, args: argparse.Namespace) -> int:
    """The exit status and line of a run that did not get to its end.

    126/127 when the program itself could not be executed or found; 125 for
    any other setup failure, a spec the host cannot run (a seccomp profile
    that does not compile, say) or a protocol error. A run whose clean-up
    failed did get to its end: the payload's status, and a line saying so.
    """
    from ._errors import CleanupError, SetupError
    from ._protocol import Phase

    if isinstance(exc, CleanupError):
        # The payload ran to its end: its status, and a line about what is left.
        print(f"supervisor: {exc} (left for 'supervisor gc')", file=sys.stderr)
        return _finished(exc.result, args, _PhasePrinter(False))
    if not isinstance(exc, SetupError):
        return _fail(str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}")
    if args.json and exc.result is not None:
        print(json.dumps(exc.result.to_json()))
    if exc.phase == Phase.EXEC and exc.errno == errno.ENOENT:
        print(f"supervisor: {exc.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if exc.phase == Phase.EXEC and exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        print(f"supervisor: cannot execute {spec.command[0]}: {exc.message}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    return _fail(f"setup failed in phase {exc.phase.label}: {exc.message}")


def _finished(result: Result, args: argparse.Namespace, phases: _PhasePrinter) -> int:
    """The exit status of a run that ended (the payload's, 128+N, 124), with its lines."""
    if args.debug:
        phases.started()
        print(f"supervisor: {result.reason}; wall {result.wall_s * 1e3:.1f} ms", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    if result.reason == "timeout":
        print(f"supervisor: timed out after {args.timeout} s", file=sys.stderr)
        return EXIT_TIMEOUT
    if result.reason == "oom":
        print("supervisor: the container hit its memory limit and was killed", file=sys.stderr)
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code if result.exit_code is not None else EXIT_SETUP_FAILED


def run_stoppable(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(main, *args)``; a stop signal or Ctrl-C stops it cleanly.

    On SIGTERM or SIGHUP, ``main`` is cancelled: its supervisor stops the
    containers as on any cancellation (SIGTERM if PID 1 handles it, the grace
    period, SIGKILL) and removes their cgroups, veths and run directories;
    then one line names the signal. Ctrl-C (SIGINT: trio's KeyboardInterrupt,
    which unwinds the supervisor the same way) ends with the same line and no
    traceback. Without this, the default action would end the process at once
    and leave that to the next supervisor's sweep.

    Returns:
        ``main``'s status; 128+N after stop signal N; 130 after Ctrl-C.
    """
    import signal

    import trio

    stopped_by: list[int] = []

    async def until_stopped() -> int:
        status = EXIT_SETUP_FAILED  # replaced unless a stop signal cancels main
        async with trio.open_nursery() as nursery:

            async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                # systemd and kill send SIGTERM, a closed terminal SIGHUP;
                # SIGINT stays trio's (KeyboardInterrupt).
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    task_status.started()
                    async for signum in signals:
                        stopped_by.append(signum)
                        nursery.cancel_scope.cancel()
                        return

            # Before main: the signal is ours from before any cgroup exists.
            await nursery.start(watch)
            status = await main(*args)
            nursery.cancel_scope.cancel()
        return status

    try:
        status = trio.run(until_stopped)
    except KeyboardInterrupt:
        stopped_by.insert(0, signal.SIGINT)
    except BaseExceptionGroup as group:
        # Ctrl-C reached a task inside a nursery: trio raises it grouped.
        _interrupts, others = group.split(KeyboardInterrupt)
        if others is not None:
            raise
        stopped_by.insert(0, signal.SIGINT)
    if stopped_by:
        return _stopped(stopped_by[0])
    return status


async def _run_async(spec: Spec, args: argparse.Namespace) -> int:
    from . import Supervisor, SupervisorError

    phases = _PhasePrinter(args.debug)
    on_phase = phases.on_phase if args.debug else None
    stdin_fd = 0 if (args.interactive or args.tty) else None
    pass_fds = range(3, 3 + args.preserve_fds)  # checked open by _run
    started: list[Container] = []
    try:
        async with Supervisor() as sup:
            result: Result
            if spec.tty:
                result = await _run_tty(sup, spec, on_phase, args.timeout, pass_fds)
            else:
                run = functools.partial(
                    sup.run,
                    spec,
                    check=False,
                    pass_fds=pass_fds,
                    timeout=args.timeout,
                    capture_output=args.json,
                    stdin=stdin_fd,
                    on_phase=on_phase,
                )
                result = await _start_and_wait(run, phases.started, started)
    except (SupervisorError, ValueError, TypeError) as exc:
        return _failed(exc, spec, args)
    except BaseException:
        # Stopped (a stop signal's cancellation, Ctrl-C): the run has stopped
        # the container and set its result ("cancelled", with the output so
        # far) before this unwinds; --json still prints it.
        if args.json and started and started[0]._result is not None:
            print(json.dumps(started[0]._result.to_json()))
        raise
    return _finished(result, args, phases)


async def _start_and_wait(run: Callable[..., Any], started: Callable[[int], None], handles: list[Container]) -> Result:
    """``nursery.start(run)``, call ``started(pid)`` once the payload runs, then wait.

    The container's handle is appended to ``handles`` once it runs.

    Raises:
        the run's own exception (not wrapped in an exception group).
    """
    import trio

    try:
        async with trio.open_nursery() as nursery:
            container: Container = await nursery.start(run)
            handles.append(container)
            started(container.pid)
            return await container.wait()
    except BaseExceptionGroup as group:
        raise _single(group) from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery wrapped (the same one may be in it twice:
    raised by the run and again by ``wait()``); else the group itself."""
    unique = list({id(exc): exc for exc in group.exceptions}.values())
    return unique[0] if len(unique) == 1 and not isinstance(unique[0], BaseExceptionGroup) else group


async def _run_tty(
    sup: Supervisor,
    spec: Spec,
    on_phase: Callable[[Phase, float], None] | None,
    timeout: float | None,
    pass_fds: Sequence[int],
) -> Result:
    """Run with the container's terminal relayed to ours, in raw mode."""
    import signal
    import termios
    import tty

    import trio

    saved = termios.tcgetattr(0)
    try:
        async with trio.open_nursery() as nursery:
            container: Container = await nursery.start(
                functools.partial(
                    sup.run,
                    spec,
                    check=False,
                    capture_output=False,
                    stdin=0,
                    on_phase=on_phase,
                    timeout=timeout,
                    pass_fds=pass_fds,
                )
            )
            # TCSANOW, not setraw's default TCSAFLUSH: keys typed while the
            # container started are the payload's input and must not be dropped.
            # A terminal that hung up meanwhile (EIO) has no modes to set: its
            # SIGHUP stops the run (run_stoppable).
            with contextlib.suppress(termios.error):
                tty.setraw(0, termios.TCSANOW)

            def resize() -> None:
                try:
                    size = os.get_terminal_size(0)
                except OSError:  # hung up (EIO): no size to follow
                    return
                container.resize_terminal(size.lines, size.columns)

            resize()

            async def follow_window_size() -> None:
                with trio.open_signal_receiver(signal.SIGWINCH) as signals:
                    async for _ in signals:
                        resize()

            nursery.start_soon(follow_window_size)
            result = await container.wait()
            nursery.cancel_scope.cancel()
        return result
    except BaseExceptionGroup as group:
        raise _single(group) from None
    finally:
        with contextlib.suppress(termios.error):  # the terminal hung up (EIO): no modes to give back
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
