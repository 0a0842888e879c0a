"""Per-stream ``seq`` numbers that continue across restarts, so a consumer's gap check spans crashes.

Who writes them to disk matters. With the durable MQTT outbox the *outbox* records each stream's
high-water mark in the same transaction as the messages (``autosave=False`` here): a crash then
loses exactly the messages that were never written, together with their numbers, and the next
run reuses those numbers; no consumer ever saw them, so there is neither a gap nor a duplicate.
Without a durable outbox (stdout only, QoS 0, ``MQTT_OUTBOX=memory``) this store saves its own
counters every ``interval_s`` from a background thread (``autosave=True``): a crash may then
repeat or skip the numbers of the last fraction of a second, and those messages were not
durable anyway.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from edge_agent.pipelines import state

log = logging.getLogger("edge_agent.sequence")

UPSERT = (
    "INSERT INTO sequences (agent_id, stream, next) VALUES (?, ?, ?) "
    "ON CONFLICT (agent_id, stream) DO UPDATE SET next = max(next, excluded.next)"
)


class SequenceStore:
    """Hands out 0, 1, 2, ... per stream; starts where the last run of ``agent_id`` stopped."""

    def __init__(
        self, agent_id: str, db_path: Path | None = None, *, autosave: bool = True, interval_s: float = 0.2
    ) -> None:
        self.agent_id = agent_id
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self._dirty: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        self._autosave = autosave
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if db_path is not None:
            self._conn = state.connect(db_path)
            rows = self._conn.execute("SELECT stream, next FROM sequences WHERE agent_id = ?", (agent_id,))
            self._next = {stream: int(value) for stream, value in rows}
            if autosave:
                self._thread = threading.Thread(target=self._saver, name="seq-saver", daemon=True)
                self._thread.start()

    def next(self, stream: str) -> int:
        """The number of the next message of ``stream``; thread-safe, never touches the disk."""
        with self._lock:
            seq = self._next.get(stream, 0)
            self._next[stream] = seq + 1
            self._dirty[stream] = seq + 1
            return seq

    def peek(self, stream: str) -> int:
        with self._lock:
            return self._next.get(stream, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._next)

    def flush(self) -> None:
        """Write the counters changed since the last flush (a no-op without a database)."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty or self._conn is None:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(UPSERT, [(self.agent_id, s, n) for s, n in dirty.items()])
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            with self._lock:
                for stream, value in dirty.items():
                    self._dirty[stream] = max(value, self._dirty.get(stream, 0))
            log.warning("cannot save sequence numbers to %s: %s (retrying)", state.DB_NAME, exc)

    def _saver(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def close(self) -> None:
        """Stop the saver and write the last counters (also in outbox mode: ``max`` keeps it safe)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
