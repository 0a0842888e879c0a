"""JSON-lines sink: one prediction per line on stdout, for a first run and for piping into jq."""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
from typing import Any, TextIO

# Lines kept while the reader of stdout (a pipe, journald) is slower than the agent.
DEFAULT_BACKLOG = 1000


class StdoutSink:
    """Writes compact JSON lines from a thread of its own.

    A write to a pipe blocks when its reader falls behind (``edge-agent run | slow-consumer``, a
    busy journald); on the event loop that would stall every stream. So the loop only enqueues,
    and a full backlog drops the oldest line and counts it, like the MQTT outbox.
    """

    def __init__(
        self, stream: TextIO | None = None, *, include_stats: bool = False, backlog: int = DEFAULT_BACKLOG
    ) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._include_stats = include_stats
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=backlog)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._written = 0
        self._dropped = 0
        self._errors = 0

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stdout-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                break
            try:
                self._out.write(line)
                if self._queue.empty():
                    self._out.flush()
                self._written += 1
            except (BrokenPipeError, ValueError, OSError):
                # A closed pipe (``edge-agent run | head``) must not take the other sinks down.
                self._errors += 1

    def _put(self, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, separators=(",", ":")) + "\n"
        with self._lock:
            while True:
                try:
                    self._queue.put_nowait(line)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self._dropped += 1
                    except queue.Empty:
                        pass

    def publish_prediction(self, stream: str, payload: dict[str, Any]) -> None:
        self._put(payload)

    def publish_stats(self, payload: dict[str, Any]) -> None:
        if self._include_stats:
            self._put({"type": "stats", **payload})

    async def close(self, timeout: float) -> None:
        if self._thread is None:
            return
        with self._lock:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                self._queue.get_nowait()
                self._dropped += 1
                self._queue.put_nowait(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)
        try:
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def counters(self) -> dict[str, Any]:
        return {"written": self._written, "dropped": self._dropped, "errors": self._errors}
