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
:data:`VETH_GRACE` seconds later; :meth:`Janitor.wait_idle` (called when the
supervisor exits) cuts that grace short and joins the janitor and the bridge
deletions. The namespace itself then has no interface left and dies when its
last socket gives up.

Addresses are shared between concurrent supervisors through a JSON state file
per bridge under ``/run/supervisor/net`` (tmpfs), guarded by ``flock`` on a
lock file that is never deleted. Each entry names its owner as
``pid:starttime``; entries of dead owners are reclaimed by the next user.

Safety: nothing here enables forwarding or NAT. The bridge is host-local:
containers reach each other and the host's own addresses, and nothing else.

The package, by concern: :mod:`.pool` (the address state files),
:mod:`.netlink` (the only module importing pyroute2), :mod:`.bridge` (one
container's steps), :mod:`.container` (one container's pieces, set up and
released), :mod:`.janitor` (what is deleted in the background, one object
per supervisor), :mod:`.etc` (the container's /etc files) and :mod:`.ports`
(published ports).
"""

from .bridge import allocate, allocate_blocking, connect, delete_bridge_if_unused, detach, release_blocking
from .etc import host_files, write_host_files
from .janitor import BRIDGE_LINGER, VETH_EXIT_GRACE, VETH_GRACE, Janitor
from .netlink import connect_blocking
from .pool import (
    BRIDGE_PREFIX,
    BRIDGE_RECORD_PREFIX,
    CONTAINER_IFNAME,
    NET_DIR,
    VETH_PREFIX,
    Attachment,
    bridge_name,
)

__all__ = [
    "BRIDGE_LINGER",
    "BRIDGE_PREFIX",
    "BRIDGE_RECORD_PREFIX",
    "CONTAINER_IFNAME",
    "NET_DIR",
    "VETH_EXIT_GRACE",
    "VETH_GRACE",
    "VETH_PREFIX",
    "Attachment",
    "Janitor",
    "allocate",
    "allocate_blocking",
    "bridge_name",
    "connect",
    "connect_blocking",
    "delete_bridge_if_unused",
    "detach",
    "host_files",
    "release_blocking",
    "write_host_files",
]
