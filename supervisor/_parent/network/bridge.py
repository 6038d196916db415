"""One container on its bridge: the address reserved, the veth connected,
the address freed; blocking steps for worker threads, and their async forms.

Per container, in two steps. :func:`allocate` needs no container: the
supervisor starts it as soon as the run is prepared, so it runs while PID 1
is cloned and goes through its first phases. Under the allocation lock, it
reclaims dead owners' entries, picks an address, records it, and makes sure
the bridge exists (created on first use, with the subnet's first address).
:func:`connect` runs while PID 1 waits in its ``NETWORK`` request.
:func:`detach` frees the address and leaves the rest to the supervisor's
:class:`~.janitor.Janitor`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from ..rundir import owner_token, register_sweeper
from . import netlink
from .janitor import VETH_GRACE
from .pool import VETH_PREFIX, Attachment, Steps, bridge_name, load, locked, pick, reclaim, store

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

    from .janitor import Janitor

_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("supervisor_netlink_limiter")
#: Concurrent netlink workers per event loop (the kernel's RTNL lock
#: serialises most of the work anyway).
NETLINK_THREADS = 4


def _limiter() -> anyio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(NETLINK_THREADS)
        _LIMITER.set(limiter)
        return limiter


def allocate_blocking(subnet: str, fixed_ip: str | None, cid: str, janitor: Janitor, wait: bool = True) -> Attachment:
    """Reserve an address on the subnet's bridge, creating the bridge if needed.

    Needs no container, so the supervisor runs it while PID 1 is still in its
    earlier phases. When the bridge already has users (so it exists: deleting
    it needs the lock and no users), this is only a few reads and writes of
    the state file; creating the bridge takes netlink requests.

    Args:
        subnet: the bridge's IPv4 subnet.
        fixed_ip: the address to use, or ``None`` to allocate one.
        cid: the container's id (recorded with the allocation).
        janitor: deletes the veths of dead owners' reclaimed entries.
        wait: if false, never block: raise :class:`BlockingIOError` when the
            lock is taken or the bridge may need creating.

    Returns:
        the :class:`Attachment` to pass to :func:`.netlink.connect_blocking`; free it
        with :func:`release_blocking` whatever happens next.

    Raises:
        ValueError: the fixed address is taken, or the subnet is full.
        OSError: a netlink request failed, or the subnet clashes with the host.
        BlockingIOError: ``wait`` is false and this would block.
    """
    step = Steps()
    net = ipaddress.IPv4Network(subnet)
    bridge = bridge_name(subnet)
    veth = VETH_PREFIX + secrets.token_hex(5)
    with locked(wait):
        state = load(bridge, subnet)
        janitor.schedule(reclaim(state), 0.0)
        # The bridge is known to be complete if it has users (deleting it needs
        # the lock and no users) or was checked and not deleted since; the
        # sysfs lookup catches a bridge deleted by hand.
        first = not (state["entries"] or state.get("bridge_ok")) or not os.path.exists(f"/sys/class/net/{bridge}")
        if first and not wait:
            raise BlockingIOError(errno.EWOULDBLOCK, f"bridge {bridge} may need creating")
        address = pick(state, net, fixed_ip)
        state["entries"][address] = {"owner": owner_token(), "cid": cid, "veth": veth}
        store(bridge, state)
        if first:
            try:
                with netlink.iproute() as ipr:
                    step("open")
                    netlink.ensure_bridge(ipr, bridge, net)
                state["bridge_ok"] = True
                store(bridge, state)
            except BaseException:
                del state["entries"][address]
                store(bridge, state)
                raise
    step("allocate")
    gateway = str(net.network_address + 1)
    return Attachment(cid, bridge, subnet, address, gateway, veth, tuple(step.steps))


def release_blocking(bridge: str, subnet: str, address: str, janitor: Janitor, wait: bool = True) -> bool:
    """Free ``address``; True if the bridge has no live user left.

    Args:
        bridge: the bridge's name.
        subnet: its subnet.
        address: the container's address (only our own entry is removed).
        janitor: deletes the veths of dead owners' reclaimed entries.
        wait: wait for the lock; if false, raise instead of waiting.

    Returns:
        whether the bridge should now be deleted.

    Raises:
        BlockingIOError: ``wait`` is false and the lock is taken.
    """
    with locked(wait):
        state = load(bridge, subnet)
        entry = state["entries"].get(address)
        if entry is not None and entry["owner"] == owner_token():
            del state["entries"][address]
        janitor.schedule(reclaim(state), 0.0)
        store(bridge, state)
        return not state["entries"]


def delete_bridge_if_unused(bridge: str, subnet: str) -> list[str]:
    """Delete the bridge unless someone started using it again (blocking).

    Runs under the allocation lock, so no one can attach to the bridge while
    it goes. Ports still attached (veths of containers whose namespace is
    dying) are detached by the kernel. The veths of dead owners' entries are
    deleted too.

    Returns:
        one message per veth that could not be deleted.

    Raises:
        OSError: the bridge could not be deleted.
    """
    with locked():
        state = load(bridge, subnet)
        stale = reclaim(state)
        in_use = bool(state["entries"])
        if not in_use:
            state["bridge_ok"] = False
        store(bridge, state)  # removes the file when nobody is left
        errors = netlink.delete_links(stale)
        if not in_use:
            netlink.delete_bridge(bridge)
    return errors


def _sweep_lease(record: dict[str, Any]) -> None:
    """Sweeper for a dead supervisor's ``net-lease`` record (see :mod:`..rundir`).

    Its allocation entries are reclaimed (their owner is dead), the veths they
    name are deleted if an orphaned socket kept them alive, and the bridge
    goes if nobody else uses it.

    Raises:
        OSError: a veth or the bridge could not be deleted (the record stays
            for the next sweep).
    """
    errors = delete_bridge_if_unused(str(record["bridge"]), str(record["subnet"]))
    if errors:
        raise OSError(errno.EBUSY, "; ".join(errors))


register_sweeper("net-lease", _sweep_lease)


async def allocate(subnet: str, fixed_ip: str | None, cid: str, janitor: Janitor) -> Attachment:
    """Reserve an address on the subnet's bridge (see :func:`allocate_blocking`).

    Args:
        subnet: the bridge's IPv4 subnet (``Spec.subnet``).
        fixed_ip: ``Spec.ip``, or ``None`` to allocate an address.
        cid: the container's id.
        janitor: the supervisor's network janitor.

    Returns:
        the :class:`Attachment`; pass it to :func:`connect`, and to
        :func:`detach` when the container is gone.

    Raises:
        ValueError: the fixed address is taken, or the subnet is full.
        OSError: netlink refused, or the subnet clashes with a host address.

    **Cancellation:** the worker thread (needed only to create the bridge or
    when the lock is taken) always runs to completion and its result is
    returned; a cancellation is delivered at the caller's next checkpoint, so
    the caller can record the address first.
    """
    try:
        # Usually the bridge exists and the lock is free: then this is a few
        # small reads and writes on a tmpfs, cheaper inline than in a thread.
        return allocate_blocking(subnet, fixed_ip, cid, janitor, wait=False)
    except BlockingIOError:
        return await anyio.to_thread.run_sync(allocate_blocking, subnet, fixed_ip, cid, janitor, limiter=_limiter())


async def connect(att: Attachment, pid: int, pidfd: int) -> Attachment:
    """Create the veth and configure the container's side (see :func:`.netlink.connect_blocking`).

    Args:
        att: what :func:`allocate` returned.
        pid: host PID of PID 1.
        pidfd: PID 1's pidfd.

    Returns:
        ``att``, with the timings of these steps added.

    Raises:
        OSError: netlink refused, or PID 1 died (:class:`ProcessLookupError`).

    **Cancellation:** as :func:`allocate`: the worker thread runs to completion.
    Whatever it created dies with the container's network namespace.
    """
    return await anyio.to_thread.run_sync(netlink.connect_blocking, att, pid, pidfd, limiter=_limiter())


async def detach(att: Attachment, janitor: Janitor) -> None:
    """Free the container's address; delete the bridge later if it was the last.

    Never waits for the veth (it dies with the container's network namespace)
    nor for the bridge's deletion (a background thread; see
    :meth:`.Janitor.wait_idle`).

    Args:
        att: what :func:`allocate` returned.
        janitor: the supervisor's network janitor (the bridge's deletion and
            the veth's, if it outlives its namespace).

    **Cancellation:** shielded: the address is always freed.
    """
    with anyio.CancelScope(shield=True):
        try:
            try:
                # Usually the lock is free: then this is a few small reads and
                # writes on a tmpfs, cheaper inline than a trip to a worker thread.
                last = release_blocking(att.bridge, att.subnet, att.address, janitor, wait=False)
            except BlockingIOError:
                last = await anyio.to_thread.run_sync(
                    release_blocking, att.bridge, att.subnet, att.address, janitor, limiter=_limiter()
                )
            if last:
                janitor.delete_bridge_later(att.bridge, att.subnet)
        finally:
            janitor.schedule([att.veth], VETH_GRACE)  # whatever happened to the address
