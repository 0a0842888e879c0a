"""The one JSON encoder of every output: stdout lines, MQTT payloads, HTTP answers, `config`.

Strict JSON: ``NaN`` and ``Infinity`` are not JSON (``json.dumps`` writes them anyway and most
consumers then fail on the whole message), so they become ``null``, the same on every sink.
numpy scalars and arrays, sets and datetimes are written as their plain JSON counterparts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edge_agent.pipelines.sinks.errors import PayloadError


def _default(value: Any) -> Any:
    # numpy scalars and arrays (without importing numpy), sets, datetimes, paths.
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, (set, frozenset)):
        return _finite(list(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(payload: Any, *, indent: int | None = None) -> str:
    """``payload`` as strict JSON text (compact unless ``indent``); non-finite floats -> null."""
    separators = (",", ":") if indent is None else (",", ": ")
    kwargs: dict[str, Any] = {
        "separators": separators,
        "indent": indent,
        "ensure_ascii": False,
        "allow_nan": False,
        "default": _default,
    }
    try:
        try:
            return json.dumps(payload, **kwargs)
        except ValueError:  # a NaN/inf somewhere: walk the payload once, only in that rare case
            return json.dumps(_finite(payload), **kwargs)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"cannot encode the payload as JSON: {exc}") from None


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON bytes (MQTT payloads)."""
    return to_json(payload).encode("utf-8")


__all__ = ["encode_json", "to_json"]
