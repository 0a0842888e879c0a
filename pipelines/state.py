"""The agent's persisted state: one directory, one SQLite database in WAL mode, one owner at a time.

The database (``edge-agent.db``) holds the MQTT outbox (messages not yet acknowledged by the
broker) and the per-stream sequence numbers, so both survive crashes and restarts. WAL mode
keeps every committed transaction readable after a crash at any point (SIGKILL, OOM killer);
``synchronous=NORMAL`` does not fsync each commit, so a *power loss* may roll back the last
moments of commits (never corrupt the file); ``fsync=True`` (MQTT_OUTBOX_FSYNC) pays an fsync per
commit for that too.

Where: ``STATE_DIR``, else systemd's ``STATE_DIRECTORY`` (``StateDirectory=edge-agent`` in the
unit: ``/var/lib/edge-agent``), else ``$XDG_STATE_HOME/edge-agent``, else
``~/.local/state/edge-agent``. Two agents must not share one directory (both would replay the
same outbox): :class:`StateDir` holds an exclusive lock on it while the agent runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from edge_agent.pipelines.errors import StateError

log = logging.getLogger("edge_agent.state")

DB_NAME = "edge-agent.db"
LOCK_NAME = "edge-agent.lock"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (
    agent_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (agent_id, stream)
);
"""


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """systemd's ``STATE_DIRECTORY`` (first entry), else the XDG state home, else ~/.local/state."""
    env = os.environ if environ is None else environ
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if systemd:
        return Path(systemd)
    xdg = env.get("XDG_STATE_HOME", "").strip()
    if xdg:
        return Path(xdg) / "edge-agent"
    return Path("~/.local/state/edge-agent").expanduser()


def connect(path: Path, *, fsync: bool = False) -> sqlite3.Connection:
    """Open (creating if need be) the state database in WAL mode with the current schema.

    A file that is not a readable database (overwritten, truncated by a broken disk) is moved
    aside as ``<name>.corrupt-<time>`` and a fresh one started, so a damaged file cannot keep the
    agent in a restart loop; the error log line says where the old file went.
    """
    try:
        return _open(path, fsync)
    except sqlite3.OperationalError as exc:  # cannot open, locked, read-only: not the file's fault
        raise StateError(f"cannot use the state database {path}: {exc} (check STATE_DIR)") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.error("state database %s is unreadable (%s); moved it to %s and started a new one", path, exc, aside)
        return _open(path, fsync)


def _open(path: Path, fsync: bool) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly, so a batch is one BEGIN..COMMIT.
    conn = sqlite3.connect(str(path), timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateError(f"the state database {path} cannot use WAL mode (got {mode!r}); is it on NFS?")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"the state database {path} was written by a newer edge-agent (schema {row[0]}, this one "
                f"knows {SCHEMA_VERSION}); point STATE_DIR elsewhere or upgrade"
            )
    except BaseException:
        conn.close()
        raise
    return conn


class StateDir:
    """The state directory of one running agent: created if missing, locked while in use."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self._lock_fd: int | None = None

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def acquire(self) -> StateDir:
        """Create the directory and take its lock; :class:`StateError` naming STATE_DIR if not."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(
                f"STATE_DIR={str(self.path)!r} cannot be created or written ({exc.strerror or exc}); "
                "accepted: a writable directory (systemd: StateDirectory=edge-agent)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateError(
                f"STATE_DIR={str(self.path)!r} is in use by another edge-agent (pid {holder}); "
                "give each agent its own STATE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return self

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
