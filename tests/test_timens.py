"""The container's time namespace: private by default, ``Spec.time_offsets``
and ``--time-offset`` shift its monotonic and boot-time clocks."""

from __future__ import annotations

import math
import os
import sys
import time
from functools import partial
from typing import Any

import anyio
import pytest
from _util import run_with_repo

import supervisor
from supervisor import Spec
from supervisor._parent import config
from supervisor._sys import linux

pytestmark = pytest.mark.anyio

needs_timens = pytest.mark.skipif(
    not linux.has_time_namespaces(), reason="this kernel has no time namespaces (Linux 5.6+, CONFIG_TIME_NS)"
)
#: The payload itself (not only a forked one) enters its time namespace at execve.
needs_exec_timens = pytest.mark.skipif(
    not (linux.has_time_namespaces() and linux.exec_enters_time_namespace()),
    reason="this kernel's execve does not enter a time namespace (Linux 6.2+)",
)

#: What a container reads, with the host's clocks read right after: python3
#: from the embedded default root (the host's /usr).
CLOCKS = "import time; print(time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME))"


async def clocks(**spec: Any) -> tuple[float, float, float, float]:
    """(monotonic, boottime) inside a container, then the same on the host."""
    result = await supervisor.run(Spec(["python3", "-c", CLOCKS], **spec))
    host = time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)
    assert result.exit_code == 0, result.stderr
    mono, boot = map(float, result.stdout.split())
    return mono, boot, *host


@needs_exec_timens
async def test_every_container_has_a_time_namespace_of_its_own(busybox: str) -> None:
    script = "readlink /proc/self/ns/time; readlink /proc/self/ns/time_for_children; cut -d' ' -f1 /proc/uptime"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox))
    host_uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    ns, for_children, uptime = result.stdout.decode().split()
    assert ns == for_children != os.readlink("/proc/self/ns/time")
    # No offsets asked for: the supervisor's clocks.
    assert abs(float(uptime) - host_uptime) < 5


@needs_timens
@pytest.mark.parametrize("init", [False, True])
async def test_offsets_shift_the_containers_clocks(init: bool) -> None:
    if not (init or linux.exec_enters_time_namespace()):
        pytest.skip("this kernel's execve does not enter a time namespace (Linux 6.2+)")
    mono, boot, host_mono, host_boot = await clocks(
        time_offsets={"monotonic": 86_400, "boottime": 2 * 86_400}, init=init
    )
    assert 0 <= host_mono + 86_400 - mono < 5
    assert 0 <= host_boot + 2 * 86_400 - boot < 5
    # Either clock alone; fractions and negative offsets (within the uptime).
    mono, boot, host_mono, host_boot = await clocks(time_offsets={"monotonic": -1.5}, init=init)
    assert 0 <= host_mono - 1.5 - mono < 5
    assert 0 <= host_boot - boot < 5


@needs_timens
async def test_with_init_the_payload_is_in_it_and_the_init_is_not(busybox: str) -> None:
    """The payload (PID 2) enters the namespace at its fork; the init keeps the
    supervisor's clocks. (The init's own /proc entries are the host root's:
    the payload cannot read them, so they are read from the host.)"""
    script = "readlink /proc/self/ns/time; cut -d' ' -f1 /proc/uptime; sleep 100"
    spec = Spec(["sh", "-c", script], rootfs=busybox, init=True, time_offsets={"boottime": 10_000})
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, spec, capture_output=False, stdout=supervisor.PIPE, check=False))
        assert handle.stdout is not None
        out = b""
        with anyio.fail_after(10):
            while out.count(b"\n") < 2:
                out += await handle.stdout.receive()
        payload_ns, uptime = out.decode().split()
        assert os.readlink(f"/proc/{handle.pid}/ns/time") == os.readlink("/proc/self/ns/time") != payload_ns
        assert float(uptime) > time.clock_gettime(time.CLOCK_BOOTTIME) + 9_000
        handle.kill()
        await handle.wait()


@pytest.mark.parametrize(
    ("offsets", "error", "match"),
    [
        ({"realtime": 1}, ValueError, "unknown clock 'realtime'"),
        ({"monotonic": True}, TypeError, "must be a number"),
        ({"monotonic": "5"}, TypeError, "must be a number"),
        ({"boottime": math.nan}, ValueError, "not within"),
        ({"boottime": 101 * 365 * 86_400}, ValueError, "not within"),
        ([("monotonic", 1)], TypeError, "must be a mapping"),
    ],
)
def test_offsets_are_validated(offsets: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=r"Spec\.time_offsets.*" + match):
        Spec(["true"], time_offsets=offsets)


@needs_timens
def test_an_offset_below_zero_is_refused_before_the_start() -> None:
    spec = Spec(["true"], time_offsets={"monotonic": -(time.monotonic() + 1_000)}, init=True)
    with pytest.raises(ValueError, match=r"Spec\.time_offsets: monotonic=.* below zero"):
        spec.check_host()


def test_without_time_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without them: no namespace (nothing asked for it), and offsets
    are refused naming the field."""
    monkeypatch.setattr(linux, "has_time_namespaces", lambda: False)
    cfg = config.build_config(Spec(["true"]), "host")
    assert (cfg.time_namespace, cfg.time_offsets) == (False, [])
    with pytest.raises(ValueError, match=r"Spec\.time_offsets: this kernel has no time namespaces"):
        Spec(["true"], time_offsets={"boottime": 1}).check_host()


@needs_timens
async def test_before_linux_6_2_only_a_forked_payload_gets_one(monkeypatch: pytest.MonkeyPatch, busybox: str) -> None:
    """Where execve does not enter the namespace, the payload itself would stay
    outside it and could not vfork: no namespace then without init, offsets
    refused naming init, and with init the payload is in one."""
    monkeypatch.setattr(linux, "exec_enters_time_namespace", lambda: False)
    assert not config.build_config(Spec(["true"]), "host").time_namespace
    assert config.build_config(Spec(["true"], init=True), "host").time_namespace
    with pytest.raises(ValueError, match=r"Spec\.time_offsets: .*Linux 6\.2\+\): give init=True"):
        Spec(["true"], time_offsets={"boottime": 1}).check_host()
    script = "readlink /proc/self/ns/time; readlink /proc/self/ns/time_for_children"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox))
    ns, for_children = result.stdout.decode().split()
    assert ns == for_children == os.readlink("/proc/self/ns/time")
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, init=True))
    ns, for_children = result.stdout.decode().split()
    assert ns == for_children != os.readlink("/proc/self/ns/time")


def test_exec_enters_time_namespace_reads_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    import os as _os

    for release, want in [("6.1.0-57-amd64", False), ("6.2.0", True), ("6.18.44-fc", True), ("5.19.1", False),
                          ("10.0", True), ("weird", False)]:  # fmt: skip
        linux.exec_enters_time_namespace.cache_clear()
        monkeypatch.setattr(_os, "uname", lambda r=release: _os.uname_result(("Linux", "h", r, "#1", "x86_64")))
        assert linux.exec_enters_time_namespace() is want, release
    monkeypatch.undo()
    linux.exec_enters_time_namespace.cache_clear()


def test_offsets_are_relative_to_the_supervisors_clocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel takes offsets against the initial namespace: a supervisor in
    a shifted namespace of its own adds its own, so a container's clocks are
    the supervisor's plus what was asked (zero lines are left out)."""
    monkeypatch.setattr(linux, "has_time_namespaces", lambda: True)
    monkeypatch.setattr(linux, "exec_enters_time_namespace", lambda: True)
    monkeypatch.setattr(linux, "own_time_offsets", lambda: {"monotonic": 0, "boottime": 5_000_000_000})
    cfg = config.build_config(Spec(["true"], time_offsets={"monotonic": -1.25, "boottime": 2}), "host")
    assert cfg.time_namespace
    assert [(o.clock, o.seconds, o.nanoseconds) for o in cfg.time_offsets] == [
        ("monotonic", -2, 750_000_000),
        ("boottime", 7, 0),
    ]
    assert config.build_config(Spec(["true"]), "host").time_offsets[0].clock == "boottime"
    monkeypatch.setattr(linux, "own_time_offsets", lambda: {"monotonic": 0, "boottime": 0})
    assert config.build_config(Spec(["true"]), "host").time_offsets == []


@needs_exec_timens
def test_cli_time_offset(busybox: str) -> None:
    argv = [sys.executable, "-m", "supervisor", "run", "-m", busybox]
    out = run_with_repo(
        [*argv, "--time-offset", "monotonic=100,boottime=50000", "--", "cut", "-d.", "-f1", "/proc/uptime"]
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= int(time.clock_gettime(time.CLOCK_BOOTTIME)) + 49_000
    out = run_with_repo([*argv, "--time-offset", "monotonic", "--", "true"])
    assert out.returncode == 125
    assert "--time-offset 'monotonic' is not CLOCK=SECONDS" in out.stderr
    out = run_with_repo([*argv, "--time-offset", "uptime=1", "--", "true"])
    assert (out.returncode, out.stderr.count("\n")) == (125, 1)
    assert "Spec.time_offsets: unknown clock 'uptime'" in out.stderr
