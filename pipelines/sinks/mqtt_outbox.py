"""The MQTT sink's bounded outbox: messages waiting for the broker, oldest dropped first.

Producers (the event loop, inference threads) only ever take this module's lock, and only for a
deque operation, so handing a message over costs microseconds whatever the broker is doing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class OutMessage:
    """One message to publish. ``seq`` is the outbox's own order, used to put messages back."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    expires: bool  # carries the MQTT v5 message expiry (predictions, stats)
    control: bool = False  # status / discovery: rebuilt on every connection, never counted
    seq: int = 0
    attempts: int = 0  # times it was sent on a connection that then dropped
    size: int = field(default=0)

    def __post_init__(self) -> None:
        self.size = len(self.payload) + len(self.topic.encode("utf-8"))


class Outbox:
    """A thread-safe FIFO that keeps at most ``capacity`` messages, dropping the oldest."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[OutMessage] = deque()
        self._lock = threading.Lock()
        self._next_seq = 0
        self.dropped = 0  # total dropped for lack of room; written under the lock only

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: OutMessage) -> int:
        """Append ``message``; returns how many old messages had to go to make room."""
        with self._lock:
            message.seq = self._next_seq
            self._next_seq += 1
            self._items.append(message)
            return self._trim()

    def pop(self) -> OutMessage | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def push_front(self, message: OutMessage) -> None:
        """Give back a message just popped and not sent (it keeps its place at the head)."""
        with self._lock:
            self._items.appendleft(message)
            self._trim()

    def requeue(self, messages: Iterable[OutMessage]) -> int:
        """Put unacknowledged messages back at the head, in their original order.

        They are older than anything queued, so when the outbox is over capacity they are the
        first to go: the bound stays ``capacity`` queued plus the in-flight window.
        """
        ordered = sorted(messages, key=lambda m: m.seq, reverse=True)
        with self._lock:
            self._items.extendleft(ordered)
            return self._trim()

    def drain(self) -> list[OutMessage]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def _trim(self) -> int:
        dropped = 0
        while len(self._items) > self.capacity:
            self._items.popleft()
            dropped += 1
        self.dropped += dropped
        return dropped
