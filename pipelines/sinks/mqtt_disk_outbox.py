"""The MQTT sink's durable outbox: QoS>=1 messages in SQLite (WAL) until the broker acknowledges them.

Same methods as the in-memory :class:`~pipelines.sinks.mqtt_outbox.Outbox`, so the sink does not
care which it has. Where each message is:

    put() -> pending (memory) -> [writer commits] -> ready (memory cache of the oldest rows)
          -> pop() -> in flight (the sink's) -> ack() -> [writer deletes the row]

or, when the cache is full (a long outage), committed rows stay on disk only and the writer
loads them into the cache, oldest first, as the feeder empties it. The feeder only ever sees
committed messages: nothing reaches the broker that a crash could take back.

One writer thread does all the SQL. It commits at most once per ``commit_interval_s``: the first
message after a quiet spell is written at once, and under load every transaction carries all
that arrived meanwhile (inserts, deletes of acknowledged rows, the streams' ``seq`` high-water
marks, and the rows dropped to stay within bounds), so the cost per message stays far below a
millisecond and producers only take a lock for a deque append.

Bounds (``capacity`` messages, ``max_bytes``) count every stored row, in flight or not; when a
commit would go over, the oldest rows not in flight go first and are counted in ``dropped``.
If the disk fails (full, read-only), the batch stays in memory and is retried; while older rows
wait on disk, newer ones are not sent ahead of them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_agent.pipelines import state
from edge_agent.pipelines.sequence import UPSERT
from edge_agent.pipelines.sinks.mqtt_outbox import OutMessage

log = logging.getLogger("edge_agent.mqtt.outbox")

_INSERT = "INSERT INTO outbox (id, topic, payload, qos, retain, expires, created) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
# Rows per INSERT statement. sqlite3 releases the GIL around every statement step; a busy event
# loop thread then holds it for a whole switch interval (5 ms) before this writer runs again, so one
# statement per row crawls under a burst. 100 rows x 7 values stay far below SQLite's variable limit.
_ROWS_PER_INSERT = 100
_YIELD_EVERY = 64
_SIZE = "length(payload) + length(CAST(topic AS BLOB))"
_LOAD_CHUNK = 256
_ERROR_LOG_INTERVAL_S = 60.0
_RETRY_S = 1.0
# Deleting acknowledged rows is not urgent (a crash before it only means a resend): they wait for
# the next insert, or this long, or this many, so a quiet stream costs one transaction a message.
_ACK_DELAY_S = 0.25
_ACK_BATCH = 512


class DiskOutbox:
    """A FIFO of messages in ``path`` (SQLite, WAL); see the module docstring."""

    durable = True

    def __init__(
        self,
        path: Path,
        *,
        agent_id: str,
        capacity: int,
        max_bytes: int | None = None,
        fsync: bool = False,
        on_drop: Callable[[int], None] | None = None,
        on_ready: Callable[[], None] | None = None,
        commit_interval_s: float = 0.005,
        cache_count: int = 1000,
        cache_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.path = Path(path)
        self.agent_id = agent_id
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.on_drop = on_drop
        self.on_ready = on_ready
        self._interval = commit_interval_s
        self._puts = 0
        self._cache_count = cache_count
        self._cache_bytes = cache_bytes
        self._conn = state.connect(self.path, fsync=fsync)
        count, total, max_id = self._conn.execute(
            f"SELECT count(*), coalesce(sum({_SIZE}), 0), coalesce(max(id), 0) FROM outbox"
        ).fetchone()
        head = self._conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        self._cond = threading.Condition()
        self._pending: deque[OutMessage] = deque()
        self._pending_bytes = 0
        self._ready: deque[OutMessage] = deque()
        self._ready_bytes = 0
        self._acked: list[tuple[int, int]] = []  # (row id, size)
        self._next_order = int(max_id) + 1
        self._stored_count = int(count)  # rows in the table (in flight included)
        self._stored_bytes = int(total)
        self._disk_only = int(count)  # rows neither cached nor in flight
        self._disk_head_created: float | None = float(head[0]) if head else None
        self._loaded_through = 0  # every row with id <= this is cached, in flight or gone
        self._committed_through = int(max_id)
        self._want_load = count > 0
        self._stopping = False
        self._error_logged_at = -float("inf")
        self.restored = int(count)  # rows found from an earlier run
        self.dropped = 0
        self.commits = 0
        self.write_errors = 0
        self.last_write_error: str | None = None
        self._writer = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._writer.start()

    # -- producer / feeder side (any thread; locks only for deque work) ------------------------

    def __len__(self) -> int:
        """Messages waiting to be sent (not in flight): pending, cached and on disk only."""
        return len(self._pending) + len(self._ready) + self._disk_only

    @property
    def stored_bytes(self) -> int:
        return self._stored_bytes + self._pending_bytes

    @property
    def committed_through(self) -> int:
        """Highest row id known to be committed (for tests and tools)."""
        return self._committed_through

    def oldest_created(self) -> float | None:
        with self._cond:
            candidates = []
            if self._ready:
                candidates.append(self._ready[0].created)
            elif self._disk_only and self._disk_head_created is not None:
                candidates.append(self._disk_head_created)
            if self._pending:
                candidates.append(self._pending[0].created)
            return min(candidates) if candidates else None

    def put(self, message: OutMessage) -> int:
        dropped = 0
        with self._cond:
            message.order = self._next_order
            self._next_order += 1
            self._pending.append(message)
            self._pending_bytes += message.size
            # Only a writer stuck on a hung disk lets this grow: stay within the bound anyway.
            while len(self._pending) > self.capacity:
                self._pending_bytes -= self._pending.popleft().size
                dropped += 1
            self.dropped += dropped
            self._cond.notify()
            self._puts += 1
            yield_now = self._puts % _YIELD_EVERY == 0
        if yield_now:
            # A burst of puts on the event loop re-takes this lock and the GIL faster than the
            # writer thread can wake up, so nothing would be committed until the burst ends: let it in.
            time.sleep(0)
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return dropped

    def pop(self) -> OutMessage | None:
        with self._cond:
            if not self._ready:
                if self._disk_only:
                    self._want_load = True
                    self._cond.notify()
                return None
            message = self._ready.popleft()
            self._ready_bytes -= message.size
            if self._disk_only and self._low():
                self._want_load = True
                self._cond.notify()
            return message

    def _low(self) -> bool:
        # caller holds the lock: the cache is worth refilling from disk
        return len(self._ready) < self._cache_count // 2 and self._ready_bytes < self._cache_bytes // 2

    def push_front(self, message: OutMessage) -> None:
        with self._cond:
            self._ready.appendleft(message)
            self._ready_bytes += message.size

    def requeue(self, messages: Iterable[OutMessage]) -> int:
        ordered = sorted(messages, key=lambda m: m.order, reverse=True)
        with self._cond:
            self._ready.extendleft(ordered)
            self._ready_bytes += sum(m.size for m in ordered)
        return 0

    def ack(self, message: OutMessage) -> None:
        with self._cond:
            self._acked.append((message.order, message.size))
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> int:
        """Write what is pending, stop the writer; returns the messages kept for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("MQTT outbox: the writer did not finish within %.1f s (disk hung?)", timeout)
        return self._stored_count + len(self._pending)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        last = -float("inf")
        try:
            while True:
                with self._cond:
                    self._wait_for_work()
                    stopping = self._stopping
                wait = last + self._interval - time.monotonic()
                if wait > 0 and not stopping:
                    time.sleep(wait)
                ok = self._cycle()
                last = time.monotonic()
                if stopping:
                    return
                if not ok:
                    time.sleep(_RETRY_S)
        except Exception:  # a bug here must not silently stop persistence
            log.exception("MQTT outbox writer crashed")
        finally:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def _wait_for_work(self) -> None:
        # caller holds the lock
        ack_deadline: float | None = None
        while not (self._pending or self._want_load or self._stopping or len(self._acked) >= _ACK_BATCH):
            if not self._acked:
                self._cond.wait()
                continue
            now = time.monotonic()
            if ack_deadline is None:
                ack_deadline = now + _ACK_DELAY_S
            if now >= ack_deadline:
                return
            self._cond.wait(ack_deadline - now)

    def _over(self, count: int, size: int) -> bool:
        return count > self.capacity or (self.max_bytes is not None and size > self.max_bytes and count > 1)

    def _cycle(self) -> bool:
        with self._cond:
            batch = list(self._pending)
            self._pending.clear()
            batch_bytes, self._pending_bytes = self._pending_bytes, 0
            acked, self._acked = self._acked, []
            self._want_load = False
        conn = self._conn
        evicted_cached: list[OutMessage] = []
        evicted_ids: list[int] = []
        deleted = deleted_bytes = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            if batch:
                for start in range(0, len(batch), _ROWS_PER_INSERT):
                    chunk = batch[start : start + _ROWS_PER_INSERT]
                    values = [
                        v
                        for m in chunk
                        for v in (m.order, m.topic, m.payload, m.qos, int(m.retain), int(m.expires), m.created)
                    ]
                    conn.execute(_INSERT + ", ".join([_ROW] * len(chunk)), values)
                marks: dict[str, int] = {}
                for m in batch:
                    if m.stream is not None and m.stream_seq is not None:
                        marks[m.stream] = max(marks.get(m.stream, 0), m.stream_seq + 1)
                if marks:
                    conn.executemany(UPSERT, [(self.agent_id, s, n) for s, n in marks.items()])
            if acked:
                cursor = conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i, _ in acked])
                deleted = cursor.rowcount
                deleted_bytes = sum(size for _, size in acked)
                if deleted != len(acked):  # some were never stored (written while the disk failed)
                    deleted_bytes = -1
            count = self._stored_count + len(batch) - deleted
            if deleted_bytes < 0:
                size = int(conn.execute(f"SELECT coalesce(sum({_SIZE}), 0) FROM outbox").fetchone()[0])
            else:
                size = self._stored_bytes + batch_bytes - deleted_bytes
            if self._over(count, size):
                count, size = self._evict(conn, batch, count, size, evicted_cached, evicted_ids)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._write_failed(exc, batch, batch_bytes, acked, evicted_cached)
            return False
        self.commits += 1
        self.last_write_error = None
        evicted = len(evicted_cached) + len(evicted_ids)
        placed = False
        with self._cond:
            self._stored_count, self._stored_bytes = count, size
            old_committed = self._committed_through
            gone = set(evicted_ids)
            self._disk_only -= sum(1 for i in evicted_ids if i <= old_committed)
            survivors = [m for m in batch if m.order not in gone]
            if batch:
                self._committed_through = batch[-1].order
            if self._disk_only <= 0:
                self._disk_only = 0
                self._loaded_through = old_committed
            if survivors:
                survivors_bytes = sum(m.size for m in survivors)
                room = len(self._ready) + len(survivors) <= self._cache_count and (
                    self._ready_bytes + survivors_bytes <= self._cache_bytes
                )
                if self._disk_only == 0 and room:
                    self._ready.extend(survivors)
                    self._ready_bytes += survivors_bytes
                    self._loaded_through = self._committed_through
                    placed = True
                else:
                    if self._disk_only == 0:
                        self._disk_head_created = survivors[0].created
                    self._disk_only += len(survivors)
            elif self._disk_only == 0:
                self._loaded_through = self._committed_through
            self.dropped += evicted
            load = self._disk_only > 0 and self._low()
        if evicted and self.on_drop is not None:
            self.on_drop(evicted)
        if load:
            placed = self._load() or placed
        if placed and self.on_ready is not None:
            self.on_ready()
        return True

    def _evict(
        self,
        conn: sqlite3.Connection,
        batch: list[OutMessage],
        count: int,
        size: int,
        evicted_cached: list[OutMessage],
        evicted_ids: list[int],
    ) -> tuple[int, int]:
        """Delete the oldest rows not in flight until within bounds (inside the transaction)."""
        with self._cond:
            while self._over(count, size) and self._ready:
                message = self._ready.popleft()
                self._ready_bytes -= message.size
                evicted_cached.append(message)
                count -= 1
                size -= message.size
        after = self._loaded_through
        while self._over(count, size) and self._disk_only:
            rows = conn.execute(
                f"SELECT id, {_SIZE} FROM outbox WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after, self._committed_through, _LOAD_CHUNK),
            ).fetchall()
            if not rows:
                break
            for row_id, row_size in rows:
                if not self._over(count, size):
                    break
                evicted_ids.append(row_id)
                after = row_id
                count -= 1
                size -= row_size
            else:
                continue
            break
        for message in batch:  # the new ones last: everything older is gone or in flight
            if not self._over(count, size):
                break
            evicted_ids.append(message.order)
            count -= 1
            size -= message.size
        ids = [m.order for m in evicted_cached] + evicted_ids
        conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        return count, size

    def _load(self) -> bool:
        """Move the oldest disk-only rows into the cache; True when something was loaded."""
        loaded = False
        while True:
            with self._cond:
                room = self._cache_count - len(self._ready)
                if room <= 0 or self._disk_only <= 0 or self._ready_bytes >= self._cache_bytes:
                    return loaded
                after = self._loaded_through
            try:
                rows = self._conn.execute(
                    "SELECT id, topic, payload, qos, retain, expires, created FROM outbox "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (after, min(room, _LOAD_CHUNK)),
                ).fetchall()
            except sqlite3.Error as exc:
                self._write_failed(exc, [], 0, [], [])
                return loaded
            messages = [
                OutMessage(topic, bytes(payload), qos, bool(retain), bool(expires), order=row_id, created=created)
                for row_id, topic, payload, qos, retain, expires, created in rows
            ]
            with self._cond:
                if not messages:
                    self._disk_only = 0
                    self._loaded_through = self._committed_through
                    return loaded
                self._ready.extend(messages)
                self._ready_bytes += sum(m.size for m in messages)
                self._loaded_through = messages[-1].order
                self._disk_only = max(0, self._disk_only - len(messages))
                loaded = True

    def _write_failed(
        self,
        exc: sqlite3.Error,
        batch: list[OutMessage],
        batch_bytes: int,
        acked: list[tuple[int, int]],
        evicted_cached: list[OutMessage],
    ) -> None:
        self.write_errors += 1
        self.last_write_error = f"{type(exc).__name__}: {exc}"
        with self._cond:
            self._ready.extendleft(reversed(evicted_cached))
            self._ready_bytes += sum(m.size for m in evicted_cached)
            self._pending.extendleft(reversed(batch))
            self._pending_bytes += batch_bytes
            self._acked[:0] = acked[-100_000:]
        now = time.monotonic()
        if now - self._error_logged_at >= _ERROR_LOG_INTERVAL_S:
            self._error_logged_at = now
            log.error(
                "MQTT outbox: cannot write %s (%s); %d message(s) held in memory meanwhile, retrying",
                self.path,
                exc,
                len(self._pending),
            )
