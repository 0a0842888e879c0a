"""JSON-lines sink: one prediction per line on stdout, for a first run and for piping into jq."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class StdoutSink:
    """Writes compact JSON lines. Stats go to stdout too, tagged so they can be filtered out."""

    def __init__(self, stream: TextIO | None = None, *, include_stats: bool = False) -> None:
        self._out = stream if stream is not None else sys.stdout
        self._include_stats = include_stats
        self._written = 0
        self._errors = 0

    async def start(self) -> None:
        return None

    def _write(self, payload: dict[str, Any]) -> None:
        try:
            self._out.write(json.dumps(payload, separators=(",", ":")) + "\n")
            self._out.flush()
            self._written += 1
        except (BrokenPipeError, ValueError):
            # A closed pipe (``edge-agent run | head``) must not crash the agent's other sinks.
            self._errors += 1

    def publish_prediction(self, stream: str, payload: dict[str, Any]) -> None:
        self._write(payload)

    def publish_stats(self, payload: dict[str, Any]) -> None:
        if self._include_stats:
            self._write({"type": "stats", **payload})

    async def close(self, timeout: float) -> None:
        try:
            self._out.flush()
        except (BrokenPipeError, ValueError):
            pass

    def counters(self) -> dict[str, Any]:
        return {"written": self._written, "errors": self._errors}
