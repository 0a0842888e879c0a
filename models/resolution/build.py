"""The (task_type, model_type) -> family table made from the catalog, and a ready model built
from artifacts already on disk: the weights pick the engine, MODEL_PRECISION the fp32 weights or
their INT8 copy. ``registry`` (ids, the network) and ``package_loader`` (packages) both end here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.models.artifacts.artifact_loader import ModelArtifacts, load_artifacts
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    Int8CopyMissingError,
    ModelRuntimeError,
    UnsupportedModelTypeError,
)
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.base import Engine
from edge_agent.models.engines.factory import create_engine, is_torchscript
from edge_agent.models.engines.onnx import OnnxEngine
from edge_agent.models.engines.providers import planned_providers
from edge_agent.models.resolution.catalog import FAMILIES, ModelFamily, family_table
from edge_agent.models.speed.precision import (
    Precision,
    PrecisionChoice,
    choose_precision,
    cpu_name,
    find_int8_copy,
    int8_locations,
    quantize_command,
)
from edge_agent.models.tasks.base import ModelContext
from edge_agent.models.tasks.model import Model

logger = logging.getLogger(__name__)

# (task_type, model_type) -> the family that runs it. One table (models/resolution/catalog.py).
MODEL_REGISTRY: dict[tuple[str, str], ModelFamily] = family_table(FAMILIES)


def supported_types(first: str = "") -> str:
    """Every task's model types: ``first`` (the task asked about) and object detection lead."""
    by_task: dict[str, list[str]] = {}
    for task, model_type in MODEL_REGISTRY:
        by_task.setdefault(task, []).append(model_type)
    order = sorted(by_task, key=lambda t: (t != first, t != "object-detection", t))
    return "; ".join(f"{task}: {', '.join(by_task[task])}" for task in order)


def get_family(task_type: str, model_type: str, model_id: str = "") -> ModelFamily:
    try:
        return MODEL_REGISTRY[(task_type, model_type)]
    except KeyError:
        subject = f"{model_id} is a" if model_id else "no model family for a"
        raise UnsupportedModelTypeError(
            f"{subject} model of task {task_type!r} and type {model_type!r}, which this build of edge-agent "
            f"cannot run. Supported: {supported_types(task_type)}"
        ) from None


def build_model(
    family: ModelFamily,
    model_id: str,
    directory: Path,
    task_type: str,
    model_type: str,
    settings: ModelSettings,
    status: Callable[[str], None] | None = None,
    weights_file: str | None = None,
    precision: Precision | None = None,
) -> Model:
    """A ready model of ``family`` from the artifacts in ``directory`` (no network).

    ``precision`` (None: MODEL_PRECISION) picks the fp32 weights or their INT8 copy (models/speed/precision.py).
    """
    if status:
        status(f"loading {model_id}")
    loaded = load_artifacts(directory, model_id, weights_file or family.weights_file)
    return build_from_artifacts(family, model_id, loaded, task_type, model_type, settings, status, precision)


def build_from_artifacts(
    family: ModelFamily,
    model_id: str,
    loaded: ModelArtifacts,
    task_type: str,
    model_type: str,
    settings: ModelSettings,
    status: Callable[[str], None] | None = None,
    precision: Precision | None = None,
) -> Model:
    """A ready model from parsed artifacts: the weights file's kind picks the engine (torch for
    TorchScript, else ONNX Runtime), ``precision`` the fp32 weights or their INT8 copy."""
    engine: Engine
    if is_torchscript(loaded.weights_path.name):
        engine = create_engine(loaded, model_id, settings, status)
    else:
        choice = select_weights(model_id, loaded.weights_path, precision, settings)
        engine = _engine_for(choice, model_id, loaded.weights_path, settings, status)
    context = ModelContext(model_id, task_type, model_type, loaded, engine, settings)
    model = family.build(context)
    model.directory = loaded.weights_path.parent  # where `models pull` says the model is
    return model


def _engine_for(
    choice: PrecisionChoice,
    model_id: str,
    fp32_path: Path,
    settings: ModelSettings,
    status: Callable[[str], None] | None,
) -> OnnxEngine:
    """The engine of the chosen weights. An INT8 copy that does not load is never a reason to
    fetch the fp32 weights again: ``auto`` falls back to them, ``int8`` says how to remake the copy."""
    if choice.precision == "fp32":
        logger.info("model %s: precision fp32 (%s)", model_id, choice.reason)
        return OnnxEngine(
            fp32_path, model_id, settings, status, precision="fp32", precision_reason=choice.reason, concurrent=True
        )
    try:
        engine = OnnxEngine(
            choice.weights_path,
            model_id,
            settings,
            status,
            precision="int8",
            precision_reason=choice.reason,
            concurrent=True,
        )
    except (CacheIntegrityError, ModelRuntimeError) as exc:
        if choice.requested == "int8":
            raise Int8CopyMissingError(
                model_id,
                f"the INT8 copy of {model_id} ({choice.weights_path}) does not load: {exc}. Make it again with "
                f"`{quantize_command(model_id)}`, or run fp32 (MODEL_PRECISION=fp32 or the id suffix @fp32)",
            ) from exc
        reason = f"auto: the INT8 copy {choice.weights_path} does not load ({exc}); using fp32"
        logger.warning("model %s: %s", model_id, reason)
        return OnnxEngine(
            fp32_path, model_id, settings, status, precision="fp32", precision_reason=reason, concurrent=True
        )
    logger.info("model %s: precision int8 (%s; %s)", model_id, choice.reason, choice.weights_path)
    return engine


def select_weights(
    model_id: str, fp32_path: Path, requested: Precision | None, settings: ModelSettings
) -> PrecisionChoice:
    """The weights ``model_id`` should load under ``requested`` (None: MODEL_PRECISION)."""
    wanted: Precision = requested or settings.model_precision
    if wanted == "fp32":
        return PrecisionChoice("fp32", wanted, fp32_path, "fp32 requested")
    lookup = find_int8_copy(model_id, fp32_path, int8_locations(model_id, fp32_path.parent, settings.model_cache_dir))
    provider = planned_providers(settings)[0]
    return choose_precision(model_id, wanted, fp32_path, lookup, provider, cpu_name())
