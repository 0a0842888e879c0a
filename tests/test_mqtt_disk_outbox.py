"""The durable outbox on a real SQLite file: order, bounds, restarts, the sequence high-water mark."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.pipelines import state
from edge_agent.pipelines.sequence import SequenceStore
from edge_agent.pipelines.sinks.mqtt_disk_outbox import DiskOutbox
from edge_agent.pipelines.sinks.mqtt_outbox import Outbox, OutMessage


def msg(i: int, stream: str = "door", size: int = 10) -> OutMessage:
    body = f"{i:0{size}d}".encode()
    return OutMessage(f"t/{stream}", body, 1, False, expires=True, stream=stream, stream_seq=i)


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def pop_all(box: DiskOutbox | Outbox, expected: int, timeout: float = 5.0) -> list[OutMessage]:
    out: list[OutMessage] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected:
        m = box.pop()
        if m is None:
            assert time.monotonic() < deadline, f"only {len(out)} of {expected} came out"
            time.sleep(0.002)
            continue
        out.append(m)
    return out


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / state.DB_NAME


def open_box(db: Path, **kw: object) -> DiskOutbox:
    db.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, object] = {"agent_id": "box-1", "capacity": 1000}
    options.update(kw)
    return DiskOutbox(db, **options)  # type: ignore[arg-type]


def test_messages_come_out_committed_in_order_and_acked_rows_go(db: Path) -> None:
    box = open_box(db)
    for i in range(50):
        box.put(msg(i))
    got = pop_all(box, 50)
    assert [int(m.payload) for m in got] == list(range(50))
    assert box.committed_through >= got[-1].order  # only committed rows are handed out
    for m in got:
        box.ack(m)
    assert box.close() == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unacknowledged_messages_survive_a_restart_in_order(db: Path) -> None:
    box = open_box(db)
    for i in range(30):
        box.put(msg(i, "door" if i % 2 else "yard"))
    sent = pop_all(box, 10)  # ten in flight, never acknowledged
    for m in sent[:4]:
        box.ack(m)
    assert box.close() == 26
    again = open_box(db)
    assert again.restored == 26 and len(again) == 26
    got = pop_all(again, 26)
    assert [int(m.payload) for m in got] == list(range(4, 30))
    assert [m.topic for m in got] == [f"t/{'door' if i % 2 else 'yard'}" for i in range(4, 30)]
    assert again.pop() is None
    assert again.close() == 26


def test_count_bound_drops_the_oldest_and_counts(db: Path) -> None:
    drops: list[int] = []
    box = open_box(db, capacity=100, on_drop=drops.append)
    for i in range(250):
        box.put(msg(i))
    until(lambda: box.committed_through == 250)
    until(lambda: len(box) <= 100)
    got = pop_all(box, len(box))
    assert [int(m.payload) for m in got] == list(range(150, 250))
    assert box.dropped == 150 == sum(drops)
    box.close()


def test_bytes_bound(db: Path) -> None:
    box = open_box(db, capacity=10_000, max_bytes=60 * 50)  # 60 bytes a message (10 topic + 50 body)
    for i in range(200):
        box.put(msg(i, size=54))
    until(lambda: box.committed_through == 200)
    assert box.stored_bytes <= 60 * 50
    got = pop_all(box, len(box))
    assert [int(m.payload) for m in got] == list(range(150, 200))
    box.close()


def test_a_long_backlog_streams_from_disk_through_a_small_cache(db: Path) -> None:
    box = open_box(db, cache_count=16, capacity=100_000)
    for i in range(2000):
        box.put(msg(i))
    until(lambda: box.committed_through == 2000)
    got = pop_all(box, 2000)
    assert [int(m.payload) for m in got] == list(range(2000))
    box.close()


def test_a_bound_reached_while_the_backlog_is_on_disk(db: Path) -> None:
    box = open_box(db, cache_count=8, capacity=500)
    for i in range(300):
        box.put(msg(i))
    until(lambda: box.committed_through == 300)
    for i in range(300, 1200):
        box.put(msg(i))
    until(lambda: box.committed_through == 1200)
    got = pop_all(box, 500)
    assert [int(m.payload) for m in got] == list(range(700, 1200))
    assert box.dropped == 700
    box.close()


def test_requeued_messages_go_first_in_their_order(db: Path) -> None:
    box = open_box(db)
    for i in range(6):
        box.put(msg(i))
    first = pop_all(box, 3)
    box.requeue(reversed(first))  # handed back in any order
    got = pop_all(box, 6)
    assert [int(m.payload) for m in got] == list(range(6))
    box.close()


def test_the_outbox_records_each_streams_seq_with_its_messages(db: Path) -> None:
    box = open_box(db)
    for i in range(5):
        box.put(msg(i, "door"))
    box.put(msg(41, "yard"))
    box.close()
    seqs = SequenceStore("box-1", db, autosave=False)
    assert seqs.next("door") == 5 and seqs.next("yard") == 42 and seqs.next("new") == 0
    seqs.close()
    assert SequenceStore("other-agent", db).next("door") == 0


def test_sequence_store_autosaves_and_never_goes_back(db: Path) -> None:
    db.parent.mkdir(parents=True)
    seqs = SequenceStore("box-1", db, autosave=True, interval_s=0.01)
    assert [seqs.next("door") for _ in range(3)] == [0, 1, 2]
    time.sleep(0.1)  # saved by the background thread, no close(): as after a crash
    again = SequenceStore("box-1", db)
    assert again.next("door") == 3
    again.close()
    seqs.close()  # an older writer closing later must not move it back
    assert SequenceStore("box-1", db).next("door") == 4


def test_memory_outbox_has_the_same_bounds() -> None:
    box = Outbox(100, max_bytes=20 * 60)
    for i in range(50):
        box.put(msg(i, size=54))
    assert len(box) == 20 and box.dropped == 30 and box.stored_bytes == 20 * 60
    assert [int(m.payload) for m in pop_all(box, 20)] == list(range(30, 50))


def test_an_unreadable_database_is_moved_aside(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database" * 100)
    box = open_box(db)
    box.put(msg(1))
    assert int(pop_all(box, 1)[0].payload) == 1
    box.close()
    assert list(db.parent.glob(f"{state.DB_NAME}.corrupt-*"))
    assert "unreadable" in caplog.text


def test_state_dir_is_locked_while_in_use(tmp_path: Path) -> None:
    first = state.StateDir(tmp_path / "s").acquire()
    with pytest.raises(state.StateError, match=r"STATE_DIR.*in use"):
        state.StateDir(tmp_path / "s").acquire()
    first.release()
    state.StateDir(tmp_path / "s").acquire().release()
    (tmp_path / "file").write_text("")
    with pytest.raises(state.StateError, match="STATE_DIR"):
        state.StateDir(tmp_path / "file" / "sub").acquire()


def test_default_state_dir() -> None:
    assert state.default_state_dir({"STATE_DIRECTORY": "/var/lib/edge-agent:/other"}) == Path("/var/lib/edge-agent")
    assert state.default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/edge-agent")
    assert state.default_state_dir({}).parts[-3:] == (".local", "state", "edge-agent")
