"""What tracking keeps in STATE_DIR: track id blocks, cumulative line counts, run-time geometry.

* Track ids are reserved in blocks of ``ID_BLOCK``: the next block's start is written (and
  committed) before any id of the current block is handed out, so ids are never reused after a
  restart or a crash; a crash skips the rest of a block, which is harmless.
* Line totals (and zone counts, so that a restart can zero what a crash left retained on the
  broker) are saved by a background thread every ``interval_s`` (and on close): after a SIGKILL
  the last fraction of a second of counting may be lost, never double-counted.
* Zones and lines set through the control API are saved at once and override the environment's
  until they are cleared.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from edge_agent.pipelines import state

log = logging.getLogger("edge_agent.tracking.store")

ID_BLOCK = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracking_ids (agent_id TEXT NOT NULL, stream TEXT NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY (agent_id, stream));
CREATE TABLE IF NOT EXISTS line_counts (agent_id TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL,
    value INTEGER NOT NULL, PRIMARY KEY (agent_id, stream, key));
CREATE TABLE IF NOT EXISTS geometry (agent_id TEXT NOT NULL, stream TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (agent_id, stream));
"""


class TrackingStore:
    """Persistence of tracking state; without a ``db_path`` everything lives in memory only."""

    def __init__(self, agent_id: str, db_path: Path | None = None, *, interval_s: float = 0.5) -> None:
        self.agent_id = agent_id
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._ids: dict[str, list[int]] = {}  # stream -> [next id, end of the reserved block]
        self._dirty: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if db_path is not None:
            self._conn = state.connect(db_path)
            self._conn.executescript(_SCHEMA)
            self._thread = threading.Thread(target=self._saver, args=(interval_s,), name="tracking-saver", daemon=True)
            self._thread.start()

    # -- track ids ---------------------------------------------------------------------------------

    def id_source(self, stream: str) -> Any:
        """A callable handing out this stream's next track id (1, 2, ... continuing across runs)."""

        def next_id() -> int:
            with self._lock:
                block = self._ids.get(stream)
                if block is None or block[0] >= block[1]:
                    start = block[0] if block else self._stored_next(stream)
                    block = [start, start + ID_BLOCK]
                    self._reserve(stream, block[1])
                    self._ids[stream] = block
                value = block[0]
                block[0] += 1
                return value

        return next_id

    def _stored_next(self, stream: str) -> int:
        if self._conn is None:
            return 1
        row = self._conn.execute(
            "SELECT next FROM tracking_ids WHERE agent_id = ? AND stream = ?", (self.agent_id, stream)
        ).fetchone()
        return int(row[0]) if row else 1

    def _reserve(self, stream: str, end: int) -> None:
        if self._conn is None:
            return
        self._conn.execute(
            "INSERT INTO tracking_ids (agent_id, stream, next) VALUES (?, ?, ?) "
            "ON CONFLICT (agent_id, stream) DO UPDATE SET next = max(next, excluded.next)",
            (self.agent_id, stream, end),
        )

    # -- line totals -------------------------------------------------------------------------------

    def line_totals(self, stream: str) -> dict[str, int]:
        if self._conn is None:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, value FROM line_counts WHERE agent_id = ? AND stream = ?", (self.agent_id, stream)
            ).fetchall()
        return {str(k): int(v) for k, v in rows}

    def save_line_totals(self, stream: str, totals: dict[str, int]) -> None:
        with self._lock:
            for key, value in totals.items():
                self._dirty[(stream, key)] = value

    def clear_line_totals(self, stream: str, keep: set[str] | None = None) -> None:
        """Forget the totals of a stream (all, or those not in ``keep``), at once."""
        with self._lock:
            self._dirty = {k: v for k, v in self._dirty.items() if k[0] != stream or (keep and k[1] in keep)}
            if self._conn is None:
                return
            rows = self._conn.execute(
                "SELECT key FROM line_counts WHERE agent_id = ? AND stream = ?", (self.agent_id, stream)
            ).fetchall()
            gone = [(self.agent_id, stream, r[0]) for r in rows if not keep or r[0] not in keep]
            self._conn.executemany("DELETE FROM line_counts WHERE agent_id = ? AND stream = ? AND key = ?", gone)

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            if not dirty or self._conn is None:
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO line_counts (agent_id, stream, key, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (agent_id, stream, key) DO UPDATE SET value = excluded.value",
                    [(self.agent_id, s, k, v) for (s, k), v in dirty.items()],
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                for key, value in dirty.items():
                    self._dirty.setdefault(key, value)
                log.warning("cannot save line counts: %s (retrying)", exc)

    def _saver(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    # -- geometry set at run time ----------------------------------------------------------------------

    def geometry(self, stream: str) -> dict[str, Any] | None:
        if self._conn is None:
            return None
        with self._lock:
            row = self._conn.execute(
                "SELECT doc FROM geometry WHERE agent_id = ? AND stream = ?", (self.agent_id, stream)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def save_geometry(self, stream: str, doc: dict[str, Any] | None) -> None:
        if self._conn is None:
            return
        with self._lock:
            if doc is None:
                self._conn.execute("DELETE FROM geometry WHERE agent_id = ? AND stream = ?", (self.agent_id, stream))
            else:
                self._conn.execute(
                    "INSERT INTO geometry (agent_id, stream, doc) VALUES (?, ?, ?) "
                    "ON CONFLICT (agent_id, stream) DO UPDATE SET doc = excluded.doc",
                    (self.agent_id, stream, json.dumps(doc)),
                )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


__all__ = ["ID_BLOCK", "TrackingStore"]
