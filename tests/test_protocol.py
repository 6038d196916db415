"""The supervisor's side of the setup protocol, over a real SEQPACKET socketpair.

These drive :class:`supervisor._parent.container.ContainerProcess` with records
written by the test in place of PID 1, to pin down orderings that a real
container produces only by chance.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
import time

import anyio
import pytest

from supervisor import Phase, ProtocolError, SetupError
from supervisor._parent.container import ContainerProcess
from supervisor._parent.spawn import Slot
from supervisor._protocol import HEADER, MARK, Pid1Record, Record, SpawnConfig, decode_pid1, encode_pid1

pytestmark = pytest.mark.anyio


def _container() -> tuple[ContainerProcess, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    ours.setblocking(False)
    proc = ContainerProcess("t", ours, time.monotonic_ns())
    slot = Slot()
    slot.exit_code, slot.exit_status = 1, 125  # CLD_EXITED, as PID 1 exits after a failure
    slot.exited.set()
    slot.reaped = True
    proc.slot = slot
    return proc, theirs


async def test_failure_report_wins_over_the_reset_of_an_unread_answer() -> None:
    """PID 1 sends FAIL and exits with our NETWORK answer unread: the kernel
    reports a reset before the queued FAIL; the FAIL must still be the cause."""
    proc, pid1 = _container()
    now = time.monotonic_ns()
    try:
        early = (Phase.SPAWNED, Phase.USERNS, Phase.CGROUP, Phase.NETWORK)
        request = Pid1Record(Record.REQUEST, int(Phase.NETWORK), marks=tuple((int(p), now) for p in early))
        pid1.send(encode_pid1(request))
        pid1.send(encode_pid1(Pid1Record(Record.PHASE, marks=((int(Phase.HOSTNAME), now), (int(Phase.ROOTFS), now)))))
        pid1.send(encode_pid1(Pid1Record(Record.FAIL, int(Phase.MOUNTS), errno.EIO, message="boom")))
        proc.sock.send(encode_pid1(Pid1Record(Record.ACK, int(Phase.NETWORK))))  # never read by PID 1
        pid1.close()
        # No parent step is set: the answer is only an ACK, to a closed socket.
        with anyio.fail_after(5), pytest.raises(SetupError) as info:
            await proc.drive_setup()
        assert info.value.phase is Phase.MOUNTS
        assert info.value.message == "boom"
    finally:
        proc.sock.close()


async def test_phase_out_of_order_is_a_protocol_error() -> None:
    proc, pid1 = _container()
    now = time.monotonic_ns()
    try:
        pid1.send(encode_pid1(Pid1Record(Record.PHASE, marks=((int(Phase.MOUNTS), now), (int(Phase.ROOTFS), now)))))
        with anyio.fail_after(5), pytest.raises(ProtocolError, match="rootfs after mounts"):
            await proc.drive_setup()
    finally:
        pid1.close()
        proc.sock.close()


async def test_malformed_record_is_a_protocol_error() -> None:
    proc, pid1 = _container()
    try:
        pid1.send(b"short")
        with anyio.fail_after(5), pytest.raises(ProtocolError, match="malformed"):
            await proc.drive_setup()
    finally:
        pid1.close()
        proc.sock.close()


def test_the_c_side_reads_exactly_the_declared_spawn_configuration() -> None:
    """PID 1's plan is filled from these fields, no more, no fewer."""
    from supervisor._child import _spawn

    declared = {f.name for f in dataclasses.fields(SpawnConfig)}
    assert set(_spawn.CONFIG_FIELDS) == declared
    assert len(_spawn.CONFIG_FIELDS) == len(declared)


def test_the_c_side_has_the_declared_record_layouts() -> None:
    from supervisor._child import _spawn

    assert HEADER.struct.size == _spawn.HEADER_SIZE
    assert MARK.struct.size == _spawn.MARK_SIZE


def test_records_round_trip_and_malformed_ones_are_refused() -> None:
    record = Pid1Record(Record.FAIL, int(Phase.MOUNTS), errno.ENOENT, ((1, 5), (7, 9)), "mount(...) failed")
    assert decode_pid1(encode_pid1(record)) == record
    with pytest.raises(ValueError, match="malformed"):
        decode_pid1(encode_pid1(record)[:-30])
    with pytest.raises(ValueError, match="unknown type"):
        decode_pid1(b"\x63" + encode_pid1(record)[1:])
