"""The MQTT sink's in-memory outbox: messages waiting for the broker, oldest dropped first.

Producers (the event loop, inference threads) only ever take this module's lock, and only for a
deque operation, so handing a message over costs microseconds whatever the broker is doing.
``mqtt_disk_outbox.DiskOutbox`` offers the same methods with the messages on disk; the sink
uses this one for QoS 0 and where no state directory is configured (``MQTT_OUTBOX=memory``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class OutMessage:
    """One message to publish. ``order`` is the outbox's own order, used to put messages back."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    expires: bool  # carries the MQTT v5 message expiry (predictions, stats)
    control: bool = False  # status / discovery: rebuilt on every connection, never counted
    order: int = 0  # outbox position; the row id in the disk outbox
    attempts: int = 0  # times it was sent on a connection that then dropped
    size: int = field(default=0)
    created: float = field(default_factory=time.time)  # wall clock when it was queued
    stream: str | None = None  # predictions: the stream and its message seq, so the disk
    stream_seq: int | None = None  # outbox can record the stream's seq with the message

    def __post_init__(self) -> None:
        self.size = len(self.payload) + len(self.topic.encode("utf-8"))


class Outbox:
    """A thread-safe FIFO of at most ``capacity`` messages and ``max_bytes``, dropping the oldest."""

    durable = False

    def __init__(
        self, capacity: int, max_bytes: int | None = None, *, on_drop: Callable[[int], None] | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.on_drop = on_drop
        self._items: deque[OutMessage] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._next_order = 0
        self.dropped = 0  # total dropped for lack of room; written under the lock only
        self.restored = 0  # the memory outbox starts empty

    def __len__(self) -> int:
        return len(self._items)

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def oldest_created(self) -> float | None:
        with self._lock:
            return self._items[0].created if self._items else None

    def put(self, message: OutMessage) -> int:
        """Append ``message``; returns how many old messages had to go to make room."""
        with self._lock:
            message.order = self._next_order
            self._next_order += 1
            self._items.append(message)
            self._bytes += message.size
            dropped = self._trim()
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return dropped

    def pop(self) -> OutMessage | None:
        with self._lock:
            if not self._items:
                return None
            message = self._items.popleft()
            self._bytes -= message.size
            return message

    def push_front(self, message: OutMessage) -> None:
        """Give back a message just popped and not sent (it keeps its place at the head)."""
        with self._lock:
            self._items.appendleft(message)
            self._bytes += message.size
            self._trim()

    def requeue(self, messages: Iterable[OutMessage]) -> int:
        """Put unacknowledged messages back at the head, in their original order.

        They are older than anything queued, so when the outbox is over capacity they are the
        first to go: the bound stays ``capacity`` queued plus the in-flight window.
        """
        ordered = sorted(messages, key=lambda m: m.order, reverse=True)
        with self._lock:
            self._items.extendleft(ordered)
            self._bytes += sum(m.size for m in ordered)
            return self._trim()

    def ack(self, message: OutMessage) -> None:
        """The broker has it (nothing to forget here: a popped message is no longer held)."""

    def drain(self) -> list[OutMessage]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            return items

    def close(self, timeout: float = 5.0) -> int:
        """Nothing survives the process: returns 0 messages kept."""
        return 0

    def _trim(self) -> int:
        dropped = 0
        while len(self._items) > self.capacity or (
            self.max_bytes is not None and self._bytes > self.max_bytes and len(self._items) > 1
        ):
            self._bytes -= self._items.popleft().size
            dropped += 1
        self.dropped += dropped
        return dropped
