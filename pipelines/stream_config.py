"""The one configuration model of a stream, shared by the environment parser, the control API and
the sources.

``STREAM_<NAME>_<KEY>`` variables, a control API body and :class:`SourceOptions` all go through
these fields and their validators (``pipelines.sources.options``); a new per-stream option is
added here (or to ``ReadOptions`` when the reader needs it) and is then accepted everywhere.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from models.redaction import redact_url
from models.settings import UnitInterval
from pipelines.sources.options import ReadOptions, SourceOptions

STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
STREAM_NAME_RULE = "1-63 characters of letters, digits, '_' and '-', starting with a letter or digit"


def _stream_name(value: str) -> str:
    if not STREAM_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid stream name; accepted: {STREAM_NAME_RULE}")
    return value


def _url(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("is empty; give the stream's URL, device or file path")
    return value


def _model_id(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("is empty; leave it out to use MODEL_ID")
    return value


def env_name(stream: str) -> str:
    """How a stream name appears inside STREAM_<NAME>_... variables."""
    return stream.upper().replace("-", "_")


class StreamOptions(ReadOptions):
    """Everything a user may set for one stream besides its name and URL."""

    model_id: Annotated[str, AfterValidator(_model_id)] | None = Field(
        default=None, description="model for this stream (default: MODEL_ID)"
    )
    confidence: UnitInterval | None = Field(default=None, description="confidence threshold for this stream (0..1)")


class StreamConfig(StreamOptions):
    """One stream: name, URL and options. Unknown keys are refused, not ignored."""

    name: Annotated[str, AfterValidator(_stream_name)]
    url: Annotated[str, AfterValidator(_url)]

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def source_options(self, **agent_wide: Any) -> SourceOptions:
        """The reader's options: this stream's reading options plus the agent-wide timings."""
        return SourceOptions(**self.read_options(), **agent_wide)

    def public(self) -> dict[str, Any]:
        """The stream as shown to people (``config`` output, the control API): URL redacted."""
        return self.model_dump() | {"url": self.display_url}


# STREAM_<NAME>_<KEY>: the key of every per-stream option, with its description (README table).
STREAM_KEYS: dict[str, str] = {
    name.upper(): info.description or "" for name, info in StreamOptions.model_fields.items()
}

__all__ = ["STREAM_KEYS", "STREAM_NAME_RE", "StreamConfig", "StreamOptions", "env_name"]
