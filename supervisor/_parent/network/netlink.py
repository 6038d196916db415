"""Netlink, through pyroute2: the only module that imports it, and only
inside its functions, which run in worker threads.

All netlink work goes through pyroute2's synchronous
:class:`~pyroute2.IPRoute` (its asyncio-native ``AsyncIPRoute`` cannot run
under trio). A socket inside a container's network namespace is opened by a
throw-away thread that ``setns()``-es (:func:`socket_in_netns`), never with
``IPRoute(netns=...)``, which forks from our multithreaded process.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import select
import socket
import threading

from ..._sys import constants as c
from ..._sys import linux
from .pool import CONTAINER_IFNAME, Attachment, Steps

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

_NETLINK_ROUTE = 0


def iproute(fileno: int | None = None) -> Any:
    """A pyroute2 IPRoute without multicast subscriptions (requests only)."""
    from pyroute2 import IPRoute

    if fileno is None:
        return IPRoute(groups=0)
    return IPRoute(fileno=fileno, groups=0)


def ensure_bridge(ipr: Any, bridge: str, net: ipaddress.IPv4Network) -> int:
    """The bridge's index; created (with the gateway address, up) if missing.

    Called by the bridge's first user (under the lock): a bridge left by a
    crashed supervisor is checked and completed too.

    Args:
        ipr: a host IPRoute.
        bridge: the bridge's name.
        net: its subnet.

    Raises:
        OSError: the subnet overlaps an address on another host interface, or
            an interface of that name exists and is not a bridge.
    """
    gateway = str(net.network_address + 1)
    found = ipr.link_lookup(ifname=bridge)
    if not found:
        for msg in ipr.get_addr(family=socket.AF_INET):
            addr = ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if addr.network.overlaps(net):
                label = msg.get_attr("IFA_LABEL") or f"index {msg['index']}"
                raise OSError(
                    errno.EADDRINUSE,
                    f"subnet {net} overlaps {addr} on host interface {label}: choose another Spec.subnet",
                )
        ipr.link("add", ifname=bridge, kind="bridge")
        found = ipr.link_lookup(ifname=bridge)
    index = int(found[0])
    if link_kind(ipr, index) != "bridge":
        raise OSError(errno.EEXIST, f"host interface {bridge} exists and is not a bridge: not ours, left alone")
    host_local(bridge)
    if not any(m.get_attr("IFA_ADDRESS") == gateway for m in ipr.get_addr(index=index, family=socket.AF_INET)):
        ipr.addr("add", index=index, address=gateway, prefixlen=net.prefixlen)
    ipr.link("set", index=index, state="up")
    return index


def link_kind(ipr: Any, index: int) -> str | None:
    """The ``IFLA_INFO_KIND`` of a link (``"bridge"``, ``"veth"``...), or None."""
    for msg in ipr.link("get", index=index):
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
            return str(kind) if kind is not None else None
    return None


def host_local(bridge: str) -> None:
    """Never route what arrives on the bridge to another interface.

    IPv4 decides forwarding by the *input* interface's ``forwarding`` flag, so
    this keeps container traffic on the machine even on a host that enables
    ``net.ipv4.ip_forward`` (which is never touched here). Writing the global
    ``ip_forward`` later resets every interface's flag, ours included: the
    docs say so.
    """
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding", "w") as f:
        f.write("0")


def socket_in_netns(nsfd: int) -> int:
    """A NETLINK_ROUTE socket bound to the network namespace ``nsfd``.

    A socket belongs to the namespace of the thread that created it. A
    throw-away thread enters the namespace, creates the socket and ends, so
    no other thread of ours ever changes namespace.
    """
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            linux.setns(nsfd, c.CLONE_NEWNET)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
            out["fd"] = sock.detach()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["exc"] = exc

    thread = threading.Thread(target=work, name="supervisor-netns")
    thread.start()
    thread.join()
    if "exc" in out:
        raise out["exc"]
    return int(out["fd"])


def open_netns(pid: int, pidfd: int) -> int:
    """Open PID 1's network namespace, proving with its pidfd that it is ours.

    Raises:
        ProcessLookupError: PID 1 exited before its network was configured.
    """
    nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if poller.poll(0):
        os.close(nsfd)
        raise ProcessLookupError(f"container PID {pid} exited before its network was configured")
    return nsfd


def connect_blocking(att: Attachment, pid: int, pidfd: int) -> Attachment:
    """Give PID 1 its veth, address and default route (blocking; a worker thread).

    Args:
        att: what :func:`allocate_blocking` returned.
        pid: host PID of the container's PID 1.
        pidfd: its pidfd (proves that ``pid`` is still that process).

    Returns:
        ``att`` with the timings of these steps added.

    Raises:
        OSError: a netlink request failed.
        ProcessLookupError: PID 1 is gone.
    """
    step = Steps()
    nsfd = open_netns(pid, pidfd)
    try:
        with iproute() as ipr:
            step("open host socket")
            found = ipr.link_lookup(ifname=att.bridge)
            if not found:
                raise OSError(errno.ENODEV, f"bridge {att.bridge} is gone (deleted by hand?)")
            ipr.link(
                "add",
                ifname=att.veth,
                kind="veth",
                master=found[0],
                state="up",
                peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": nsfd},
            )
            step("veth")
        with iproute(socket_in_netns(nsfd)) as ns:
            step("netns socket")
            index = ns.link_lookup(ifname=CONTAINER_IFNAME)[0]
            ns.addr("add", index=index, address=att.address, prefixlen=att.prefixlen)
            ns.link("set", index=index, state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=att.gateway)
            step("configure")
    finally:
        # The last reference we hold on the netns: from here on it (and the
        # veth) dies with the container, on the kernel's schedule.
        os.close(nsfd)
    return dataclasses.replace(att, timings=att.timings + tuple(step.steps))


def delete_links(names: list[str]) -> list[str]:
    """Delete the host links ``names`` that still exist (blocking).

    Returns:
        one message per link that could not be deleted (a link that vanished
        meanwhile, ``ENODEV``, is not an error).
    """
    errors: list[str] = []
    present = [n for n in names if os.path.exists(f"/sys/class/net/{n}")]
    if not present:
        return errors
    with iproute() as ipr:
        for name in present:
            try:
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)
            except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError; collected for wait_idle
                if getattr(exc, "code", None) != errno.ENODEV:
                    errors.append(f"deleting veth {name}: {exc!r}")
    return errors


def delete_bridge(bridge: str) -> None:
    """Delete the host bridge ``bridge`` if it is there and a bridge (blocking).

    Raises:
        OSError: netlink refused (a deletion that raced with another
            deleter, ``ENODEV``, is not an error).
    """
    with iproute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if found and link_kind(ipr, found[0]) == "bridge":
            try:
                ipr.link("del", index=found[0])
            except Exception as exc:  # pyroute2's NetlinkError; raced with another deleter
                if getattr(exc, "code", None) != errno.ENODEV:
                    raise
