"""Networking on the real kernel: ``none``, ``host``, ``bridge`` and published ports.

Traffic only flows between namespaces, veths and the bridge that these tests
create, and loopback: the host side binds the bridge's address with
``IP_FREEBIND`` (so it can listen before the bridge exists) or 127.0.0.1,
and the containers talk to the bridge's subnet only. Nothing here changes a
sysctl or a host interface.

Besides the conftest's leak check (links, run directories, fds, ...), every
test here checks that no address lease (``/run/supervisor/net/*.json``) nor
``/etc`` folder of ours is left, and removes any leftover link of ours so one
failure does not cascade.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio

import supervisor
from supervisor import Phase, Publish, SetupError, Spec, Supervisor
from supervisor._parent import network
from supervisor._parent.network import netlink, pool
from supervisor._parent.rundir import owner_alive, owner_token, run_root
from supervisor.testing import fail_at

pytestmark = pytest.mark.anyio

SUBNET = "10.88.0.0/16"
GATEWAY = "10.88.0.1"
BRIDGE = network.bridge_name(SUBNET)
IP_FREEBIND = 15  # linux/in.h; socket.IP_FREEBIND is missing on Python 3.11


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """These tests run on trio."""
    return "trio"


# -- the network leak check ------------------------------------------------------
def _our_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith((network.VETH_PREFIX, network.BRIDGE_PREFIX))}


def _our_leases() -> list[tuple[str, str]]:
    me = owner_token()
    out = []
    try:
        names = os.listdir(network.NET_DIR)
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".json"):
            with open(os.path.join(network.NET_DIR, name)) as f:
                state = json.load(f)
            out += [(name, ip) for ip, e in state["entries"].items() if e["owner"] == me]
    return out


def _our_etc_dirs() -> list[str]:
    try:
        return [n for n in os.listdir(os.path.join(run_root(), "etc")) if n.startswith(f"{os.getpid()}-")]
    except FileNotFoundError:
        return []


@pytest.fixture(autouse=True)
def net_leak_check() -> Iterator[None]:
    """No link, lease or /etc folder of ours may outlive a test."""
    links_before = _our_links()
    yield
    # A supervisor deletes, when it exits, every veth of its own that the
    # kernel has not removed yet; a link may still be unregistering then.
    deadline = time.monotonic() + 5.0
    while True:
        problems = []
        links = _our_links() - links_before
        if links:
            problems.append(f"links left: {sorted(links)}")
        if _our_leases():
            problems.append(f"address leases left: {_our_leases()}")
        if _our_etc_dirs():
            problems.append(f"/etc folders left: {_our_etc_dirs()}")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if problems:
        netlink.delete_links(sorted(links))
        pytest.fail("networking left host state behind: " + "; ".join(problems), pytrace=False)


# -- container-side scripts (python3 of the embedded default root) --------------------
def py(code: str, *args: str, **spec: Any) -> Spec:
    """A container running ``python3 -c code args...``."""
    return Spec(["python3", "-c", code, *args], **spec)


CONNECT_ONCE = """
import socket, sys, errno
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc)))
"""

# Connect to HOST:PORT (retrying while nothing listens yet), send a line, print the reply.
CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s.sendall(sys.argv[3].encode() + b"\\n")
print(s.makefile().readline().strip())
"""

# Serve one TCP connection on PORT: reply with our hostname and what was sent, upper-cased.
SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen()
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
    c, peer = srv.accept()
    line = c.makefile().readline().strip()
    c.sendall(f"{socket.gethostname()} {line.upper()} {peer[0]}\\n".encode())
    c.close()
"""

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
for _ in range(3):
    data, peer = s.recvfrom(2048)
    s.sendto(data.upper(), peer)
"""


async def _freebind_listener(address: str) -> trio.socket.SocketType:
    """A TCP listener on ``address`` (port chosen by the kernel), even before it exists."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    await sock.bind((address, 0))
    sock.listen(128)
    return sock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Spec and Publish ----------------------------------------------------------
def test_publish_parse() -> None:
    assert Publish.parse("8080:80") == Publish(8080, 80, "tcp", "127.0.0.1")
    assert Publish.parse("5353:53/udp") == Publish(5353, 53, "udp")
    assert Publish.parse("127.0.0.2:8080:80/TCP") == Publish(8080, 80, "tcp", "127.0.0.2")
    assert Publish.parse("[::1]:8080:80").host_ip == "::1"
    for bad in ("8080", "x:80", "8080:80/sctp", "0:80", "8080:70000", "nohost:1:2"):
        with pytest.raises(ValueError, match="publish"):
            Publish.parse(bad)


def test_spec_network_validation() -> None:
    assert Spec(["true"]).network == "none"
    spec = Spec(["true"], network="bridge", ip="10.88.3.4", publish=["8080:80", Publish(53, 53, "udp")])
    assert spec.publish == (Publish(8080, 80), Publish(53, 53, "udp"))
    assert spec.to_json()["publish"][0] == {"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80,
                                            "protocol": "tcp"}  # fmt: skip
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"network": "nat"}, ValueError, "Spec.network"),
        ({"network": 1}, TypeError, "Spec.network"),
        ({"ip": "10.88.0.5"}, ValueError, "Spec.ip: needs network='bridge'"),
        ({"network": "bridge", "ip": "10.99.0.5"}, ValueError, "Spec.ip"),
        ({"network": "bridge", "ip": "10.88.0.1"}, ValueError, "Spec.ip"),  # the bridge's own
        ({"network": "bridge", "ip": "nonsense"}, ValueError, "Spec.ip"),
        ({"network": "bridge", "subnet": "10.88.0.1/16"}, ValueError, "Spec.subnet"),
        ({"network": "bridge", "subnet": "10.0.0.0/30"}, ValueError, "Spec.subnet"),
        ({"publish": ["8080:80"]}, ValueError, "Spec.publish: needs network='bridge'"),
        ({"network": "bridge", "publish": "8080:80"}, TypeError, "Spec.publish"),
        ({"network": "bridge", "publish": [8080]}, TypeError, "Spec.publish"),
        ({"network": "bridge", "publish": ["8080:80", "8080:81"]}, ValueError, "published twice"),
    ]
    for kwargs, exc, text in cases:
        with pytest.raises(exc, match=text.replace("(", r"\(")):
            Spec(["true"], **kwargs)


# -- none and host ---------------------------------------------------------------
async def test_none_has_only_loopback_and_no_route_out() -> None:
    code = """
import json, os, socket, errno
with open("/proc/net/dev") as f:
    names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
flags = int(open("/sys/class/net/lo/flags").read(), 16)
out = {"links": names, "lo_up": bool(flags & 1)}
for target in ("10.88.0.1", "127.0.0.1"):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((target, 9))
        out[target] = "connected"
    except OSError as exc:
        out[target] = errno.errorcode.get(exc.errno, str(exc))
print(json.dumps(out))
"""
    result = await supervisor.run(py(code), check=True)
    out = json.loads(result.stdout)
    assert out["links"] == ["lo"]
    assert out["lo_up"]
    assert out["10.88.0.1"] == "ENETUNREACH"  # no route at all
    assert out["127.0.0.1"] == "ECONNREFUSED"  # loopback works (nothing listens on port 9)


async def test_host_mode_sees_host_links() -> None:
    result = await supervisor.run(Spec(["cat", "/proc/net/dev"], network="host"), check=True)
    names = {line.split(":")[0].strip() for line in result.stdout.decode().splitlines()[2:]}
    assert names == {name for _index, name in socket.if_nameindex()}


# -- bridge ----------------------------------------------------------------------
async def test_bridge_container_reaches_host_and_has_etc_files() -> None:
    code = """
import json, socket, sys, time
hosts = open("/etc/hosts").read()
resolv = open("/etc/resolv.conf").read()
route = [l.split() for l in open("/proc/net/route").read().splitlines()[1:]]
default = [r for r in route if r[1] == "00000000"]
gw = socket.inet_ntoa(bytes.fromhex(default[0][2])[::-1]) if default else None
deadline = time.monotonic() + 20
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s.sendall(socket.gethostname().encode() + b"\\n")
print(json.dumps({"hosts": hosts, "resolv": resolv, "gw": gw, "dev": default[0][0] if default else None}))
"""
    listener = await _freebind_listener(GATEWAY)
    port = listener.getsockname()[1]
    with listener:
        async with Supervisor() as sup, trio.open_nursery() as nursery:
            container = await nursery.start(sup.run, py(code, GATEWAY, str(port), network="bridge", hostname="web-1"))
            (address,) = container.addresses
            assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(SUBNET)
            with trio.fail_after(20):
                conn, peer = await listener.accept()
            with conn:
                data = await conn.recv(100)
            assert data == b"web-1\n"
            assert peer[0] == address  # container -> host, from its own address, over the bridge
            result = await container.wait()
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert f"{address}\tweb-1" in out["hosts"]
    assert "127.0.0.1\tlocalhost" in out["hosts"]
    assert "nameserver" not in out["resolv"]
    assert out["gw"] == GATEWAY
    assert out["dev"] == "eth0"


async def test_bridge_container_to_container() -> None:
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        server = await nursery.start(sup.run, py(SERVER, "7000", network="bridge", hostname="server"))
        client = await sup.run(
            py(CLIENT, server.addresses[0], "7000", "hello", network="bridge", hostname="client"), check=True
        )
        result = await server.wait()
    assert result.exit_code == 0, result.stderr
    name, word, peer = client.stdout.decode().split()
    assert (name, word) == ("server", "HELLO")
    assert ipaddress.IPv4Address(peer) in ipaddress.IPv4Network(SUBNET)
    assert peer != server.addresses[0]


async def test_host_to_container_through_published_tcp_port() -> None:
    port = _free_port()
    spec = py(SERVER, "8000", "2", network="bridge", hostname="pub", publish=[f"{port}:8000"])
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        container = await nursery.start(sup.run, spec)
        replies = []
        with trio.fail_after(20):
            while len(replies) < 2:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(b"ping\n")
                    data = b""
                    try:
                        while not data.endswith(b"\n"):
                            chunk = await stream.receive_some(100)
                            if not chunk:
                                break
                            data += chunk
                    except trio.BrokenResourceError:
                        data = b""  # the proxy could not reach the server yet (it closes): retry
                if data:
                    replies.append(data.decode().split())
                else:
                    await trio.sleep(0.05)
        result = await container.wait()
    assert result.exit_code == 0, result.stderr
    for name, word, peer in replies:
        assert (name, word, peer) == ("pub", "PING", GATEWAY)  # the proxy connects from the bridge address
    # The proxy ended with the container.
    with pytest.raises(OSError, match="failed"):
        await trio.open_tcp_stream("127.0.0.1", port)


async def _ask(stream: trio.SocketStream, word: bytes) -> bytes:
    """Send a line through a published port; the reply line, or b"" if the proxy closed."""
    async with stream:
        await stream.send_all(word + b"\n")
        data = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(100)
                if not chunk:
                    return b""
                data += chunk
        return data


async def test_published_port_survives_running_out_of_fds() -> None:
    """accept() failing with EMFILE is retried: once fds are free again, the
    connection that waited in the backlog is relayed."""
    port = _free_port()
    spec = py(SERVER, "8000", "10", network="bridge", hostname="pub", publish=[f"{port}:8000"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        container = await nursery.start(partial(sup.run, check=False), spec)
        with trio.fail_after(20):  # until the server in the container listens
            while not await _ask(await trio.open_tcp_stream("127.0.0.1", port), b"ready"):
                await trio.sleep(0.05)
        client = trio.socket.socket()
        fillers: list[int] = []
        try:
            # Every fd number below a lowered limit taken: the proxy's accept() gets EMFILE.
            top = max(int(n) for n in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 64, hard))
            while True:
                try:
                    fillers.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    break
            await client.connect(("127.0.0.1", port))  # completes in the kernel's backlog
            await trio.sleep(0.3)  # the proxy meets EMFILE meanwhile
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with trio.fail_after(10), client:
            reply = await _ask(trio.SocketStream(client), b"after")
        assert reply.split()[:2] == [b"pub", b"AFTER"]
        container.kill()
    assert fillers, "the fds were never exhausted"


async def test_host_to_container_through_published_udp_port() -> None:
    port = _free_port()
    spec = py(UDP_ECHO, "5353", network="bridge", publish=[Publish(port, 5353, "udp")])
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        container = await nursery.start(partial(sup.run, check=False), spec)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.connect(("127.0.0.1", port))
            reply = b""
            with trio.fail_after(20):
                while not reply:
                    await sock.send(b"hello")
                    with trio.move_on_after(0.2):
                        reply = await sock.recv(100)
        assert reply == b"HELLO"
        container.kill()
    await container.wait()


async def test_fixed_ip_and_collision() -> None:
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        first = await nursery.start(
            partial(sup.run, check=False), Spec(["sleep", "30"], network="bridge", ip="10.88.200.200")
        )
        assert first.addresses == ("10.88.200.200",)
        with pytest.raises(SetupError) as info:
            await sup.run(Spec(["true"], network="bridge", ip="10.88.200.200"), check=False)
        assert info.value.phase == Phase.NETWORK
        assert "already in use" in info.value.message
        first.kill()


async def test_setup_failure_after_network_leaves_nothing() -> None:
    async with Supervisor() as sup:
        # Before (the background allocation is waited for and freed), at and after the network step.
        for phase in (Phase.USERNS, Phase.CGROUP, Phase.NETWORK, Phase.HOSTNAME):
            with fail_at(phase), pytest.raises(SetupError):
                await sup.run(Spec(["true"], network="bridge", publish=[f"{_free_port()}:80"]))
        # A published port that cannot be bound fails the NETWORK step.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            with pytest.raises(SetupError) as info:
                await sup.run(Spec(["true"], network="bridge", publish=[f"{busy}:80"]))
        assert info.value.phase == Phase.NETWORK
        assert info.value.errno == errno.EADDRINUSE


async def test_cancelled_container_leaves_nothing() -> None:
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        await nursery.start(sup.run, Spec(["sleep", "30"], network="bridge", publish=[f"{_free_port()}:80"]))
        nursery.cancel_scope.cancel()


async def test_dead_owners_lease_is_reclaimed() -> None:
    # A lease left by a process that is gone (a crashed supervisor).
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = f"{int(proc.stdout)}:1"
    assert not owner_alive(dead)
    os.makedirs(network.NET_DIR, exist_ok=True)
    path = os.path.join(network.NET_DIR, BRIDGE + ".json")
    with pool.locked():
        state = pool.load(BRIDGE, SUBNET)
        state["entries"]["10.88.201.1"] = {"owner": dead, "cid": "crashed", "veth": "svhdeadbeef00"}
        pool.store(BRIDGE, state)
    try:
        result = await supervisor.run(
            py("import socket; print(socket.gethostbyname(socket.gethostname()))", network="bridge", ip="10.88.201.1"),
            check=True,
        )
        assert result.stdout.decode().strip() == "10.88.201.1"
        with pool.locked():
            assert "10.88.201.1" not in pool.load(BRIDGE, SUBNET)["entries"]
    finally:
        with pool.locked():
            state = pool.load(BRIDGE, SUBNET)
            state["entries"].pop("10.88.201.1", None)
            pool.store(BRIDGE, state)
    if os.path.exists(path):
        with open(path) as f:
            assert "crashed" not in f.read()


async def test_concurrent_supervisors_get_distinct_addresses() -> None:
    """Another supervisor *process* allocates from the same subnet while ours hold addresses."""
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        ours = [
            await nursery.start(partial(sup.run, check=False), Spec(["sleep", "30"], network="bridge"))
            for _ in range(3)
        ]
        code = "import socket; print(socket.gethostbyname(socket.gethostname()))"
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(supervisor.__file__))}
        other = await trio.run_process(
            [sys.executable, "-m", "supervisor", "run", "--network", "bridge", "--", "python3", "-c", code],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
        )
        assert other.returncode == 0, other.stderr
        theirs = other.stdout.decode().strip()
        assert ipaddress.IPv4Address(theirs) in ipaddress.IPv4Network(SUBNET)
        assert theirs not in {c.addresses[0] for c in ours}
        # Its supervisor is gone, ours still uses the bridge: the bridge stays.
        assert os.path.exists(f"/sys/class/net/{BRIDGE}")
        for c in ours:
            c.kill()


AGENT = """
import json, socket, sys, threading, time
me = socket.gethostbyname(socket.gethostname())
srv = socket.socket()
srv.bind(("0.0.0.0", 7000))
srv.listen(128)
def serve():
    while True:
        c, _ = srv.accept()
        c.sendall(me.encode() + b"\\n")
        c.close()
threading.Thread(target=serve, daemon=True).start()
deadline = time.monotonic() + 60
while True:
    try:
        reg = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
# The host answers once all 50 registered (bounded by its own timeouts):
# under load that can take longer than the connect timeout.
reg.settimeout(None)
f = reg.makefile("rw")
f.write(me + "\\n"); f.flush()
peers = json.loads(f.readline())
ok, failed = 0, []
for peer in peers:
    if peer == me:
        continue
    try:
        c = socket.create_connection((peer, 7000), timeout=10)
        answer = c.makefile().readline().strip()
        c.close()
    except OSError as exc:
        answer = repr(exc)
    if answer == peer:
        ok += 1
    else:
        failed.append((peer, answer))
f.write(json.dumps([ok, failed]) + "\\n"); f.flush()
f.readline()  # wait until the host has every answer (peers keep serving until then)
"""


def _mesh_targets(addresses: list[str]) -> dict[str, list[str]]:
    """Which peers each container connects to: all of them if the kernel's
    neighbour table can hold a full mesh, else the next few in a ring.

    The ARP table is one table for *all* network namespaces, limited by
    ``net.ipv4.neigh.default.gc_thresh3`` (1024 by default): 50 containers
    talking all-to-all need about 2 * 50 * 49 entries and overflow it
    ("neighbor table overflow"), so the default case checks a ring in which
    every container reaches, and is reached by, ``k`` others.
    """
    n = len(addresses)
    with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
        limit = int(f.read())
    k = n - 1 if 2 * n * (n - 1) + 4 * n < limit // 2 else 4
    return {a: [addresses[(i + j) % n] for j in range(1, k + 1)] for i, a in enumerate(addresses)}


async def _read_line(stream: trio.SocketStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"connection closed after {line!r}")
        line += chunk
    return line


ORPHAN_SERVER = """
import socket, time
srv = socket.socket()
srv.bind(("0.0.0.0", 7000))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
time.sleep(3600)
"""

ORPHAN_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 7000), timeout=10)
print("connected", flush=True)
sys.stdin.readline()  # the server and its namespace are gone now
s.sendall(b"x" * 4096)  # never acknowledged: still retransmitted after we exit
"""


async def _wait_gone(links: set[str], timeout: float) -> bool:
    with trio.move_on_after(timeout):
        while links & _our_links():
            await trio.sleep(0.01)
        return True
    return False


async def _leave_an_orphaned_socket(sup: Supervisor, nursery: trio.Nursery) -> tuple[set[str], set[str]]:
    """Run a client that exits with data its dead server never acknowledges.

    Returns:
        the client's veth and the server's links (its veth, maybe the
        bridge), once the client has exited.
    """
    before = _our_links()
    server = await nursery.start(
        partial(sup.run, py(ORPHAN_SERVER, network="bridge"), check=False, capture_output=False, stdout=supervisor.PIPE)
    )
    assert server.stdout is not None
    assert await server.stdout.receive() == b"ready\n"
    server_links = _our_links() - before
    spec = py(ORPHAN_CLIENT, server.addresses[0], network="bridge")
    client = await nursery.start(
        partial(sup.run, spec, check=False, capture_output=False, stdin=supervisor.PIPE, stdout=supervisor.PIPE)
    )
    assert client.stdout is not None
    assert client.stdin is not None
    assert await client.stdout.receive() == b"connected\n"
    client_veth = _our_links() - before - server_links
    assert len(client_veth) == 1, client_veth
    server.kill()
    assert (await server.wait()).signal == 9
    assert await _wait_gone(server_links - {BRIDGE}, 10), "the server's veth outlived its namespace"
    await client.stdin.send(b"go\n")
    assert (await client.wait()).exit_code == 0
    return client_veth, server_links


async def test_veth_held_by_an_orphaned_socket_is_deleted() -> None:
    """A container that exits with unacknowledged data keeps its namespace alive:
    the kernel retransmits to the dead peer for minutes. Its veth still goes,
    :data:`network.VETH_GRACE` after the container ends."""
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        client_veth, _ = await _leave_an_orphaned_socket(sup, nursery)
        # The orphaned socket holds the namespace, and so the veth ...
        await trio.sleep(0.5)
        assert client_veth <= _our_links(), "expected the orphaned socket to keep the veth (kernel behaviour)"
        # ... until the janitor deletes it, while the supervisor goes on.
        assert await _wait_gone(client_veth, network.VETH_GRACE + 5)
        assert (await sup.run(Spec(["true"]), check=False)).ok


async def test_supervisor_exit_deletes_veths_the_kernel_kept() -> None:
    """The same orphan, then the supervisor exits at once: no veth outlives it."""
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        client_veth, server_links = await _leave_an_orphaned_socket(sup, nursery)
        exiting = time.monotonic()
    assert not (client_veth | server_links) & _our_links()
    # Bounded by the exit grace, not by the kernel's minutes of retransmission.
    assert time.monotonic() - exiting < network.VETH_EXIT_GRACE + 5


async def _registrations(
    listener: trio.socket.SocketType, n: int, conns: dict[str, trio.SocketStream], timeout: float
) -> None:
    """Accept ``n`` agents' connections; each names itself on its first line.

    Lines are read concurrently, so one slow agent never holds up the
    others; the names must be the connections' source addresses.
    """

    async def register(conn: trio.socket.SocketType, peer: str) -> None:
        stream = trio.SocketStream(conn)
        line = (await _read_line(stream)).decode().strip()
        assert line == peer, (line, peer)
        conns[peer] = stream

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as readers:
            for _ in range(n):
                conn, peer = await listener.accept()
                readers.start_soon(register, conn, peer[0])


async def test_fifty_bridged_containers_all_talk() -> None:
    """50 at once: distinct addresses; each reaches the bridge and its peers."""
    n = 50
    listener = await _freebind_listener(GATEWAY)
    port = listener.getsockname()[1]
    conns: dict[str, trio.SocketStream] = {}
    try:
        async with Supervisor() as sup, trio.open_nursery() as nursery:
            handles = []

            async def start_one() -> None:
                handles.append(await nursery.start(sup.run, py(AGENT, GATEWAY, str(port), network="bridge")))

            async with trio.open_nursery() as starters:
                for _ in range(n):
                    starters.start_soon(start_one)
            addresses = [c.addresses[0] for c in handles]
            assert len(set(addresses)) == n
            # container -> bridge: each registers from its own address
            await _registrations(listener, n, conns, timeout=120)
            if sorted(conns) != sorted(addresses):
                for c in handles:
                    c.kill()
                silent = {c.addresses[0]: await c.wait() for c in handles if c.addresses[0] not in conns}
                pytest.fail(
                    f"{len(silent)} of {n} containers never registered: "
                    + "; ".join(f"{a}: {r.reason} {r.exit_code} {r.stderr[-300:]!r}" for a, r in silent.items())
                )
            # container -> container
            targets = _mesh_targets(sorted(addresses))
            with trio.fail_after(120):
                for address, stream in conns.items():
                    await stream.send_all(json.dumps(targets[address]).encode() + b"\n")
                outcome = {a: json.loads(await _read_line(s)) for a, s in conns.items()}
                for stream in conns.values():
                    await stream.send_all(b"bye\n")
            assert outcome == {a: [len(targets[a]), []] for a in addresses}
            results = [await c.wait() for c in handles]
    finally:
        for stream in conns.values():
            with trio.CancelScope(shield=True):
                await stream.aclose()
        listener.close()
    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results if r.exit_code]


async def test_benchmark_setup_and_teardown_cost(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Printed, not asserted: what networking adds to a container's start and end.

    * ``network_ms``: the NETWORK phase as PID 1 sees it (request to ack + lo up);
    * steps of :func:`network.allocate_blocking` and :func:`network.connect_blocking`;
    * ``detach_ms``: what ``release()`` waits for (freeing the address);
    * ``veth_gone_ms``: from ``run()`` returning until the kernel has removed
      the host end of the veth (nothing waits for this);
    * ``wall_ms``: the whole ``run()`` of ``true``;
    * ``burst``: 20 containers started at once, total and per container.
    """
    rounds = 20
    detach_ms: list[float] = []
    real_detach = network.bridge.detach

    async def timed_detach(att: network.Attachment, janitor: network.Janitor) -> None:
        t = time.perf_counter()
        await real_detach(att, janitor)
        detach_ms.append((time.perf_counter() - t) * 1e3)

    monkeypatch.setattr(network.bridge, "detach", timed_detach)
    stats: dict[str, dict[str, list[float]]] = {}
    steps: dict[str, list[float]] = {}
    async with Supervisor() as sup:
        await sup.run(Spec(["true"], network="bridge"))  # warm-up (imports pyroute2)
        for mode in ("none", "bridge"):
            rec: dict[str, list[float]] = {"network_ms": [], "wall_ms": [], "veth_gone_ms": []}
            for _ in range(rounds):
                veths_before = {n for n in os.listdir("/sys/class/net") if n.startswith(network.VETH_PREFIX)}
                t = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    container = await nursery.start(sup.run, Spec(["true"], network=mode))
                    result = await container.wait()
                done = time.perf_counter()
                rec["wall_ms"].append((done - t) * 1e3)
                ph = {p.name: p.seconds for p in result.phases}
                rec["network_ms"].append((ph["hostname"] - ph["network"]) * 1e3)
                if mode == "bridge":
                    att = container._resources.attachment if container._resources else None
                    assert att is not None
                    for name, seconds in att.timings:
                        steps.setdefault(name, []).append(seconds * 1e3)
                    # The veth dies with the netns, asynchronously: nothing above waited for it.
                    while {n for n in os.listdir("/sys/class/net") if n.startswith(network.VETH_PREFIX)} - veths_before:
                        await trio.sleep(0.001)
                    rec["veth_gone_ms"].append((time.perf_counter() - done) * 1e3)
            stats[mode] = rec
        burst: dict[str, float] = {}
        for mode in ("none", "bridge"):
            t = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(sup.run, Spec(["true"], network=mode))
            burst[mode] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
    exit_ms = (time.perf_counter() - t) * 1e3
    with capsys.disabled():
        print(f"\nnetwork cost per container (median of {rounds} sequential runs of `true`):")
        for mode, rec in stats.items():
            print(f"  {mode:<6} " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in rec.items() if v))
        print("  network steps (ms): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in steps.items()))
        print(f"  detach_ms (release waits for this) {statistics.median(detach_ms):.2f}")
        for mode, ms in burst.items():
            print(f"  burst of 20 {mode:<6} {ms:.0f} ms total, {ms / 20:.1f} ms per container")
        print(f"  supervisor exit (deletes the bridge) {exit_ms:.1f} ms")


async def test_bridge_is_host_local_and_rootfs_without_etc_files(busybox: str) -> None:
    """The bridge never forwards; a rootfs without /etc/hosts keeps its own /etc untouched."""
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        container = await nursery.start(
            sup.run, Spec(["sh", "-c", "ls /etc; sleep 1"], rootfs=busybox, network="bridge")
        )
        assert container.addresses
        with open(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding") as f:
            assert f.read().strip() == "0"
        # The default route inside points at the bridge.
        with open(f"/proc/{container.pid}/net/route") as f:
            routes = [line.split() for line in f.read().splitlines()[1:]]
        assert [(r[0], r[1], socket.inet_ntoa(bytes.fromhex(r[2])[::-1])) for r in routes if r[1] == "00000000"] == [
            ("eth0", "00000000", GATEWAY)
        ]
        result = await container.wait()
    assert result.stdout.decode().split() == ["group", "passwd"]


def test_cli_network_options() -> None:
    from supervisor._cli import build_parser
    from supervisor._cli.spec import spec_from_args

    parser = build_parser()
    args = parser.parse_args(
        ["run", "--network", "bridge", "--ip", "10.88.9.9", "-p", "8080:80", "--publish", "53:53/udp", "--", "true"]
    )
    spec = spec_from_args(parser, args)
    assert (spec.network, spec.ip) == ("bridge", "10.88.9.9")
    assert spec.publish == (Publish(8080, 80), Publish(53, 53, "udp"))
    assert spec_from_args(parser, parser.parse_args(["run", "--", "true"])).network == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--network", "nat", "--", "true"])


CRASHING_SUPERVISOR = """
import sys, trio, supervisor
async def main():
    async with supervisor.Supervisor() as sup, trio.open_nursery() as nursery:
        c = await nursery.start(sup.run, supervisor.Spec(["sleep", "60"], network="bridge", subnet=sys.argv[1]))
        print(c.addresses[0], flush=True)
        await trio.sleep(60)
trio.run(main)
"""


async def test_crashed_supervisors_network_is_swept() -> None:
    """SIGKILL a supervisor: the next one's start-up sweep removes its lease, folder and bridge."""
    subnet = "10.89.0.0/24"  # a bridge of its own, so the sweep can delete it
    bridge = network.bridge_name(subnet)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(supervisor.__file__))}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SUPERVISOR, subnet], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(subnet)
        etc = [n for n in os.listdir(os.path.join(run_root(), "etc")) if n.startswith(f"{proc.pid}-")]
        assert len(etc) == 1
        assert os.path.exists(f"/sys/class/net/{bridge}")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    async with Supervisor():
        pass  # its start-up sweep
    assert not os.path.exists(os.path.join(run_root(), "etc", etc[0]))
    assert not os.path.exists(f"{network.NET_DIR}/{bridge}.json")
    with trio.fail_after(5):
        while os.path.exists(f"/sys/class/net/{bridge}"):
            await trio.sleep(0.01)


ENDED_THEN_CRASHING = """
import sys, trio, supervisor
async def main():
    async with supervisor.Supervisor() as sup:
        await sup.run(supervisor.Spec(["true"], network="bridge", subnet=sys.argv[1]))
        print("ended", flush=True)  # the bridge lingers for the next container
        await trio.sleep(60)
trio.run(main)
"""


async def test_a_bridge_left_by_a_crash_after_its_last_container_is_swept() -> None:
    """The bridge outlives its containers: killed then, the supervisor still leaves it in its ledger."""
    subnet = "10.89.1.0/24"
    bridge = network.bridge_name(subnet)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(supervisor.__file__))}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENDED_THEN_CRASHING, subnet], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ended"
        assert os.path.exists(f"/sys/class/net/{bridge}")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    report = supervisor.collect_garbage()
    assert any(r.get("bridge") == bridge for r in report.removed), report
    with trio.fail_after(5):
        while os.path.exists(f"/sys/class/net/{bridge}"):
            await trio.sleep(0.01)


HASH_UNTIL_EOF = """
import hashlib, socket, sys
srv = socket.socket()
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen()
c, _ = srv.accept()
h, n = hashlib.sha256(), 0
while True:
    data = c.recv(65536)
    if not data:
        break
    h.update(data)
    n += len(data)
c.sendall(f"{n} {h.hexdigest()}".encode())
c.close()
"""


async def test_published_port_relays_bulk_data_and_half_close() -> None:
    import hashlib

    port = _free_port()
    payload = os.urandom(4 << 20)
    spec = py(HASH_UNTIL_EOF, "9000", network="bridge", publish=[f"{port}:9000"])
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        container = await nursery.start(sup.run, spec)
        with trio.fail_after(30):
            while True:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                try:
                    await stream.send_all(payload)
                    await stream.send_eof()  # the proxy must pass the half-close on
                    reply = b""
                    while chunk := await stream.receive_some(65536):
                        reply += chunk
                except trio.BrokenResourceError:
                    reply = b""
                finally:
                    await stream.aclose()
                if reply:
                    break
                await trio.sleep(0.05)  # the server was not listening yet
        result = await container.wait()
    assert result.exit_code == 0, result.stderr
    assert reply.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
