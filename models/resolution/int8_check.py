"""What ``config`` can know about an INT8 copy without loading a model: the copy's record on disk.

``run`` chooses weights when it loads a model (models/speed/precision.py); asking for ``int8`` on a model
whose fp32 weights are on disk already (built-in, local or cached) but that has no usable copy
fails there. The same lookup, made here on the files alone, lets ``config`` refuse it first. A
model not on disk yet is fetched at run time, and checked then.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.models.artifacts import cache
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.ids import ModelRef, cache_dir_for, parse_model_id
from edge_agent.models.speed.precision import choose_precision, find_int8_copy, int8_locations, split_precision


def fp32_weights_on_disk(ref: ModelRef, settings: ModelSettings) -> Path | None:
    """The ONNX weights ``ref`` would load, when they are on disk already; None otherwise."""
    from edge_agent.models.artifacts.fetch import local_weights_file
    from edge_agent.models.resolution.build import MODEL_REGISTRY

    if ref.read_only and ref.local_dir is not None:
        directory = ref.local_dir
    elif ref.kind == "roboflow":
        directory = cache_dir_for(ref, settings.model_cache_dir)
    else:
        return None  # foundation models and packages have no INT8 copies of their own
    types = cache.read_model_type(directory)
    family = MODEL_REGISTRY.get(types) if types is not None else None
    weights_file = family.weights_file if family is not None else cache.WEIGHTS_FILE
    if ref.read_only:
        weights_file = local_weights_file(directory, weights_file)
    path = directory / weights_file
    return path if path.suffix == ".onnx" and path.is_file() else None


def check_int8_copy(model_id: str, settings: ModelSettings) -> None:
    """Int8CopyMissingError (what ``run`` would raise) when ``model_id`` is to run as int8 (its suffix,
    else MODEL_PRECISION) and its weights are on disk without a usable INT8 copy."""
    base, precision = split_precision(model_id)
    if (precision or settings.model_precision) != "int8":
        return
    ref = parse_model_id(base)
    fp32 = fp32_weights_on_disk(ref, settings)
    if fp32 is None:
        return
    lookup = find_int8_copy(ref.model_id, fp32, int8_locations(ref.model_id, fp32.parent, settings.model_cache_dir))
    if lookup.copy is None:
        choose_precision(ref.model_id, "int8", fp32, lookup, provider="", cpu="")  # raises, as at load


__all__ = ["check_int8_copy", "fp32_weights_on_disk"]
