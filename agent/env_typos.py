"""Misspelled variables: a name close to one edge-agent reads, which it would otherwise ignore.

pydantic-settings ignores variables it does not know (the environment holds many that are not
ours), so ``MQTT_HOTS=broker`` silently runs without MQTT. Unknown ``STREAM_<NAME>_<KEY>`` names
are refused in ``settings``; every other name is compared with the known ones here, and one that
is close to a known name is reported with it. Close means: a name with one of the project's
prefixes within a few letters of a known name, or any name a letter or two away from one; the
rest of the environment (``HTTP_PROXY``, ``LOGNAME``, another program's settings) is left alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic_settings import BaseSettings

# Prefixes only edge-agent's own variables (and Roboflow Inference's, which it shares) start with.
PROJECT_PREFIXES = (
    "MQTT_",
    "STREAM",
    "HEALTH_",
    "LIVE_VIEW_",
    "MODEL_",
    "CORE_MODEL",
    "TENSORRT_",
    "OPENVINO_",
    "ORT_",
    "ONNXRUNTIME_",
    "RECONNECT_",
    "ROBOFLOW_",
    "CLIP_",
    "CONTROL_",
    "STDOUT_",
    "AGENT_",
)
PREFIXED_CUTOFF = 0.8  # MQTT_HOTS -> MQTT_HOST (0.89), MQTT_PASWORD -> MQTT_PASSWORD (0.96)
ANY_NAME_CUTOFF = 0.9  # CONFIDENSE -> CONFIDENCE (0.9); HOSTNAME, LOGNAME, HTTP_PROXY match nothing


def known_names(models: Iterable[type[BaseSettings]]) -> set[str]:
    """Every variable name the settings classes read (aliases included), upper case."""
    names: set[str] = set()
    for model in models:
        for name, info in model.model_fields.items():
            choices = getattr(info.validation_alias, "choices", None)
            if choices:
                names.update(str(c).upper() for c in choices)
            elif isinstance(info.validation_alias, str):
                names.add(info.validation_alias.upper())
            else:
                names.add(name.upper())
    return names


def misspelled(environ: Mapping[str, str], known: set[str]) -> list[tuple[str, str]]:
    """(variable, the known name it is closest to) for each likely misspelling in ``environ``."""
    found: list[tuple[str, str]] = []
    candidates = sorted(known)
    for raw in sorted(environ):
        var = raw.upper()
        if var in known or var.startswith("STREAM_"):  # STREAM_<NAME>_<KEY> is checked against the streams
            continue
        prefixed = var.startswith(PROJECT_PREFIXES)
        cutoff = PREFIXED_CUTOFF if prefixed else ANY_NAME_CUTOFF
        match = difflib.get_close_matches(var, candidates, n=1, cutoff=cutoff)
        if match:
            found.append((raw, match[0]))
    return found


def warnings_for(environ: Mapping[str, str], models: Iterable[type[BaseSettings]]) -> list[str]:
    """One line per likely misspelling, naming the variable and the known one (never a value)."""
    return [
        f"{var} is not a variable edge-agent reads (ignored); did you mean {known}?"
        for var, known in misspelled(environ, known_names(models))
    ]


__all__ = ["known_names", "misspelled", "warnings_for"]
