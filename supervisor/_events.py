"""Structured events about every container of a supervisor (``sup.events()``)."""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import AsyncIterator

import anyio

from ._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, Literal

if TYPE_CHECKING:
    EventKind = Literal["phase", "started", "exited", "failed", "cleaned_up", "dropped"]
else:
    EventKind = str  # at run time: the alias needs typing.Literal, which is not imported


@record
class Event:
    """One thing that happened to one container.

    Attributes:
        kind: ``"phase"`` (a setup phase started), ``"started"`` (the payload
            runs), ``"exited"`` (the payload ended), ``"failed"`` (setup
            failed), ``"cleaned_up"`` (every host-side resource is released),
            or ``"dropped"``: this reader lagged, and ``data["count"]`` events
            before the next ones were dropped (its container id and hostname
            are empty).
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


#: Events an ``events()`` iterator holds for its reader by default.
DEFAULT_MAX_BUFFERED = 1024


class _Subscriber:
    """One iterator's buffer: at most ``limit`` events, the oldest dropped and counted."""

    def __init__(self, limit: int | None) -> None:
        self.queue: deque[Event] = deque()
        self.limit = limit
        self.dropped = 0
        self.closed = False
        self.wakeup: anyio.Event | None = None

    def put(self, event: Event) -> None:
        if self.limit is not None and len(self.queue) >= self.limit:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(event)
        self.wake()

    def wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()
            self.wakeup = None


class EventHub:
    """Fans events out to every live ``events()`` iterator.

    Publishing never blocks a container: each subscriber has a buffer of its
    own, bounded (by default) so that a reader that lags cannot make the
    supervisor's memory grow without end. When it is full the oldest event is
    dropped; the reader then gets one ``"dropped"`` event, saying how many,
    before the events that followed (``data["count"]``).
    """

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
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
        for subscriber in self._subscribers:
            subscriber.put(event)

    def close(self) -> None:
        """End every subscriber's iteration (the supervisor is closing)."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.closed = True
            subscriber.wake()
        self._subscribers.clear()

    def subscribe(self, max_buffered: int | None = DEFAULT_MAX_BUFFERED) -> AsyncIterator[Event]:
        """Iterate over events from this call on, until the supervisor closes.

        Args:
            max_buffered: the most events held for this reader (``None``: no
                bound); beyond it the oldest are dropped and counted.

        Raises:
            ValueError: ``max_buffered`` is below 1.
        """
        if max_buffered is not None and (not isinstance(max_buffered, int) or max_buffered < 1):
            raise ValueError(f"max_buffered must be at least 1 or None, not {max_buffered!r}")
        subscriber = _Subscriber(max_buffered)
        if self._closed:
            subscriber.closed = True
        else:
            self._subscribers.add(subscriber)
        iterator = self._iterate(subscriber)
        # An iterator dropped without ever being started runs no finally:
        # unsubscribe it when it goes, or every run would keep publishing.
        weakref.finalize(iterator, self._subscribers.discard, subscriber)
        return iterator

    async def _iterate(self, subscriber: _Subscriber) -> AsyncIterator[Event]:
        try:
            while True:
                if subscriber.dropped:
                    count, subscriber.dropped = subscriber.dropped, 0
                    yield Event("dropped", "", "", time.time(), None, {"count": count})
                    continue
                if subscriber.queue:
                    yield subscriber.queue.popleft()
                    continue
                if subscriber.closed:
                    return
                subscriber.wakeup = anyio.Event()
                await subscriber.wakeup.wait()
        finally:
            self._subscribers.discard(subscriber)
