"""The supervisor's side of the setup protocol, over a real SEQPACKET socketpair.

These drive :class:`supervisor._parent.container.ContainerProcess` with records
written by the test in place of PID 1, to pin down orderings that a real
container produces only by chance.
"""

from __future__ import annotations

import errno
import socket
import time

import anyio
import pytest

from supervisor import Phase, ProtocolError, SetupError
from supervisor._parent.container import ContainerProcess
from supervisor._parent.forkserver import ForkServerClient, Slot
from supervisor._protocol import Tag, encode

pytestmark = pytest.mark.anyio


def _container() -> tuple[ContainerProcess, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    ours.setblocking(False)
    proc = ContainerProcess("t", ours, 100_000, 65_536, time.monotonic_ns())
    slot = Slot()
    slot.exit_code, slot.exit_status = 1, 125  # CLD_EXITED, as PID 1 exits after a failure
    slot.exited.set()
    proc.slot = slot
    return proc, theirs


async def test_failure_report_wins_over_the_reset_of_an_unread_answer() -> None:
    """PID 1 sends FAIL and exits with our CGROUP answer unread: the kernel
    reports a reset before the queued FAIL; the FAIL must still be the cause."""
    proc, pid1 = _container()
    now = time.monotonic_ns()
    try:
        pid1.send(encode({"t": Tag.REQUEST, "phase": int(Phase.USERNS), "ts": now, "before": [[1, now]]}))
        # Answered by the parent: here we only need the next records queued.
        pid1.send(encode({"t": Tag.PHASE, "list": [[int(Phase.CGROUP), now], [int(Phase.NETWORK), now]]}))
        pid1.send(encode({"t": Tag.FAIL, "phase": int(Phase.MOUNTS), "errno": errno.EIO, "message": "boom"}))
        proc.sock.send(encode({"t": Tag.ACK, "phase": int(Phase.CGROUP)}))  # never read by PID 1
        pid1.close()
        with anyio.fail_after(5), pytest.raises(SetupError) as info:
            await _drive_without_userns(proc)
        assert info.value.phase is Phase.MOUNTS
        assert info.value.message == "boom"
    finally:
        proc.sock.close()


async def _drive_without_userns(proc: ContainerProcess) -> None:
    """Drive setup with the parent steps stubbed out (USERNS would write a real
    /proc/<pid>/uid_map; the ACKs are already queued by the test)."""

    async def no_userns(phase: Phase) -> None:
        return None

    proc._answer = no_userns  # type: ignore[method-assign]
    await proc.drive_setup(ForkServerClient())


async def test_phase_out_of_order_is_a_protocol_error() -> None:
    proc, pid1 = _container()
    now = time.monotonic_ns()
    try:
        pid1.send(encode({"t": Tag.PHASE, "list": [[int(Phase.MOUNTS), now], [int(Phase.ROOTFS), now]]}))
        with anyio.fail_after(5), pytest.raises(ProtocolError, match="rootfs after mounts"):
            await proc.drive_setup(ForkServerClient())
    finally:
        pid1.close()
        proc.sock.close()


async def test_malformed_record_is_a_protocol_error() -> None:
    proc, pid1 = _container()
    try:
        pid1.send(b"not json")
        with anyio.fail_after(5), pytest.raises(ProtocolError, match="malformed"):
            await proc.drive_setup(ForkServerClient())
    finally:
        pid1.close()
        proc.sock.close()
