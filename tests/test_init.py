"""``Spec(init=True)`` / ``--init``: a tiny init as PID 1, the payload as PID 2.

Each test runs real containers and looks only at what it started: the
processes below its own container's PID 1 (by host PID and start time).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import pytest
from _util import descendants, proc_state, run_with_repo

import supervisor
from supervisor import Phase, SetupError, Spec

pytestmark = pytest.mark.anyio

CAP_KILL = 5


def status_fields(pid: int | str, *names: str) -> dict[str, str]:
    """Fields of ``/proc/<pid>/status`` (the host's, or a container's text)."""
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f) if k in names}


def parse_status(text: str, *names: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k in names}


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


def caught(pid: int, sig: int) -> bool:
    return bool(int(status_fields(pid, "SigCgt")["SigCgt"], 16) & (1 << (sig - 1)))


# -- PID 1 and PID 2 ----------------------------------------------------------


async def test_init_is_pid_1_and_the_payload_pid_2(busybox: str) -> None:
    # The init takes its name once it saw the payload's execve: a payload that
    # looks at once may be first.
    wait = "while [ $(cat /proc/1/comm) = sv-pid1-setup ]; do sleep 0.01; done"
    script = f"echo $$; {wait}; cat /proc/1/comm; grep PPid /proc/$$/status"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, init=True))
    assert result.exit_code == 0, result.stderr
    pid, comm, ppid = result.stdout.decode().splitlines()
    assert (pid, comm, ppid.split()) == ("2", "sv-init", ["PPid:", "1"])
    # Without init the payload is PID 1, as before.
    plain = await supervisor.run(Spec(["sh", "-c", "echo $$"], rootfs=busybox))
    assert plain.stdout == b"1\n"


async def test_init_holds_only_its_signalfd(busybox: str) -> None:
    """The init keeps none of the payload's descriptors: its pipes see
    end-of-file when the payload closes them, not when the init exits."""
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, check=False), Spec(["sleep", "100"], rootfs=busybox, init=True))
        fds = os.listdir(f"/proc/{handle.pid}/fd")
        assert len(fds) == 1
        assert os.readlink(f"/proc/{handle.pid}/fd/{fds[0]}") == "anon_inode:[signalfd]"
        handle.kill()
        await handle.wait()


#: kcmp(2): whether two processes share one memory (<linux/kcmp.h> KCMP_VM).
_SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(os.uname().machine)
_KCMP_VM = 1


def _same_memory(a: int, b: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    res = libc.syscall(_SYS_KCMP, a, b, _KCMP_VM, 0, 0)
    assert res >= 0, os.strerror(ctypes.get_errno())
    return res == 0


@pytest.mark.skipif(_SYS_KCMP is None, reason="kcmp(2) number unknown on this architecture")
async def test_an_idle_init_has_no_memory_of_its_own(busybox: str) -> None:
    """The init goes on in the memory PID 1 was cloned with, the supervisor's
    (CLONE_VM): it costs no pages of its own, however much the supervisor
    works meanwhile; the payload has a memory of its own."""
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, check=False), Spec(["sleep", "100"], rootfs=busybox, init=True))
        for _ in range(20):
            assert (await sup.run(Spec(["true"], rootfs=busybox, env={"PAD": "x" * 4096}), check=False)).ok
        assert _same_memory(handle.pid, os.getpid())
        with open(f"/proc/{handle.pid}/task/{handle.pid}/children") as f:
            (payload,) = (int(p) for p in f.read().split())
        assert not _same_memory(payload, os.getpid())
        handle.kill()
        await handle.wait()


# -- exit status and reaping -----------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code"), [("exit 3", 3), ("exit 0", 0), ("kill -TERM $$", 143), ("kill -KILL $$", 137)]
)
async def test_exit_status_passes_through(busybox: str, script: str, code: int) -> None:
    """The container exits with the payload's code, or 128+N for signal N."""
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, init=True), check=False)
    assert (result.reason, result.exit_code, result.signal) == ("exited", code, None)


async def test_orphaned_zombies_are_reaped(busybox: str) -> None:
    """A double fork leaves an orphan that exits while the payload runs on. It
    is re-parented to PID 1: the init reaps it; a payload that is PID 1 and
    never waits (sleep) leaves it a zombie."""
    script = 'sh -c "sleep 0.1 &"; exec sleep 30'
    for init, zombies in ((True, 0), (False, 1)):
        async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
            handle = await tg.start(
                partial(sup.run, check=False), Spec(["sh", "-c", script], rootfs=busybox, init=init)
            )
            # PID 1 and the payload's sleep 30 (the same process without init),
            # and the orphan's zombie unless it was reaped.
            settled = partial(zombies_settled, handle.pid, 2 - (not init) + zombies, zombies)
            await wait_for(settled)
            await anyio.sleep(0.3)  # and it stays so
            assert settled()
            handle.kill()
            await handle.wait()


def zombies_settled(pid: int, processes: int, zombies: int) -> bool:
    """The container of PID 1 ``pid`` has that many processes, that many of them zombies."""
    states = [proc_state(p) for p in descendants(pid)]
    return len(states) == processes and states.count("Z") == zombies


# -- signals and stopping -----------------------------------------------------


async def test_stop_reaches_a_payload_without_a_handler(busybox: str) -> None:
    """The init handles SIGTERM (SigCgt), so a stop sends it, and forwards it to
    the payload, which, as PID 2, dies of it. Without init, the payload (PID 1,
    no handler) would ignore SIGTERM, so the stop goes straight to SIGKILL and
    the payload never gets to end on its own."""
    spec = Spec(["sleep", "100"], rootfs=busybox, init=True, grace_period=10)
    async with supervisor.Supervisor() as sup:
        async with anyio.create_task_group() as tg:
            handle = await tg.start(sup.run, spec)
            assert caught(handle.pid, signal.SIGTERM)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
        result = await handle.wait()
        assert (result.reason, result.exit_code, result.signal) == ("cancelled", 128 + signal.SIGTERM, None)
        assert elapsed < 5, "ended by the forwarded SIGTERM, not after the grace period"

        async with anyio.create_task_group() as tg:
            handle = await tg.start(sup.run, Spec(["sleep", "100"], rootfs=busybox, grace_period=10))
            assert not caught(handle.pid, signal.SIGTERM)
            tg.cancel_scope.cancel()
        result = await handle.wait()
        assert (result.reason, result.signal) == ("cancelled", signal.SIGKILL)


async def test_grace_period_with_init(busybox: str) -> None:
    """A payload that ignores SIGTERM gets the grace period, then the SIGKILL of
    the init ends the whole container."""
    script = 'trap "" TERM; echo ready; while :; do sleep 0.05; done'
    spec = Spec(["sh", "-c", script], rootfs=busybox, init=True, grace_period=1)
    async with supervisor.Supervisor() as sup:
        async with anyio.create_task_group() as tg:
            handle = await tg.start(partial(sup.run, spec, capture_output=False, stdout=supervisor.PIPE))
            assert handle.stdout is not None
            assert await handle.stdout.receive(6) == b"ready\n"
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
        result = await handle.wait()
    assert (result.reason, result.signal) == ("cancelled", signal.SIGKILL)
    assert 0.9 <= elapsed < 5, "SIGKILL after the grace period"


async def test_signals_are_forwarded_and_the_init_survives_many(busybox: str) -> None:
    """Every signal sent to the container goes to the payload (not SIGCHLD,
    which the init keeps); a burst of them leaves the init running."""
    script = (
        'n=0; trap "n=\\$((n+1))" USR1; trap "echo usr1 \\$n; exit 5" USR2; echo ready; while :; do sleep 0.01; done'
    )
    spec = Spec(["sh", "-c", script], rootfs=busybox, init=True)
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, spec, capture_output=False, stdout=supervisor.PIPE, check=False))
        assert handle.stdout is not None
        assert await handle.stdout.receive(6) == b"ready\n"
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH):
            assert caught(handle.pid, sig)
        for _ in range(200):
            handle.send_signal(signal.SIGUSR1)
            handle.send_signal(signal.SIGWINCH)  # default action: ignored by the payload
            await anyio.sleep(0.002)
        assert proc_state(handle.pid) in ("S", "R")
        handle.send_signal(signal.SIGUSR2)
        out = b""
        with anyio.fail_after(10):
            while not out.endswith(b"\n"):
                out += await handle.stdout.receive()
        result = await handle.wait()
    assert result.exit_code == 5
    assert out.startswith(b"usr1 ")
    assert int(out.split()[1]) >= 1  # standard signals coalesce


async def test_terminal_signals_reach_the_payload_group(busybox: str) -> None:
    """With a terminal, the payload leads the foreground process group: ^C and
    window changes reach it once, from the terminal, not also via the init."""
    result = await supervisor.run(
        Spec(["cut", "-d", " ", "-f5,6,8", "/proc/self/stat"], rootfs=busybox, tty=True, init=True)
    )
    pgrp, session, tpgid = result.stdout.decode().split()
    assert (pgrp, session, tpgid) == ("2", "1", "2")


# -- setup failures stay exact ----------------------------------------------------


async def test_death_at_execve_is_still_a_setup_failure(host_dir: Path, busybox: str) -> None:
    """A profile that kills execve kills the payload (PID 2) before it ran: the
    init reports it, once, as a failure in phase exec, not as the payload's
    own death."""
    kills_execve = host_dir / "kills-execve.json"
    rule = {"names": ["execve"], "action": "SCMP_ACT_KILL_PROCESS"}
    kills_execve.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], rootfs=busybox, seccomp=str(kills_execve), init=True), check=False)
    assert info.value.phase is Phase.EXEC
    assert "died before execve" in info.value.message
    assert "31" in info.value.message
    assert info.value.result is not None
    assert (info.value.result.reason, info.value.result.signal) == ("setup_failed", None)
    # Killed after execve: the payload's own death, passed through as 128+N.
    kills_uname = host_dir / "kills-uname.json"
    rule = {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}
    kills_uname.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    result = await supervisor.run(Spec(["uname"], rootfs=busybox, seccomp=str(kills_uname), init=True), check=False)
    assert (result.reason, result.exit_code) == ("exited", 128 + signal.SIGSYS)


async def test_failed_execve_is_reported_once_by_the_payload(host_dir: Path, busybox: str) -> None:
    """execve refused with an errno: the payload reports it itself (one FAIL
    record); the init adds nothing."""
    denies_execve = host_dir / "denies-execve.json"
    rule = {"names": ["execve"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    denies_execve.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], rootfs=busybox, seccomp=str(denies_execve), init=True))
    assert (info.value.phase, info.value.errno) == (Phase.EXEC, 1)
    assert info.value.message.startswith('execve("/bin/true") failed'), info.value.message
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["no-such-program"], rootfs=busybox, init=True))
    assert info.value.phase is Phase.EXEC
    assert "not found" in info.value.message


# -- isolation of the payload and of the init ---------------------------------------


async def test_payload_and_init_privileges(busybox: str) -> None:
    """Under init, the payload gets exactly what it gets as PID 1 (capability
    sets, no_new_privs, the seccomp filter); the init keeps only CAP_KILL of
    them, has no_new_privs, and no filter."""
    fields = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    script = "cat /proc/self/status; echo ---; cat /proc/1/status"
    with_init = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, init=True))
    plain = await supervisor.run(Spec(["sh", "-c", "cat /proc/self/status"], rootfs=busybox))
    payload_text, init_text = with_init.stdout.decode().split("---\n")
    payload = parse_status(payload_text, *fields)
    assert payload == parse_status(plain.stdout.decode(), *fields)
    assert (payload["NoNewPrivs"], payload["Seccomp"]) == ("1", "2")
    init = parse_status(init_text, *fields)
    assert int(init["CapEff"], 16) == int(init["CapPrm"], 16) == 1 << CAP_KILL
    assert (init["CapInh"], init["CapAmb"], init["CapBnd"]) == (payload["CapInh"], payload["CapAmb"], payload["CapBnd"])
    assert (init["NoNewPrivs"], init["Seccomp"]) == ("1", "0")
    # A payload of another uid: the init has no capability at all.
    other = await supervisor.run(Spec(["cat", "/proc/1/status"], rootfs=busybox, init=True, uid=1000))
    assert int(parse_status(other.stdout.decode(), "CapEff")["CapEff"], 16) == 0


async def test_init_and_payload_are_not_dumpable(busybox: str) -> None:
    """Nothing in the container can read the init's memory: it is never made
    dumpable again (its /proc files belong to the host's root)."""
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, check=False), Spec(["sleep", "100"], rootfs=busybox, init=True))
        assert os.stat(f"/proc/{handle.pid}/status").st_uid == 0  # non-dumpable: owned by root
        (payload,) = children(handle.pid)
        assert os.stat(f"/proc/{payload}/status").st_uid == 100_000  # after execve: its own uid
        handle.kill()
        await handle.wait()
    script = "for f in exe maps mem ns/time; do readlink /proc/1/$f || head -c1 /proc/1/$f || echo no-$f; done"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, init=True), check=False)
    assert result.stdout.split() == [b"no-exe", b"no-maps", b"no-mem", b"no-ns/time"], result


# -- the CLI ------------------------------------------------------------------------


def test_cli_init(busybox: str) -> None:
    out = run_with_repo(
        [sys.executable, "-m", "supervisor", "run", "--init", "-m", busybox, "--", "sh", "-c", "echo $$; exit 4"]
    )
    assert (out.returncode, out.stdout) == (4, "2\n"), out.stderr
    out = run_with_repo([sys.executable, "-m", "supervisor", "run", "--help"])
    assert "--init" in out.stdout
