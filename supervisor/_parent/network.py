"""Bridge networking: one host-local bridge per subnet, one veth pair per container.

Imported only when a container asks for ``network="bridge"``, and pyroute2 is
imported only inside the blocking helpers, which run in worker threads: the
CLI and the ``none``/``host`` modes never pay for it. All netlink work goes
through pyroute2's synchronous :class:`~pyroute2.IPRoute` (its asyncio-native
``AsyncIPRoute`` cannot run under trio), called through
:func:`anyio.to_thread.run_sync` behind a :class:`~anyio.CapacityLimiter`.

Per container, in two steps. :func:`allocate` needs no container: the
supervisor starts it as soon as PID 1 answers its first request, so it runs
while PID 1 and the supervisor go through the ``USERNS`` and ``CGROUP``
phases. Under the allocation lock, it reclaims dead owners' entries, picks an
address, records it, and makes sure the bridge exists (created on first use,
with the subnet's first address). :func:`connect` runs while PID 1 waits in
its ``NETWORK`` request:

1. open ``/proc/<pid>/ns/net`` and check with the pidfd that PID 1 is still
   the process we spawned (as :mod:`.userns` does), so the veth can never land
   in another process's namespace;
2. one ``RTM_NEWLINK``: a veth whose host end is enslaved to the bridge and up,
   and whose peer is created directly as ``eth0`` inside the container's netns
   (``IFLA_NET_NS_FD``, not a PID);
3. a netlink socket opened *inside* that netns by a throw-away thread that
   ``setns()``-es (setns affects the calling thread only, and the thread ends
   right after, so no pooled thread ever changes namespace; never
   ``IPRoute(netns=...)``, which forks from our multithreaded process); on it:
   the address, ``eth0`` up, and the default route via the bridge.

Teardown (:func:`detach`) does not delete the veth on the exit path: it
normally dies with the container's network namespace, asynchronously in the
kernel (5 to 25 ms after PID 1 is reaped), so nothing waits for
``RTM_DELLINK``. It frees the address and, when that was the bridge's last
live user, deletes the bridge from a background thread. The kernel keeps a
namespace alive, and its veth with it, while an orphaned TCP socket of the
container still retransmits (a FIN its dead peer never acknowledges): that
lasts up to ``tcp_orphan_retries`` backoffs, about two minutes. So the veth
also goes to a janitor thread, which deletes it if it is still there
:data:`VETH_GRACE` seconds later; :func:`wait_idle` (called when the
supervisor exits) cuts that grace short and joins the janitor and the bridge
deletions. The namespace itself then has no interface left and dies when its
last socket gives up.

Addresses are shared between concurrent supervisors through a JSON state file
per bridge under ``/run/supervisor/net`` (tmpfs), guarded by ``flock`` on a
lock file that is never deleted. Each entry names its owner as
``pid:starttime``; entries of dead owners are reclaimed by the next user.

Safety: nothing here enables forwarding or NAT. The bridge is host-local:
containers reach each other and the host's own addresses, and nothing else.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import select
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from .._record import record
from .._sys import constants as c
from .._sys import linux
from .config import hosts_text
from .rundir import owner_alive, owner_token, register_sweeper

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

_NETLINK_ROUTE = 0
_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("supervisor_netlink_limiter")
#: Concurrent netlink workers per event loop (the kernel's RTNL lock
#: serialises most of the work anyway).
NETLINK_THREADS = 4

#: Seconds a bridge without users is kept before it is deleted, so that
#: back-to-back containers do not each create and delete it (``wait_idle``,
#: called when a supervisor exits, cuts this short).
BRIDGE_LINGER = 1.0

#: Seconds after its container's release that a host veth still present is
#: deleted explicitly (it normally dies with the namespace well before).
VETH_GRACE = 2.0
#: The grace left to pending veths when a supervisor exits (:func:`wait_idle`).
VETH_EXIT_GRACE = 0.25

#: Lingering bridge deletions: bridge name -> event that ends the linger.
_pending: dict[str, threading.Event] = {}
#: Every deletion thread until it has finished (joined by :func:`wait_idle`).
_running: set[threading.Thread] = set()
_pending_lock = threading.Lock()
#: Errors of background deletions, reported by :func:`wait_idle`.
_errors: list[str] = []


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


def _limiter() -> anyio.CapacityLimiter:
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(NETLINK_THREADS)
        _LIMITER.set(limiter)
        return limiter


# -- the state file ------------------------------------------------------------
@contextlib.contextmanager
def _locked(wait: bool = True) -> Iterator[None]:
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


def _state_path(bridge: str) -> str:
    return f"{NET_DIR}/{bridge}.json"


def _load(bridge: str, subnet: str) -> dict[str, Any]:
    try:
        with open(_state_path(bridge)) as f:
            state: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return {"subnet": subnet, "next": 2, "entries": {}}
    except ValueError:  # torn or foreign: start over (addresses are re-checked below)
        return {"subnet": subnet, "next": 2, "entries": {}}
    if state.get("subnet") != subnet:
        raise OSError(errno.EEXIST, f"{_state_path(bridge)} belongs to subnet {state.get('subnet')}, not {subnet}")
    return state


def _store(bridge: str, state: dict[str, Any]) -> None:
    """Write the state atomically; remove the file once it says nothing.

    ``bridge_ok`` says that the bridge was created and checked (address, up,
    forwarding off) and has not been deleted since: the deleter clears it
    under the lock, in the same step as deleting the bridge.
    """
    path = _state_path(bridge)
    if not state["entries"] and not state.get("bridge_ok"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def _reclaim(state: dict[str, Any]) -> list[str]:
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


def _pick(state: dict[str, Any], net: ipaddress.IPv4Network, fixed: str | None) -> str:
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


# -- netlink ------------------------------------------------------------------
def _iproute(fileno: int | None = None) -> Any:
    """A pyroute2 IPRoute without multicast subscriptions (requests only)."""
    from pyroute2 import IPRoute

    if fileno is None:
        return IPRoute(groups=0)
    return IPRoute(fileno=fileno, groups=0)


def _ensure_bridge(ipr: Any, bridge: str, net: ipaddress.IPv4Network) -> int:
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
    if _link_kind(ipr, index) != "bridge":
        raise OSError(errno.EEXIST, f"host interface {bridge} exists and is not a bridge: not ours, left alone")
    _host_local(bridge)
    if not any(m.get_attr("IFA_ADDRESS") == gateway for m in ipr.get_addr(index=index, family=socket.AF_INET)):
        ipr.addr("add", index=index, address=gateway, prefixlen=net.prefixlen)
    ipr.link("set", index=index, state="up")
    return index


def _link_kind(ipr: Any, index: int) -> str | None:
    """The ``IFLA_INFO_KIND`` of a link (``"bridge"``, ``"veth"``...), or None."""
    for msg in ipr.link("get", index=index):
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
            return str(kind) if kind is not None else None
    return None


def _host_local(bridge: str) -> None:
    """Never route what arrives on the bridge to another interface.

    IPv4 decides forwarding by the *input* interface's ``forwarding`` flag, so
    this keeps container traffic on the machine even on a host that enables
    ``net.ipv4.ip_forward`` (which is never touched here). Writing the global
    ``ip_forward`` later resets every interface's flag, ours included: the
    docs say so.
    """
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding", "w") as f:
        f.write("0")


def _socket_in_netns(nsfd: int) -> int:
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


def _open_netns(pid: int, pidfd: int) -> int:
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


class _Steps:
    """Durations of named steps, for :attr:`Attachment.timings`."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self._t))
        self._t = now


def allocate_blocking(subnet: str, fixed_ip: str | None, cid: str, wait: bool = True) -> Attachment:
    """Reserve an address on the subnet's bridge, creating the bridge if needed.

    Needs no container, so the supervisor runs it while PID 1 is still in its
    earlier phases. When the bridge already has users (so it exists: deleting
    it needs the lock and no users), this is only a few reads and writes of
    the state file; creating the bridge takes netlink requests.

    Args:
        subnet: the bridge's IPv4 subnet.
        fixed_ip: the address to use, or ``None`` to allocate one.
        cid: the container's id (recorded with the allocation).
        wait: if false, never block: raise :class:`BlockingIOError` when the
            lock is taken or the bridge may need creating.

    Returns:
        the :class:`Attachment` to pass to :func:`connect_blocking`; free it
        with :func:`release_blocking` whatever happens next.

    Raises:
        ValueError: the fixed address is taken, or the subnet is full.
        OSError: a netlink request failed, or the subnet clashes with the host.
        BlockingIOError: ``wait`` is false and this would block.
    """
    step = _Steps()
    net = ipaddress.IPv4Network(subnet)
    bridge = bridge_name(subnet)
    veth = VETH_PREFIX + secrets.token_hex(5)
    with _locked(wait):
        state = _load(bridge, subnet)
        _janitor.schedule(_reclaim(state), 0.0)
        # The bridge is known to be complete if it has users (deleting it needs
        # the lock and no users) or was checked and not deleted since; the
        # sysfs lookup catches a bridge deleted by hand.
        first = not (state["entries"] or state.get("bridge_ok")) or not os.path.exists(f"/sys/class/net/{bridge}")
        if first and not wait:
            raise BlockingIOError(errno.EWOULDBLOCK, f"bridge {bridge} may need creating")
        address = _pick(state, net, fixed_ip)
        state["entries"][address] = {"owner": owner_token(), "cid": cid, "veth": veth}
        _store(bridge, state)
        if first:
            try:
                with _iproute() as ipr:
                    step("open")
                    _ensure_bridge(ipr, bridge, net)
                state["bridge_ok"] = True
                _store(bridge, state)
            except BaseException:
                del state["entries"][address]
                _store(bridge, state)
                raise
    step("allocate")
    gateway = str(net.network_address + 1)
    return Attachment(cid, bridge, subnet, address, gateway, veth, tuple(step.steps))


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
    step = _Steps()
    nsfd = _open_netns(pid, pidfd)
    try:
        with _iproute() as ipr:
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
        with _iproute(_socket_in_netns(nsfd)) as ns:
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
    import dataclasses

    return dataclasses.replace(att, timings=att.timings + tuple(step.steps))


def release_blocking(bridge: str, subnet: str, address: str, wait: bool = True) -> bool:
    """Free ``address``; True if the bridge has no live user left.

    Args:
        bridge: the bridge's name.
        subnet: its subnet.
        address: the container's address (only our own entry is removed).
        wait: wait for the lock; if false, raise instead of waiting.

    Returns:
        whether the bridge should now be deleted.

    Raises:
        BlockingIOError: ``wait`` is false and the lock is taken.
    """
    with _locked(wait):
        state = _load(bridge, subnet)
        entry = state["entries"].get(address)
        if entry is not None and entry["owner"] == owner_token():
            del state["entries"][address]
        _janitor.schedule(_reclaim(state), 0.0)
        _store(bridge, state)
        return not state["entries"]


def delete_bridge_if_unused(bridge: str, subnet: str) -> None:
    """Delete the bridge unless someone started using it again (blocking).

    Runs under the allocation lock, so no one can attach to the bridge while
    it goes. Ports still attached (veths of containers whose namespace is
    dying) are detached by the kernel.
    """
    with _locked():
        state = _load(bridge, subnet)
        stale = _reclaim(state)
        in_use = bool(state["entries"])
        if not in_use:
            state["bridge_ok"] = False
        _store(bridge, state)  # removes the file when nobody is left
        _errors.extend(_delete_links(stale))
        if in_use:
            return
        with _iproute() as ipr:
            found = ipr.link_lookup(ifname=bridge)
            if found and _link_kind(ipr, found[0]) == "bridge":
                try:
                    ipr.link("del", index=found[0])
                except Exception as exc:  # pyroute2's NetlinkError; raced with another deleter
                    if getattr(exc, "code", None) != errno.ENODEV:
                        raise


def _sweep_lease(record: dict[str, Any]) -> None:
    """Sweeper for a dead supervisor's ``net-lease`` record (see :mod:`.rundir`).

    Its allocation entries are reclaimed (their owner is dead), the veths they
    name are deleted if an orphaned socket kept them alive, and the bridge
    goes if nobody else uses it.
    """
    delete_bridge_if_unused(str(record["bridge"]), str(record["subnet"]))


register_sweeper("net-lease", _sweep_lease)


def _delete_in_background(bridge: str, subnet: str) -> None:
    """Delete the bridge after :data:`BRIDGE_LINGER` seconds, unless it is used again."""
    flush = threading.Event()

    def work() -> None:
        try:
            flush.wait(BRIDGE_LINGER)
            with _pending_lock:
                _pending.pop(bridge, None)  # a later detach schedules a new check
            delete_bridge_if_unused(bridge, subnet)
        except Exception as exc:  # noqa: BLE001 - a thread has no caller: wait_idle reports it
            _errors.append(f"deleting bridge {bridge}: {exc!r}")
        finally:
            with _pending_lock:
                _running.discard(threading.current_thread())

    with _pending_lock:
        if bridge in _pending:
            return  # one lingering deletion per bridge: it re-checks the users
        thread = threading.Thread(target=work, name=f"supervisor-del-{bridge}")
        _pending[bridge] = flush
        _running.add(thread)
        thread.start()


def _delete_links(names: list[str]) -> list[str]:
    """Delete the host links ``names`` that still exist (blocking).

    Returns:
        one message per link that could not be deleted (a link that vanished
        meanwhile, ``ENODEV``, is not an error).
    """
    errors: list[str] = []
    present = [n for n in names if os.path.exists(f"/sys/class/net/{n}")]
    if not present:
        return errors
    with _iproute() as ipr:
        for name in present:
            try:
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)
            except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError; collected for wait_idle
                if getattr(exc, "code", None) != errno.ENODEV:
                    errors.append(f"deleting veth {name}: {exc!r}")
    return errors


class _Janitor:
    """Deletes the host veths that outlive their container (one thread, on demand).

    A veth normally goes with its namespace a few milliseconds after its
    container is reaped, so the janitor mostly finds it gone. It checks each
    pending veth every :attr:`POLL` seconds and deletes the ones still there
    at their deadline. The thread ends when nothing is pending.
    """

    #: How often pending veths are checked for having gone by themselves.
    POLL = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def schedule(self, veths: list[str], delay: float) -> None:
        """Delete each of ``veths`` if it still exists ``delay`` seconds from now.

        Never raises (it runs on cleanup paths): a thread that cannot start is
        an error for :func:`wait_idle` to report, and the veths stay pending
        for the next call.
        """
        if not veths:
            return
        deadline = time.monotonic() + delay
        with self._cond:
            for veth in veths:
                self._due[veth] = min(self._due.get(veth, deadline), deadline)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="supervisor-veth-janitor", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # out of threads (pids limit), or the interpreter is exiting
                    _errors.append(f"cannot start the veth janitor: {exc}")
                    return
                self._thread = thread
            self._cond.notify()

    def finish(self, grace: float) -> None:
        """Hurry every pending deletion to ``grace`` seconds and wait for it (blocking)."""
        thread = self.hurry(grace)
        if thread is not None:
            thread.join(grace + 10)

    def hurry(self, grace: float) -> threading.Thread | None:
        """Bring every deadline to at most ``grace`` seconds from now.

        Returns:
            the janitor's thread to join, or None if it is idle.
        """
        deadline = time.monotonic() + grace
        with self._cond:
            for veth, due in self._due.items():
                self._due[veth] = min(due, deadline)
            self._cond.notify()
            return self._thread

    def _run(self) -> None:
        while True:
            with self._cond:
                for veth in [v for v in self._due if not os.path.exists(f"/sys/class/net/{v}")]:
                    del self._due[veth]
                if not self._due:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [v for v, t in self._due.items() if t <= now]
                if not due:
                    self._cond.wait(min(self.POLL, min(self._due.values()) - now))
                    continue
                for veth in due:
                    del self._due[veth]
            try:
                _errors.extend(_delete_links(due))
            except Exception as exc:  # noqa: BLE001 - a thread has no caller: wait_idle reports it
                _errors.append(f"deleting veths {due}: {exc!r}")


_janitor = _Janitor()
# Its thread is a daemon, which dies with the interpreter: finish first.
atexit.register(_janitor.finish, VETH_EXIT_GRACE)


# -- the async API ------------------------------------------------------------
async def allocate(subnet: str, fixed_ip: str | None, cid: str) -> Attachment:
    """Reserve an address on the subnet's bridge (see :func:`allocate_blocking`).

    Args:
        subnet: the bridge's IPv4 subnet (``Spec.subnet``).
        fixed_ip: ``Spec.ip``, or ``None`` to allocate an address.
        cid: the container's id.

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
        return allocate_blocking(subnet, fixed_ip, cid, wait=False)
    except BlockingIOError:
        return await anyio.to_thread.run_sync(allocate_blocking, subnet, fixed_ip, cid, limiter=_limiter())


async def connect(att: Attachment, pid: int, pidfd: int) -> Attachment:
    """Create the veth and configure the container's side (see :func:`connect_blocking`).

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
    return await anyio.to_thread.run_sync(connect_blocking, att, pid, pidfd, limiter=_limiter())


async def detach(att: Attachment) -> None:
    """Free the container's address; delete the bridge later if it was the last.

    Never waits for the veth (it dies with the container's network namespace)
    nor for the bridge's deletion (a background thread; see :func:`wait_idle`).

    Args:
        att: what :func:`allocate` returned.

    **Cancellation:** shielded: the address is always freed.
    """
    with anyio.CancelScope(shield=True):
        try:
            try:
                # Usually the lock is free: then this is a few small reads and
                # writes on a tmpfs, cheaper inline than a trip to a worker thread.
                last = release_blocking(att.bridge, att.subnet, att.address, wait=False)
            except BlockingIOError:
                last = await anyio.to_thread.run_sync(
                    release_blocking, att.bridge, att.subnet, att.address, limiter=_limiter()
                )
            if last:
                _delete_in_background(att.bridge, att.subnet)
        finally:
            _janitor.schedule([att.veth], VETH_GRACE)  # whatever happened to the address


async def wait_idle() -> None:
    """Delete unused bridges now (ending their linger) and wait until that is done.

    Called when a supervisor exits. Bridges still used by other supervisors
    (or this process's other supervisors) are kept. Veths of ended containers
    that are still there :data:`VETH_EXIT_GRACE` seconds from now are deleted,
    so none outlives the supervisor.

    Warns:
        RuntimeWarning: a background deletion failed (the bridge may be left
            until the subnet's next user leaves). Never an exception: this
            runs while a supervisor exits, maybe with an exception of its own.

    **Cancellation:** shielded: returns only when they are done.
    """
    with anyio.CancelScope(shield=True):
        while True:
            with _pending_lock:
                for flush in _pending.values():
                    flush.set()
                running = list(_running)
            janitor = _janitor.hurry(VETH_EXIT_GRACE)
            if janitor is not None:
                running.append(janitor)
            if not running:
                break
            for thread in running:
                await anyio.to_thread.run_sync(thread.join)
    if _errors:
        message = "; ".join(_errors)
        _errors.clear()
        warnings.warn(f"supervisor networking: {message}", RuntimeWarning, stacklevel=2)


def host_files(hostname: str, address: str) -> dict[str, str]:
    """The contents of the container's ``/etc/hosts`` and ``/etc/resolv.conf``.

    The bridge is host-local, so there is no DNS server to name: names resolve
    through ``/etc/hosts`` only.

    Args:
        hostname: the container's hostname.
        address: its bridge address.

    Returns:
        ``{"hosts": ..., "resolv.conf": ...}``.
    """
    hosts = hosts_text(hostname, address, "written by supervisor (network=bridge)")
    resolv = (
        "# written by supervisor (network=bridge): the bridge is host-local and\n"
        "# has no DNS server; names resolve through /etc/hosts only.\n"
        "options ndots:0\n"
    )
    return {"hosts": hosts, "resolv.conf": resolv}
