"""Published ports: a small async TCP/UDP proxy inside the supervisor.

The supervisor listens on ``host_ip:host_port`` (127.0.0.1 by default) and
relays to ``container_ip:container_port`` over the bridge. No NAT rule, no
forwarding sysctl: the host's network configuration is never changed, and the
proxy ends with the container (its cancel scope is cancelled by
``HostResources.release``).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import warnings
from collections.abc import Callable, Coroutine

import anyio
import anyio.abc
from anyio.abc import TaskStatus

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, Literal

if TYPE_CHECKING:
    from ..._spec import Publish

#: A UDP "session" (one client address) is dropped after this many idle seconds.
UDP_IDLE_TIMEOUT = 60.0
#: accept() errors that pass: the listener retries after :data:`_RETRY_S`.
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED})
_RETRY_S = 0.1
_CHUNK = 65536


async def serve_port(
    publish: Publish, target: str, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Forward ``publish`` to ``target`` until cancelled.

    Args:
        publish: the published port.
        target: the container's address.
        task_status: reports that the listener is bound.

    Raises:
        OSError: the host address/port cannot be bound (before ``started``).

    **Cancellation:** the listener and every relayed connection are closed.
    """
    if publish.protocol == "udp":
        await _serve_udp(publish, target, task_status)
    else:
        await _serve_tcp(publish, target, task_status)


async def _serve_tcp(publish: Publish, target: str, task_status: TaskStatus[None]) -> None:
    listener = await anyio.create_tcp_listener(local_host=publish.host_ip, local_port=publish.host_port)
    async with listener:
        task_status.started()

        async def handle(client: anyio.abc.SocketStream) -> None:
            async with client:
                try:
                    upstream = await anyio.connect_tcp(target, publish.container_port)
                except OSError:
                    return  # nothing listens in the container: the client sees EOF
                async with upstream, anyio.create_task_group() as tg:
                    tg.start_soon(_pipe, client, upstream, tg.cancel_scope)
                    tg.start_soon(_pipe, upstream, client, tg.cancel_scope)

        try:
            async with anyio.create_task_group() as tg:
                for one in listener.listeners:
                    assert isinstance(one, anyio.abc.SocketListener)
                    tg.start_soon(_accept_loop, one, handle)
        except Exception as exc:  # noqa: BLE001 - after started(): never take the supervisor down
            _stopped(publish, exc)


async def _accept_loop(
    listener: anyio.abc.SocketListener,
    handle: Callable[[anyio.abc.SocketStream], Coroutine[Any, Any, None]],
) -> None:
    """Accept on one listening socket; a transient error (out of fds or memory
    for a moment) is retried after :data:`_RETRY_S`, never fatal.

    Raises:
        OSError: any other accept error (the port stops); under trio, an
            :class:`anyio.BrokenResourceError` caused by it.
    """
    async with anyio.create_task_group() as connections:
        while True:
            try:
                client = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                # anyio's trio backend wraps the OSError (as the cause).
                cause = exc if isinstance(exc, OSError) else exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in _TRANSIENT:
                    raise
                await anyio.sleep(_RETRY_S)
                continue
            connections.start_soon(handle, client)


async def _pipe(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
    """Copy ``src`` to ``dst``, then half-close ``dst``; an error ends both directions."""
    try:
        async for chunk in src:
            await dst.send(chunk)
        await dst.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        scope.cancel()


async def _serve_udp(publish: Publish, target: str, task_status: TaskStatus[None]) -> None:
    family: Literal[socket.AddressFamily.AF_INET, socket.AddressFamily.AF_INET6] = (
        socket.AF_INET6 if ":" in publish.host_ip else socket.AF_INET
    )
    front = await anyio.create_udp_socket(family, local_host=publish.host_ip, local_port=publish.host_port)
    async with front:
        task_status.started()
        try:
            await _relay_udp(front, publish, target)
        except Exception as exc:  # noqa: BLE001 - after started(): never take the supervisor down
            _stopped(publish, exc)


def _stopped(publish: Publish, exc: BaseException) -> None:
    """Say that a published port stopped before its container (never silently)."""
    warnings.warn(
        f"supervisor: published port {publish.host_ip}:{publish.host_port}/{publish.protocol} stopped "
        f"relaying before its container ended: {exc!r}",
        RuntimeWarning,
        stacklevel=2,
    )


async def _relay_udp(front: anyio.abc.UDPSocket, publish: Publish, target: str) -> None:
    """Relay datagrams from each client address through a connected socket of its own."""
    sessions: dict[tuple[str, int], anyio.abc.ConnectedUDPSocket] = {}
    async with anyio.create_task_group() as tg:
        async for data, client in front:
            upstream = sessions.get(client)
            if upstream is None:
                try:
                    upstream = await anyio.create_connected_udp_socket(target, publish.container_port)
                except OSError:
                    continue
                sessions[client] = upstream
                tg.start_soon(_udp_replies, front, upstream, client, sessions)
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await upstream.send(data)


async def _udp_replies(
    front: anyio.abc.UDPSocket,
    upstream: anyio.abc.ConnectedUDPSocket,
    client: tuple[str, int],
    sessions: dict[tuple[str, int], anyio.abc.ConnectedUDPSocket],
) -> None:
    """Relay the container's replies to ``client`` until the session idles out."""
    try:
        async with upstream:
            while True:
                with anyio.move_on_after(UDP_IDLE_TIMEOUT) as idle:
                    data = await upstream.receive()
                if idle.cancelled_caught:
                    return
                await front.sendto(data, client[0], client[1])
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return
    finally:
        sessions.pop(client, None)
