"""Read a model directory's metadata once: environment.json, class names, colours, keypoint names.

Every task builds from one :class:`ModelArtifacts`; nothing else parses these files. Roboflow writes
``PREPROCESSING`` as an object or as a JSON string and ``COLORS`` / ``CLASS_MAP`` likewise, so both
are accepted. Problems are :class:`ModelArtifactsError` (a permanent error: fetching the same files
again would not help), naming the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.models.artifacts import cache
from edge_agent.models.common.errors import ModelArtifactsError, ModelError
from edge_agent.models.maths.preprocessing import InputNormalization, Preprocessing, parse_preprocessing

logger = logging.getLogger(__name__)

# Roboflow's RF-DETR exports list this placeholder as class 0; it is removed from the names and
# detections of it are dropped (roboflow-layouts.md §1.2).
BACKGROUND_CLASS = "background_class83422"

_HEX_DIGITS = set("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class ModelArtifacts:
    """What a model directory says about the model, validated."""

    directory: Path
    weights_path: Path
    environment: dict[str, Any]
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    colors: dict[str, str] = field(default_factory=dict)  # class name -> "#rrggbb"
    multiclass: bool = False
    resolution: int | None = None
    keypoints: dict[int, tuple[str, ...]] = field(default_factory=dict)  # class id -> keypoint names
    #: pixel normalisation the files prescribe (a package's inference_config.json); None: the task's own
    normalization: InputNormalization | None = None
    #: the network's fixed batch size when the files say so (inference_config forward_pass)
    static_batch_size: int | None = None

    def color_of(self, class_name: str) -> str | None:
        return self.colors.get(class_name)


def _json_value(raw: Any, what: str, where: Path) -> Any:
    """Roboflow stores some environment values as JSON strings inside the JSON; undo that."""
    if isinstance(raw, str):
        text = raw.strip()
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                raise ModelArtifactsError(where, f"{what} is a string but not valid JSON") from None
    return raw


def read_class_names(directory: Path, environment: dict[str, Any], required: bool = True) -> tuple[str, ...]:
    """class_names.txt (one per line), else the environment's CLASS_MAP."""
    path = directory / cache.CLASS_NAMES_FILE
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelArtifactsError(path, f"cannot be read as UTF-8 text ({exc})") from None
        names = [line.strip() for line in text.splitlines()]
        names = [n for n in names if n]
        if names:
            return tuple(names)
    names_from_map = cache.class_map_names(environment)
    if names_from_map:
        return tuple(names_from_map)
    if not required:
        return ()
    raise ModelArtifactsError(
        directory,
        f"no class names: add {cache.CLASS_NAMES_FILE} (one class per line, in class-id order) or a CLASS_MAP "
        f"object in {cache.ENVIRONMENT_FILE}",
    )


def _colors(raw: Any, where: Path) -> dict[str, str]:
    value = _json_value(raw, "COLORS", where)
    if value is None:
        return {}
    if not isinstance(value, dict):
        logger.warning("%s: COLORS is not an object; using default colours", where)
        return {}
    out: dict[str, str] = {}
    for name, colour in value.items():
        if isinstance(colour, str) and colour.startswith("#") and len(colour) == 7 and set(colour[1:]) <= _HEX_DIGITS:
            out[str(name)] = colour.lower()
    return out


def read_keypoints(directory: Path) -> dict[int, tuple[str, ...]]:
    """``keypoints_metadata.json``: ``[{object_class_id, keypoints: {"0": "nose", ...}}]``."""
    path = directory / cache.KEYPOINTS_FILE
    if not path.is_file():
        return {}
    content = cache.read_json_file(path)
    if not isinstance(content, list):
        raise ModelArtifactsError(path, "must be a JSON list of {object_class_id, keypoints} objects")
    out: dict[int, tuple[str, ...]] = {}
    for i, entry in enumerate(content):
        try:
            class_id = int(entry["object_class_id"])
            names = entry["keypoints"]
            ordered = [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
        except (KeyError, TypeError, ValueError):
            raise ModelArtifactsError(
                path, f'entry {i} needs object_class_id (int) and keypoints ({{"0": name, ...}})'
            ) from None
        out[class_id] = tuple(ordered)
    return out


def _resolution(raw: Any, where: Path) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ModelArtifactsError(where, f"RESOLUTION must be a whole number of pixels, got {raw!r}") from None
    return value if value > 0 else None


def _multiclass(raw: Any) -> bool:
    if isinstance(raw, str):
        return raw.strip().lower() in ("true", "1", "yes")
    return bool(raw)


def load_artifacts(
    directory: Path,
    model_id: str,
    weights_file: str = cache.WEIGHTS_FILE,
    *,
    require_class_names: bool = True,
) -> ModelArtifacts:
    """Read and validate ``directory`` once. A missing environment.json means no preprocessing."""
    directory = Path(directory)
    env_path = directory / cache.ENVIRONMENT_FILE
    if env_path.is_file():
        environment = cache.read_json_file(env_path)
        if not isinstance(environment, dict):
            raise ModelArtifactsError(env_path, "is not a JSON object")
    else:
        logger.warning("%s: no environment.json; using stretch resize and no preprocessing steps", model_id)
        environment = {}
    try:
        preprocessing = parse_preprocessing(environment.get("PREPROCESSING"), str(env_path))
    except ModelArtifactsError:
        raise
    except ModelError as exc:
        raise ModelArtifactsError(env_path, str(exc).split(": ", 1)[-1]) from None
    return ModelArtifacts(
        directory=directory,
        weights_path=directory / weights_file,
        environment=environment,
        preprocessing=preprocessing,
        class_names=read_class_names(directory, environment, required=require_class_names),
        colors=_colors(environment.get("COLORS"), env_path),
        multiclass=_multiclass(environment.get("MULTICLASS", False)),
        resolution=_resolution(environment.get("RESOLUTION"), env_path),
        keypoints=read_keypoints(directory),
    )
