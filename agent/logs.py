"""Logging set-up: human lines by default, JSON lines for log shippers; secrets scrubbed.

Every line passes through ``models.redaction.redact_text`` with the secrets of the configuration
(stream passwords, the MQTT password, the API key), whatever logger wrote it (ours, PyAV's,
paho's, aiohttp's): a secret that reaches a log call by some path nobody thought of is still masked.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

from edge_agent.models.common.redaction import redact_text
from edge_agent.pipelines.sinks.encoding import to_json


class JsonFormatter(logging.Formatter):
    """One JSON object per line; texts are scrubbed before encoding (a secret holding '"' looks
    different once JSON-escaped)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage(), self.secrets),
        }
        if record.exc_info:
            payload["exception"] = redact_text(self.formatException(record.exc_info), self.secrets)
        return to_json(payload)


class ScrubbingFormatter(logging.Formatter):
    """Formats with ``inner``, then masks every URL credential and every known secret."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record), self.secrets)


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(secrets))
    else:
        text = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        text.converter = time.gmtime
        handler.setFormatter(ScrubbingFormatter(text, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paho and aiohttp are chatty at INFO; their problems surface through our own messages.
    for noisy in ("aiohttp.access", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
