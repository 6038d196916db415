"""Structured events about every container of a supervisor (``sup.events()``)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, Literal

if TYPE_CHECKING:
    EventKind = Literal["phase", "started", "exited", "failed", "cleaned_up"]
else:
    EventKind = str  # at run time: the alias needs typing.Literal, which is not imported


@record
class Event:
    """One thing that happened to one container.

    Attributes:
        kind: ``"phase"`` (a setup phase started), ``"started"`` (the payload
            runs), ``"exited"`` (the payload ended), ``"failed"`` (setup
            failed), ``"cleaned_up"`` (every host-side resource is released).
        container_id: the supervisor's id for the container.
        hostname: the container's hostname.
        timestamp: wall-clock time (``time.time()``) of the event.
        phase: the phase name, for ``"phase"`` and ``"failed"`` events.
        data: more detail: the result (as JSON) for ``"exited"``/``"failed"``,
            the seconds since the run started for ``"phase"``.
    """

    kind: EventKind
    container_id: str
    hostname: str
    timestamp: float
    phase: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as one JSON-ready dict (the CLI prints one per line)."""
        out: dict[str, Any] = {
            "event": self.kind,
            "id": self.container_id,
            "hostname": self.hostname,
            "time": round(self.timestamp, 6),
        }
        if self.phase is not None:
            out["phase"] = self.phase
        out.update(self.data)
        return out


class EventHub:
    """Fans events out to every live ``events()`` iterator.

    Publishing never blocks a container: each subscriber has an unbounded
    buffer, and a subscriber that went away is dropped.
    """

    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[Event]] = set()
        self._closed = False

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone iterates over events right now."""
        return bool(self._subscribers)

    def publish(self, kind: EventKind, container_id: str, hostname: str, phase: str | None = None, **data: Any) -> None:
        """Send one event to every subscriber (no-op without subscribers)."""
        if not self._subscribers:
            return
        event = Event(kind, container_id, hostname, time.time(), phase, data)
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(stream)

    def close(self) -> None:
        """End every subscriber's iteration (the supervisor is closing)."""
        self._closed = True
        for stream in self._subscribers:
            stream.close()
        self._subscribers.clear()

    def subscribe(self) -> AsyncIterator[Event]:
        """Iterate over events from this call on, until the supervisor closes."""
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        if self._closed:
            send.close()
        else:
            self._subscribers.add(send)
        return self._iterate(send, receive)

    async def _iterate(
        self, send: MemoryObjectSendStream[Event], receive: MemoryObjectReceiveStream[Event]
    ) -> AsyncIterator[Event]:
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._subscribers.discard(send)
            send.close()
