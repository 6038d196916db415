"""``supervisor-oci``: an OCI runtime with runc's command line.

Engines (podman through conmon, containerd's shim, Kubernetes through
either) drive it as they drive runc: global options first, then one
operation on one container id. Errors are one line on stderr, also written
to ``--log`` (as JSON with ``--log-format json``, which conmon reads), and
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal as _signal
import sys
import time
from collections.abc import Sequence

from .. import __version__
from .state import DEFAULT_ROOT, OCI_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .runtime import Runtime

#: What this runtime does not do, with the line it says instead.
_UNSUPPORTED = {
    "checkpoint": "checkpoint is not supported by supervisor-oci",
    "restore": "restore is not supported by supervisor-oci",
    "update": "update is not supported by supervisor-oci (limits are set at create)",
    "events": "events is not supported by supervisor-oci",
    "spec": "spec is not supported by supervisor-oci: write config.json yourself",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"supervisor-oci: {message}\n")
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    """The command line, runc's grammar."""
    p = _Parser(
        prog="supervisor-oci",
        description="An OCI runtime (runc's command line) on supervisor's container setup.",
    )
    p.add_argument("--version", "-v", action="store_true", help="print the version and exit")
    p.add_argument("--root", default=DEFAULT_ROOT, help=f"the state directory (default {DEFAULT_ROOT})")
    p.add_argument("--log", default="", help="also write errors to this file")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="the log's format")
    p.add_argument("--debug", action="store_true", help="log each operation")
    p.add_argument("--systemd-cgroup", action="store_true", help="refused: the systemd cgroup driver is not supported")
    p.add_argument("--rootless", default="auto", help="refused unless false or auto as root")
    p.add_argument("--criu", default="", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    c = cmd("create", "set a container up, its process waiting to be started")
    c.add_argument("--bundle", "-b", default=".", help="the bundle's directory (default: the current one)")
    c.add_argument("--pid-file", default=None, help="write PID 1's host pid here")
    c.add_argument("--console-socket", default=None, help="a unix socket that receives the terminal's master")
    c.add_argument("--preserve-fds", type=int, default=0, help="pass descriptors 3..3+N-1 to the process")
    c.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--no-new-keyring", action="store_true", help="accepted (no session keyring is made)")
    c.add_argument("id")
    r = cmd("run", "create and start a container, then wait for it (unless --detach)")
    for a in c._actions[1:-1]:
        r._add_action(a)
    r.add_argument("--detach", "-d", action="store_true", help="do not wait for the container")
    r.add_argument("--keep", action="store_true", help="do not delete the container once it exits")
    r.add_argument("id")
    cmd("start", "start a created container's process").add_argument("id")
    e = cmd("exec", "run another process in a running container")
    e.add_argument("--process", "-p", default=None, help="a file holding the process (the runtime spec's JSON)")
    e.add_argument("--detach", "-d", action="store_true", help="do not wait for the process")
    e.add_argument("--tty", "-t", action="store_true", help="give it a terminal (needs --console-socket)")
    e.add_argument("--console-socket", default=None, help="a unix socket that receives the terminal's master")
    e.add_argument("--pid-file", default=None, help="write the process's host pid here")
    e.add_argument("--preserve-fds", type=int, default=0, help="pass descriptors 3..3+N-1 to the process")
    e.add_argument("--cwd", default=None, help="its working directory")
    e.add_argument("--env", "-e", action="append", default=[], help="NAME=value, added to its environment")
    e.add_argument("--user", "-u", default=None, help="uid[:gid]")
    e.add_argument("id")
    e.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    cmd("state", "print a container's state (JSON)").add_argument("id")
    k = cmd("kill", "send a signal to a container's process")
    k.add_argument("--all", "-a", action="store_true", help="to every process of the container")
    k.add_argument("id")
    k.add_argument("signal", nargs="?", default="SIGTERM")
    d = cmd("delete", "remove a stopped container")
    d.add_argument("--force", "-f", action="store_true", help="kill it first if it runs")
    d.add_argument("id")
    ps = cmd("ps", "list a container's processes")
    ps.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ps.add_argument("id")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER)
    cmd("pause", "freeze a container's processes").add_argument("id")
    cmd("resume", "thaw a paused container").add_argument("id")
    ls = cmd("list", "list the containers under --root")
    ls.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ls.add_argument("--quiet", "-q", action="store_true", help="only their ids")
    cmd("features", "print what this runtime supports (JSON)")
    for name, line in _UNSUPPORTED.items():
        u = cmd(name, line)
        u.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL`` or ``9``.

    Raises:
        ValueError: not a signal of this system.
    """
    if text.isdigit():
        number = int(text)
        if not 0 < number < _signal.NSIG:
            raise ValueError(f"invalid signal {text!r}")
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(_signal.Signals, name))
    except AttributeError:
        raise ValueError(f"invalid signal {text!r}") from None


def features() -> dict[str, object]:
    """The runtime-spec's features document for this runtime."""
    from .._capabilities import CAP_NUMBERS
    from .bundle import _PROPAGATION, _STANDARD_MOUNTS

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": sorted({"ro", "rw", "bind", "rbind", "nosuid", "nodev", "exec", "noexec", *_PROPAGATION}),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": sorted("CAP_" + name for name in CAP_NUMBERS),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": [
                    "SCMP_ACT_ALLOW",
                    "SCMP_ACT_ERRNO",
                    "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE",
                    "SCMP_ACT_TRAP",
                ],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
            "filesystems": sorted({kind for _dst, kind in _STANDARD_MOUNTS} | {"bind", "tmpfs", "cgroup"}),
        },
        "annotations": {"org.opencontainers.runc.version": "none", "io.github.supervisor.version": __version__},
    }


class _Log:
    def __init__(self, path: str, fmt: str, debug: bool) -> None:
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def write(self, level: str, text: str) -> None:
        if not self.path:
            return
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": text, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        else:
            line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {level}: {text}"
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass

    def error(self, text: str) -> int:
        sys.stderr.write(f"supervisor-oci: {text}\n")
        self.write("error", text)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    p = parser()
    args = p.parse_args(argv)
    if args.version:
        print(f"supervisor-oci version {__version__}\nspec: {OCI_VERSION}")
        return 0
    log = _Log(args.log, args.log_format, args.debug)
    if args.command is None:
        p.print_help(sys.stderr)
        return 1
    if args.debug:
        log.write("debug", f"{args.command} {vars(args)}")
    if args.command in _UNSUPPORTED:
        return log.error(_UNSUPPORTED[args.command])
    if args.systemd_cgroup:
        return log.error(
            "--systemd-cgroup is not supported: use the cgroupfs driver (podman --cgroup-manager=cgroupfs)"
        )
    if args.rootless not in ("auto", "false") or os.geteuid() != 0:
        return log.error("rootless operation is not supported by supervisor-oci yet: run it as root")
    if args.command == "features":
        print(json.dumps(features(), indent=2))
        return 0
    from .bundle import BundleError
    from .runtime import Runtime, RuntimeError_
    from .state import StateError

    rt = Runtime(args.root)
    try:
        return _dispatch(rt, args)
    except (BundleError, StateError, RuntimeError_, ValueError) as exc:
        return log.error(str(exc))
    except OSError as exc:
        return log.error(f"{args.command}: {exc}")


def _relay_signals(pidfd: int) -> None:
    """Forward the signals a foreground ``run`` or ``exec`` gets to the process of ``pidfd``."""
    from .._sys import linux

    def relay(sig: int, _frame: object) -> None:
        try:
            linux.pidfd_send_signal(pidfd, sig)
        except OSError:
            pass

    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2):
        _signal.signal(sig, relay)


def _dispatch(rt: Runtime, args: argparse.Namespace) -> int:
    command = args.command
    if command in ("create", "run"):
        pid = rt.create(
            args.id,
            args.bundle,
            pid_file=args.pid_file,
            console_socket=args.console_socket,
            preserve_fds=args.preserve_fds,
        )
        if command == "create":
            return 0
        pidfd = os.pidfd_open(pid)
        rt.start(args.id)
        if args.detach:
            return 0
        _relay_signals(pidfd)
        code = rt.wait(pidfd)
        if not args.keep:
            rt.delete(args.id, force=True)
        return code
    if command == "exec":
        return _exec(rt, args)
    if command == "start":
        rt.start(args.id)
    elif command == "state":
        print(json.dumps(rt.state(args.id), indent=2))
    elif command == "kill":
        rt.kill(args.id, parse_signal(args.signal), args.all)
    elif command == "delete":
        try:
            rt.delete(args.id, args.force)
        except Exception as exc:
            if args.force and "does not exist" in str(exc):
                return 0
            raise
    elif command in ("pause", "resume"):
        rt.pause(args.id, command == "pause")
    elif command == "ps":
        pids = rt.pids(args.id)
        if args.format == "json":
            print(json.dumps(pids))
        else:
            _ps_table(pids, args.ps_args or ["-ef"])
    elif command == "list":
        items = rt.list_all()
        if args.quiet:
            print("\n".join(i["id"] for i in items))
        elif args.format == "json":
            print(json.dumps(items))
        else:
            print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} CREATED")
            for i in items:
                print(f"{i['id']:<20} {i['pid']:<8} {i['status']:<10} {i['bundle']:<40} {i['created']}")
    return 0


def _exec(rt: Runtime, args: argparse.Namespace) -> int:
    process = None
    if args.process:
        with open(args.process, "rb") as f:
            process = json.load(f)
        if not isinstance(process, dict):
            raise ValueError(f"--process {args.process}: not a JSON object")
    extra: dict[str, object] = {}
    if args.cwd:
        extra["cwd"] = args.cwd
    _pid, pidfd = rt.exec(
        args.id,
        _with(process, extra, args.env, args.user),
        list(args.argv),
        tty=args.tty or (process or {}).get("terminal", False),
        console_socket=args.console_socket,
        pid_file=args.pid_file,
        preserve_fds=args.preserve_fds,
    )
    if args.detach:
        return 0
    _relay_signals(pidfd)
    return rt.wait(pidfd)


def _with(
    process: dict[str, object] | None, extra: dict[str, object], env: list[str], user: str | None
) -> dict[str, object] | None:
    """``--process`` (or nothing) with ``--cwd``, ``--env`` and ``--user`` applied."""
    if not extra and not env and user is None:
        return process
    out = dict(process) if process is not None else {}
    out.update(extra)
    if env:
        out["env"] = [*list(out.get("env", []) or []), *env]  # type: ignore[call-overload]
    if user is not None:
        uid, _, gid = user.partition(":")
        out["user"] = {"uid": int(uid), "gid": int(gid or uid)}
    return out


def _ps_table(pids: list[int], ps_args: list[str]) -> None:
    """``ps`` with ``ps_args``, its rows kept for the container's processes (as runc does)."""
    import subprocess

    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout.splitlines()
    if not out:
        return
    header = out[0].split()
    if "PID" not in header:
        raise ValueError("ps: its output has no PID column")
    column = header.index("PID")
    wanted = set(pids)
    print(out[0])
    for line in out[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            print(line)


def console_main() -> None:
    """The ``supervisor-oci`` console script."""
    raise SystemExit(main())
