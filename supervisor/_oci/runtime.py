"""The OCI runtime's operations, as runtime.md defines them, without an event loop.

``create`` runs the library's setup (the same :class:`SpawnConfig`, the
same PID 1, the same cgroup code) up to the start gate: PID 1 has every
namespace, mount, limit, capability set and the program found, and waits
before ``execve`` (``gate.c``) while ``create`` records it and exits.
``start`` connects to the gate and reads the rest of the setup's report.
Every other operation works from the record and the live process (see
:mod:`.state`); each that changes a container holds its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal as _signal
import socket
import subprocess
import time

from .._capabilities import CAP_NUMBERS
from .._errors import SetupError
from .._parent.cgroups.container import entry_fds_of
from .._protocol import Bind, CgroupEntry, Phase, Pid1Record, Record, decode_pid1, encode_pid1, recv_raw
from .._sys import linux
from . import bundle as _bundle
from . import cgroup as _cgroup
from .state import OCI_VERSION, StateError, Store, alive, freeze_cgroup, pidfd_of, public, start_time, status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .bundle import Hook

#: waitid(2) flag: children of any exit signal.
_WALL = 0x40000000


class RuntimeError_(Exception):
    """An operation that failed; its message is the one line the CLI prints."""


def _send_console(console_socket: str, master: int) -> None:
    """Hand the terminal's master to ``--console-socket`` (SCM_RIGHTS), as runc does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.connect(console_socket)
        socket.send_fds(s, [b"/dev/ptmx"], [master])


def _run_hooks(hooks: tuple[Hook, ...], state: str, what: str, keep_going: bool = False) -> None:
    """Run each hook with the state JSON on its stdin.

    Args:
        keep_going: run the rest after a failure (poststart, poststop), and
            raise for the first one at the end.

    Raises:
        RuntimeError_: a hook could not run, exited non-zero, or timed out.
    """
    first: RuntimeError_ | None = None
    for hook in hooks:
        try:
            _run_hook(hook, state, what)
        except RuntimeError_ as exc:
            if not keep_going:
                raise
            first = first or exc
    if first is not None:
        raise first


def _run_hook(hook: Hook, state: str, what: str) -> None:
    """Run one hook (see :func:`_run_hooks`)."""
    path, args, env, timeout = hook
    try:
        done = subprocess.run(
            list(args),
            executable=path,
            input=state.encode(),
            env=dict(e.split("=", 1) for e in env),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError_(f"{what} hook {path}: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip()[-400:]
        raise RuntimeError_(f"{what} hook {path} exited {done.returncode}" + (f": {said}" if said else ""))


def _wait_exit(pidfd: int, timeout: float) -> bool:
    """Whether the process of ``pidfd`` exited within ``timeout`` seconds."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000))))


class Runtime:
    """The operations on the containers of one ``--root``.

    Args:
        root: the state directory.
    """

    def __init__(self, root: str) -> None:
        self.store = Store(root)

    # -- create ---------------------------------------------------------------
    def create(
        self,
        cid: str,
        bundle_dir: str,
        *,
        pid_file: str | None = None,
        console_socket: str | None = None,
        preserve_fds: int = 0,
    ) -> int:
        """Create the container: everything set up, PID 1 waiting before ``execve``.

        Returns:
            PID 1's host pid.

        Raises:
            BundleError: ``config.json`` asks for what cannot be honoured.
            StateError: the id is taken or invalid.
            RuntimeError_: the setup failed (the message names the phase and call).
        """
        bundle = _bundle.load(bundle_dir)
        if bundle.config.tty and not console_socket:
            raise RuntimeError_("process.terminal is true: create needs --console-socket")
        if not bundle.config.tty and console_socket:
            raise RuntimeError_("--console-socket given, but process.terminal is false")
        if preserve_fds < 0 or preserve_fds > 32:
            raise RuntimeError_(f"--preserve-fds {preserve_fds}: at most 32 descriptors are passed")
        directory = self.store.new(cid)
        with contextlib.ExitStack() as undo:
            undo.callback(self.store.remove, cid)
            with self.store.locked(cid):
                pid = self._create(cid, bundle, directory, undo, pid_file, console_socket, preserve_fds)
            undo.pop_all()
        return pid

    def _create(
        self,
        cid: str,
        bundle: _bundle.Bundle,
        directory: str,
        undo: contextlib.ExitStack,
        pid_file: str | None,
        console_socket: str | None,
        preserve_fds: int,
    ) -> int:
        from .._parent.oneshot import _spawn_pid1
        from .._parent.pid1 import Pid1

        try:
            cg, made = _cgroup.place(
                bundle.cgroups_path,
                cid,
                bundle.limits,
                bundle.cpu_shares,
                mknod=bool(bundle.config.devices) and bool(bundle.config.capabilities >> CAP_NUMBERS["MKNOD"] & 1),
            )
        except OSError as exc:
            raise RuntimeError_(f"create the cgroup: {exc}") from None
        undo.callback(_cgroup.remove_parents, made)
        try:
            cg.setup()
            undo.callback(cg.remove_blocking)
            entries = cg.entry_fds()
        except OSError as exc:
            raise RuntimeError_(f"create the cgroup: {exc}") from None
        child_side: list[int] = [fd for _k, fd, _p in entries]
        try:
            v2 = next((p for k, _fd, p in entries if k == "clone"), None)
            if bundle.cgroup_mounts and v2 is None:
                raise RuntimeError_("config.json: mounts: a cgroup mount needs a cgroup2 hierarchy on this host")
            config = dataclasses.replace(
                bundle.config,
                cgroup=[CgroupEntry(k, p) for k, _fd, p in entries],
                binds=[
                    Bind(str(v2), b.dst, b.read_only) if i in bundle.cgroup_mounts else b
                    for i, b in enumerate(bundle.config.binds)
                ],
            )
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as gate:
                _unix_call(gate.bind, os.path.join(directory, "start.sock"))
                gate.listen(4)
                child_side.append(gate.detach())
            ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            undo.callback(ctl.close)
            child_side.append(ctl_child.detach())
            fds = [child_side[-1], 0, 1, 2, *range(3, 3 + preserve_fds), *child_side[:-1]]
            try:
                slot = _spawn_pid1(config, fds)
            except SetupError as exc:
                raise RuntimeError_(str(exc)) from None
        finally:
            for fd in child_side:
                os.close(fd)
        proc = Pid1(cid, ctl, time.monotonic_ns())
        proc.slot = slot
        undo.callback(self._kill_setup, slot.pidfd)
        self._drive(proc, console_socket, to_gate=True)
        if bundle.oom_score_adj is not None:
            try:
                with open(f"/proc/{slot.pid}/oom_score_adj", "w") as f:
                    f.write(str(bundle.oom_score_adj))
            except OSError as exc:
                raise RuntimeError_(f"process.oomScoreAdj: writing /proc/{slot.pid}/oom_score_adj: {exc}") from None
        started = start_time(slot.pid)
        if started is None:
            raise RuntimeError_("PID 1 died during setup")
        record: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": cid,
            "pid": slot.pid,
            "bundle": bundle.path,
            "annotations": bundle.annotations,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "supervisor": {
                "starttime": started,
                "cgroup": cg.paths,
                "parents": made,
                "poststart": [[h[0], list(h[1]), list(h[2]), h[3]] for h in bundle.hooks.poststart],
                "poststop": [[h[0], list(h[1]), list(h[2]), h[3]] for h in bundle.hooks.poststop],
            },
        }
        self.store.write(cid, record)
        _run_hooks(bundle.hooks.create_runtime, json.dumps(public(record)), "createRuntime")
        if pid_file:
            _write_pid_file(pid_file, slot.pid)
        # PID 1 goes on to its gate: from here it belongs to the state.
        proc.acknowledge(Phase.EXEC)
        os.close(slot.pidfd)
        return slot.pid

    @staticmethod
    def _kill_setup(pidfd: int) -> None:
        with contextlib.suppress(OSError):
            linux.pidfd_send_signal(pidfd, _signal.SIGKILL)
        _wait_exit(pidfd, 5)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
        with contextlib.suppress(OSError):
            os.close(pidfd)

    @staticmethod
    def _drive(proc: Any, console_socket: str | None, *, to_gate: bool) -> None:
        """PID 1's setup up to its start gate (``to_gate``: the request of
        ``EXEC``), or a joining process's to its ``execve``."""
        from .._parent.pid1 import END

        proc.sock.setblocking(True)
        while True:
            record, fds = proc.receive()
            step = proc.take(record, fds)
            if proc.pty_master >= 0 and console_socket:
                master, proc.pty_master = proc.pty_master, -1
                try:
                    _send_console(console_socket, master)
                except OSError as exc:
                    raise RuntimeError_(f"--console-socket {console_socket}: {exc}") from None
                finally:
                    os.close(master)
            if step is None:
                continue
            if isinstance(step, SetupError):
                raise RuntimeError_(str(step))
            if step is END:
                if not to_gate and proc.last_phase == Phase.EXEC:
                    return
                raise RuntimeError_(f"the process died during its setup (in phase {proc.last_phase.label})")
            if to_gate and step == Phase.EXEC:
                return
            raise RuntimeError_(f"the process asked for the {step.label} step, which the OCI runtime has not")

    # -- start ------------------------------------------------------------------
    def start(self, cid: str) -> None:
        """Let the created container's PID 1 exec its process.

        Raises:
            StateError: the container does not exist or is not ``created``.
            RuntimeError_: the last steps or ``execve`` failed.
        """
        with self.store.locked(cid):
            record = self.store.read(cid)
            now = status(record)
            if now != "created":
                raise StateError(f"cannot start container {cid!r}: it is {now}, not created")
            path = os.path.join(self.store.dir(cid), "start.sock")
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as s:
                try:
                    _unix_call(s.connect, path)
                except OSError as exc:
                    raise RuntimeError_(f"cannot reach container {cid!r}'s start gate: {exc}") from None
                s.sendall(encode_pid1(Pid1Record(Record.ACK, int(Phase.EXEC))))
                failure = None
                while True:
                    try:
                        data, fds = recv_raw(s)
                    except ConnectionResetError:
                        continue
                    for fd in fds:
                        os.close(fd)
                    if not data:
                        break
                    rec = decode_pid1(data)
                    if rec.tag == Record.FAIL:
                        failure = f"setup failed in phase {Phase(rec.phase).label}: {rec.message}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if failure is not None:
                raise RuntimeError_(failure)
            hooks = record["supervisor"].get("poststart", [])
        # poststart failures are logged, not fatal (runtime.md).
        if hooks:
            try:
                state = {**public(record), "status": "running", "pid": record["pid"]}
                _run_hooks(_hooks_of(hooks), json.dumps(state), "poststart", keep_going=True)
            except RuntimeError_ as exc:
                _warn(str(exc))

    # -- state, list, ps --------------------------------------------------------
    def state(self, cid: str) -> dict[str, Any]:
        """The container's state (runtime.md's fields).

        Raises:
            StateError: it does not exist.
        """
        return public(self.store.read(cid))

    def list_all(self) -> list[dict[str, Any]]:
        """Every container's state, with its creation time."""
        out = []
        for cid in self.store.ids():
            with contextlib.suppress(StateError, ValueError, KeyError):
                record = self.store.read(cid)
                item = public(record)
                item["created"] = record.get("created", "")
                item.setdefault("pid", 0)
                out.append(item)
        return out

    def pids(self, cid: str) -> list[int]:
        """The processes of the container (its cgroup's)."""
        record = self.store.read(cid)
        return _cgroup_pids(record)

    # -- kill, pause, resume ----------------------------------------------------
    def kill(self, cid: str, sig: int, all_processes: bool = False) -> None:
        """Send ``sig`` to PID 1 (``--all``: to every process of the container).

        Raises:
            StateError: it does not exist, or is neither created nor running.
        """
        with self.store.locked(cid):
            record = self.store.read(cid)
            now = status(record)
            if now not in ("created", "running", "paused"):
                raise StateError(f"cannot kill container {cid!r}: it is {now}")
            if all_processes:
                for pid in _cgroup_pids(record):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                return
            try:
                fd = pidfd_of(record)
            except ProcessLookupError:
                raise StateError(f"cannot kill container {cid!r}: it is stopped") from None
            try:
                linux.pidfd_send_signal(fd, sig)
            finally:
                os.close(fd)

    def pause(self, cid: str, freeze: bool) -> None:
        """Freeze (``pause``) or thaw (``resume``) the container's cgroup.

        Raises:
            StateError: it is not running (pause) or not paused (resume).
            RuntimeError_: no freezer is available.
        """
        with self.store.locked(cid):
            record = self.store.read(cid)
            now = status(record)
            want = "running" if freeze else "paused"
            if now != want:
                raise StateError(f"cannot {'pause' if freeze else 'resume'} container {cid!r}: it is {now}")
            if not freeze_cgroup(record, freeze):
                raise RuntimeError_(
                    f"container {cid!r} has no freezer (no cgroup.freeze nor freezer.state in its cgroup)"
                )

    # -- delete -----------------------------------------------------------------
    def delete(self, cid: str, force: bool = False) -> None:
        """Remove a stopped container (``--force``: kill it first).

        Raises:
            StateError: it does not exist, or is not stopped and not forced.
            RuntimeError_: its cgroup could not be removed.
        """
        with self.store.locked(cid):
            record = self.store.read(cid)
            now = status(record)
            if now != "stopped":
                if not force:
                    raise StateError(f"cannot delete container {cid!r}: it is {now}, not stopped")
                with contextlib.suppress(ProcessLookupError):
                    fd = pidfd_of(record)
                    try:
                        linux.pidfd_send_signal(fd, _signal.SIGKILL)
                        _wait_exit(fd, 10)
                    finally:
                        os.close(fd)
            extra = record["supervisor"]
            from .._parent.cgroups import sweep_paths

            try:
                # Thawed first, so that the kill of what is left can land.
                with contextlib.suppress(OSError):
                    freeze_cgroup(record, False)
                sweep_paths(extra.get("cgroup", []), 10)
            except (OSError, ValueError) as exc:
                raise RuntimeError_(f"delete container {cid!r}: {exc}") from None
            _cgroup.remove_parents(extra.get("parents", []))
            hooks = extra.get("poststop", [])
            state = json.dumps({**public(record), "status": "stopped"})
            self.store.remove(cid)
        if hooks:
            try:
                _run_hooks(_hooks_of(hooks), state, "poststop", keep_going=True)
            except RuntimeError_ as exc:
                _warn(str(exc))

    # -- exec -------------------------------------------------------------------
    def exec(
        self,
        cid: str,
        process: dict[str, Any] | None,
        args: list[str],
        *,
        tty: bool | None = None,
        console_socket: str | None = None,
        pid_file: str | None = None,
        preserve_fds: int = 0,
    ) -> tuple[int, int]:
        """Start another process in the running container, as its config's
        process is set up (user, capabilities, rlimits, seccomp), with
        ``process`` (a runtime-spec process object) or ``args`` instead.

        Returns:
            the process's host pid and a pidfd of it (a child of ours).

        Raises:
            StateError: the container does not exist or is not running.
            BundleError: ``process`` cannot be honoured (naming its field).
            RuntimeError_: entering the container failed.
        """
        from .._parent.oneshot import _spawn_pid1
        from .._parent.pid1 import Pid1

        record = self.store.read(cid)
        now = status(record)
        if now != "running":
            raise StateError(f"cannot exec in container {cid!r}: it is {now}, not running")
        with open(os.path.join(record["bundle"], "config.json"), "rb") as f:
            doc = json.load(f)
        if process is not None and "args" in process:
            doc["process"] = process  # a whole process (--process)
        elif args:
            # The container's process with these args, and --cwd, --env,
            # --user over it (``process`` holds them, env to be added).
            base = dict(doc.get("process", {}))
            overrides = dict(process or {})
            added = overrides.pop("env", [])
            doc["process"] = {**base, **overrides, "args": args, "env": [*base.get("env", []), *added]}
            if "user" in overrides:  # its umask stays the container's
                doc["process"]["user"] = {"umask": base.get("user", {}).get("umask"), **overrides["user"]}
            if overrides.get("user", {}).get("uid", 0) != 0:
                # Another uid than root's keeps only the bounding set, as
                # execve leaves it without file capabilities.
                caps = dict(base.get("capabilities", {}))
                for name in ("effective", "permitted", "ambient", "inheritable"):
                    caps.pop(name, None)
                doc["process"]["capabilities"] = caps
        else:
            raise RuntimeError_("exec needs a command or --process")
        if tty is not None:
            doc["process"]["terminal"] = tty
        # The container's mounts are made already: only the process counts.
        doc["mounts"] = []
        doc.get("linux", {}).pop("sysctl", None)
        doc.get("linux", {}).pop("resources", None)
        doc.pop("hooks", None)
        resolved = _bundle.resolve(doc, record["bundle"])
        if resolved.config.tty and not console_socket:
            raise RuntimeError_("a terminal needs --console-socket")
        paths = record["supervisor"]["cgroup"]
        v2 = next((p for p in paths if os.path.exists(os.path.join(p, "cgroup.controllers"))), None)
        entries = entry_fds_of(v2, [p for p in paths if p != v2])
        try:
            target = pidfd_of(record)
            entries.append(("pidfd", target, ""))
            config = dataclasses.replace(
                resolved.config,
                start_gate=False,
                join=True,
                cgroup=[CgroupEntry(k, p) for k, _fd, p in entries[:-1]],
                binds=[],
                tmpfs=[],
                sysctls=[],
                mount_order="",
                devices=[],
                rootfs_propagation=0,
                # The namespaces it joined by path are the container's now:
                # entered, with the rest, through its PID 1.
                ns_paths=[],
                clone_flags=resolved.config.clone_flags | sum(p.kind for p in resolved.config.ns_paths),
            )
            ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            with ctl, ctl_child:
                fds = [ctl_child.fileno(), 0, 1, 2, *range(3, 3 + preserve_fds), *(fd for _k, fd, _p in entries)]
                try:
                    slot = _spawn_pid1(config, fds)
                except SetupError as exc:
                    raise RuntimeError_(str(exc)) from None
                ctl_child.close()
                proc = Pid1(cid, ctl, time.monotonic_ns())
                proc.slot = slot
                try:
                    self._drive(proc, console_socket, to_gate=False)
                except BaseException:
                    self._kill_setup(slot.pidfd)
                    raise
        except ProcessLookupError:
            raise StateError(f"cannot exec in container {cid!r}: it is stopped") from None
        finally:
            for _k, fd, _p in entries:
                os.close(fd)
        if pid_file:
            _write_pid_file(pid_file, slot.pid)
        return slot.pid, slot.pidfd

    # -- run --------------------------------------------------------------------
    @staticmethod
    def wait(pidfd: int) -> int:
        """Wait for the container's PID 1 (a child of ours) to exit; its exit code as a shell gives it."""
        while True:
            try:
                res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _WALL)
            except ChildProcessError:
                return 255
            except InterruptedError:
                continue
            if res is None:
                continue
            if res.si_code == os.CLD_EXITED:
                return res.si_status
            return 128 + res.si_status


def _write_pid_file(path: str, pid: int) -> None:
    """``--pid-file``: written whole or not at all (a new file renamed over it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _hooks_of(items: list[Any]) -> tuple[Hook, ...]:
    """Hooks as the record keeps them (JSON lists), as :func:`_run_hooks` takes them."""
    return tuple((h[0], tuple(h[1]), tuple(h[2]), h[3]) for h in items)


def _warn(text: str) -> None:
    os.write(2, f"supervisor-oci: warning: {text}\n".encode())


def _cgroup_pids(record: dict[str, Any]) -> list[int]:
    from .._parent.cgroups.files import procs

    for path in record["supervisor"].get("cgroup", []):
        with contextlib.suppress(OSError):
            return procs(path)
    return [record["pid"]] if alive(record) else []


def _unix_call(call: Callable[[str], None], path: str) -> None:
    """``call`` (a socket's bind or connect) on ``path``, through its folder's
    descriptor where the path is too long for ``sockaddr_un``."""
    if len(path.encode()) < 108:
        call(path)
        return
    dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
    try:
        call(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
    finally:
        os.close(dfd)
