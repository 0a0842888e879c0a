"""JSON-lines sink: one prediction per line on stdout, for a first run and for piping into jq."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.pipelines.sinks.encoding import to_json

if TYPE_CHECKING:
    from edge_agent.pipelines.sinks.registry import SinkHooks, SinkSettings

log = logging.getLogger("edge_agent.stdout")

# Lines kept while the reader of stdout (a pipe, journald) is slower than the agent.
DEFAULT_BACKLOG = 1000


class StdoutSink:
    """Writes compact JSON lines from a thread of its own.

    A write to a pipe blocks when its reader falls behind (``edge-agent run | slow-consumer``, a
    busy journald); on the event loop that would stall every stream. So the loop only enqueues,
    and a full backlog drops the oldest line and counts it, like the MQTT outbox.

    When the reader goes away for good (``edge-agent run | head -3``: a broken pipe), the sink
    stops writing and calls ``on_closed`` (from its thread) so the agent can stop when nothing
    else reads its output; other sinks are never taken down by it.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        include_stats: bool = False,
        backlog: int = DEFAULT_BACKLOG,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._on_closed = on_closed
        self.closed_by_reader = False
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
            if self.closed_by_reader:
                continue  # keep draining so close() returns at once
            try:
                self._out.write(line)
                if self._queue.empty():
                    self._out.flush()
                self._written += 1
            except (BrokenPipeError, ValueError, OSError) as exc:
                self._errors += 1
                if isinstance(exc, BrokenPipeError) or getattr(exc, "errno", None) == errno.EPIPE:
                    self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed_by_reader = True
        log.info("stdout was closed by its reader (broken pipe); no more predictions are printed")
        if self._out is sys.stdout:
            # Python flushes sys.stdout once more at exit; into a closed pipe that prints
            # "Exception ignored ... BrokenPipeError". Point the descriptor at /dev/null instead.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
        if self._on_closed is not None:
            try:
                self._on_closed()
            except Exception:  # the loop may be closing; nothing is left to tell
                log.debug("on_closed callback failed", exc_info=True)

    def _put(self, payload: dict[str, Any]) -> None:
        if self.closed_by_reader:
            return
        line = to_json(payload) + "\n"
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

    def publish_answer(self, stream: str, payload: dict[str, Any]) -> None:
        self._put({"type": "vlm_answer", **payload})

    def publish_event(self, stream: str, payload: dict[str, Any]) -> None:
        """A tracking event, one line like a prediction (told apart by its ``type``)."""
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
        return {
            "written": self._written,
            "dropped": self._dropped,
            "errors": self._errors,
            "closed_by_reader": self.closed_by_reader,
        }


def from_settings(settings: SinkSettings, hooks: SinkHooks) -> StdoutSink | None:
    """The stdout sink when the configuration turns it on (STDOUT_SINK, or no MQTT broker)."""
    if not settings.stdout_enabled:
        return None
    reader_gone = hooks.reader_gone
    sink = StdoutSink(on_closed=(lambda: reader_gone(sink)) if reader_gone is not None else None)
    return sink
