"""The address pool: one JSON state file per bridge under :data:`NET_DIR`,
shared by every supervisor of the host under one ``flock``.

Each entry names its owner as ``pid:starttime``; entries of dead owners are
reclaimed by the next user (:func:`reclaim`). Nothing here touches netlink.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator

from ..._record import record
from ..rundir import owner_alive

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

#: Where the allocation state lives (``/run`` is a tmpfs: nothing reaches the disk). Fixed, not
#: below ``SUPERVISOR_RUN_DIR``: addresses must be unique machine-wide.
NET_DIR = "/run/supervisor/net"


#: The allocation lock; never deleted, so every process locks the same inode.
LOCK_PATH = NET_DIR + "/lock"


#: The container's end of its veth pair.
CONTAINER_IFNAME = "eth0"


#: Prefix of the bridges' names (``sv`` + 8 hex digits of the subnet's hash).
BRIDGE_PREFIX = "sv"


#: Prefix of the host ends of the veth pairs (``svh`` + 10 random hex digits).
VETH_PREFIX = "svh"


@record
class Attachment:
    """One container's place on a bridge.

    Attributes:
        cid: the supervisor's id for the container.
        bridge: the bridge's name.
        subnet: the bridge's subnet (``"10.88.0.0/16"``).
        address: the container's IPv4 address.
        gateway: the bridge's address (the container's default route).
        veth: the host end of the container's veth pair.
        timings: seconds spent in each step (for benchmarks and ``--debug``).
    """

    cid: str
    bridge: str
    subnet: str
    address: str
    gateway: str
    veth: str
    timings: tuple[tuple[str, float], ...] = ()

    @property
    def prefixlen(self) -> int:
        """The subnet's prefix length."""
        return ipaddress.IPv4Network(self.subnet).prefixlen


#: The ledger id of a bridge's own record (``RunDir.record_once``).
BRIDGE_RECORD_PREFIX = "bridge:"


def bridge_name(subnet: str) -> str:
    """The bridge of ``subnet``: shared by every supervisor using that subnet.

    Args:
        subnet: an IPv4 network such as ``"10.88.0.0/16"``.

    Returns:
        ``sv`` and 8 hex digits (10 characters, below IFNAMSIZ).
    """
    return BRIDGE_PREFIX + hashlib.sha256(subnet.encode()).hexdigest()[:8]


class Steps:
    """Durations of named steps, for :attr:`Attachment.timings`."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self._t))
        self._t = now


@contextlib.contextmanager
def locked(wait: bool = True) -> Iterator[None]:
    """Hold the allocation lock (exclusive ``flock``) for the block.

    Raises:
        BlockingIOError: ``wait`` is false and someone else holds the lock.
    """
    os.makedirs(NET_DIR, 0o755, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)  # releases the lock


def state_path(bridge: str) -> str:
    return f"{NET_DIR}/{bridge}.json"


def load(bridge: str, subnet: str) -> dict[str, Any]:
    try:
        with open(state_path(bridge)) as f:
            state: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return {"subnet": subnet, "next": 2, "entries": {}}
    except ValueError:  # torn or foreign: start over (addresses are re-checked below)
        return {"subnet": subnet, "next": 2, "entries": {}}
    if state.get("subnet") != subnet:
        raise OSError(errno.EEXIST, f"{state_path(bridge)} belongs to subnet {state.get('subnet')}, not {subnet}")
    return state


def store(bridge: str, state: dict[str, Any]) -> None:
    """Write the state atomically; remove the file once it says nothing.

    ``bridge_ok`` says that the bridge was created and checked (address, up,
    forwarding off) and has not been deleted since: the deleter clears it
    under the lock, in the same step as deleting the bridge.
    """
    path = state_path(bridge)
    if not state["entries"] and not state.get("bridge_ok"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def reclaim(state: dict[str, Any]) -> list[str]:
    """Drop the entries whose owner process is gone.

    Returns:
        the host veths of the dropped entries: their containers died with
        their supervisor, but an orphaned socket may keep a veth alive.
    """
    entries: dict[str, Any] = state["entries"]
    alive = {owner: owner_alive(owner) for owner in {e["owner"] for e in entries.values()}}
    veths = []
    for ip in [ip for ip, e in entries.items() if not alive[e["owner"]]]:
        veth = entries.pop(ip).get("veth")
        if isinstance(veth, str) and veth.startswith(VETH_PREFIX):
            veths.append(veth)
    return veths


def pick(state: dict[str, Any], net: ipaddress.IPv4Network, fixed: str | None) -> str:
    """A free container address (round-robin, so a just-freed one is not reused at once).

    Raises:
        ValueError: ``fixed`` is taken, or the subnet is full.
    """
    entries: dict[str, Any] = state["entries"]
    if fixed is not None:
        if fixed in entries:
            raise ValueError(f"Spec.ip: {fixed} is already in use by container {entries[fixed]['cid']}")
        return fixed
    first = 2  # .0 is the network, .1 the bridge
    last = net.num_addresses - 2  # the broadcast address is excluded
    span = last - first + 1
    start = int(state.get("next", first))
    for i in range(span):
        offset = first + (start - first + i) % span
        ip = str(net.network_address + offset)
        if ip not in entries:
            state["next"] = first + (offset - first + 1) % span
            return ip
    raise ValueError(f"Spec.subnet: no free address left in {net}")
