"""Which kind of model an id is, which class runs it, and ``get_model`` that returns it ready.

``get_model_type`` order (SPEC §4): alias -> local directory -> generic families ->
``model_type.json`` in the cache -> the API (answer saved to ``model_type.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.models import artifacts, cache
from edge_agent.models.api import ProgressCallback
from edge_agent.models.artifact_loader import ModelArtifacts, load_artifacts
from edge_agent.models.base import Model
from edge_agent.models.catalog import FAMILIES, ModelFamily, family_table
from edge_agent.models.engines.base import Engine
from edge_agent.models.engines.factory import create_engine, is_torchscript
from edge_agent.models.engines.onnx import OnnxEngine
from edge_agent.models.errors import (
    CacheIntegrityError,
    Int8CopyMissingError,
    ModelNotCachedError,
    ModelRuntimeError,
    UnsupportedModelTypeError,
)
from edge_agent.models.families import GENERIC_FAMILIES, check_family_enabled
from edge_agent.models.ids import ModelRef, cache_dir_for, parse_model_id
from edge_agent.models.packages.inference_config import INFERENCE_CONFIG_FILE, package_artifacts
from edge_agent.models.precision import Precision, PrecisionChoice, quantize_command, select_weights, split_precision
from edge_agent.models.settings import ModelSettings, get_model_settings
from edge_agent.models.tasks.base import ModelContext

logger = logging.getLogger(__name__)

# (task_type, model_type) -> the family that runs it. One table (models/catalog.py).
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


def _package_dir_type(directory: Path) -> tuple[str, str] | None:
    """(task, type) of a package directory copied as is (its model_config.json)."""
    config = cache.read_json_file(directory / "model_config.json")
    if not isinstance(config, dict) or not isinstance(config.get("model_architecture"), str):
        return None
    from edge_agent.models.packages.loader import package_types

    return package_types(config["model_architecture"], config.get("task_type"), None)


def _type_of(ref: ModelRef, api_key: str | None, settings: ModelSettings) -> tuple[str, str]:
    if ref.read_only:
        directory = ref.local_dir
        assert directory is not None
        found = cache.read_model_type(directory) or _package_dir_type(directory)
        if found is None:
            logger.info("%s has no model_type.json; assuming %s/%s", directory, *artifacts.LOCAL_DEFAULT_TYPE)
            return artifacts.LOCAL_DEFAULT_TYPE
        return found
    if ref.kind == "generic":
        assert ref.family is not None
        family = GENERIC_FAMILIES[ref.family]
        check_family_enabled(ref.family, family, settings)
        return family.task_type, family.model_type
    from edge_agent.models.credentials import check_api_key
    from edge_agent.models.packages.loader import package_model_type, use_packages

    api_key = api_key or settings.api_key
    check_api_key(ref, api_key, settings)
    if use_packages(ref, api_key, settings):
        return package_model_type(ref, api_key, settings)
    directory = cache_dir_for(ref, settings.model_cache_dir)
    found = cache.read_model_type(directory)
    if found is not None:
        return found
    if settings.offline_mode:
        raise ModelNotCachedError(
            f"OFFLINE_MODE is on and {ref.model_id} is not in the model cache ({directory}: no "
            f"{cache.MODEL_TYPE_FILE}). Fetch it on a connected machine with `edge-agent models pull "
            f"{ref.model_id}`, or turn OFFLINE_MODE off"
        )
    task_type, model_type = artifacts.types_from_description(
        ref, artifacts.describe(ref, api_key or settings.api_key, settings)
    )
    with cache.model_lock(ref, settings):
        directory.mkdir(parents=True, exist_ok=True)
        cache.write_model_type(directory, ref.model_id, task_type, model_type)
    return task_type, model_type


def get_model_type(model_id: str, api_key: str | None = None) -> tuple[str, str]:
    """(task_type, model_type) of ``model_id``; may ask the API once and remember the answer."""
    settings = get_model_settings()
    return _type_of(parse_model_id(model_id), api_key, settings)


def get_model(
    model_id: str,
    api_key: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    status: Callable[[str], None] | None = None,
) -> Model:
    """A ready model for ``model_id`` (any tier), downloading and caching artifacts as needed.

    ``progress(bytes_done, total_or_None)`` follows a weights download; ``status(text)`` hears
    about slow phases (downloading, building a TensorRT engine) so a service can report them.
    A cached ``weights.onnx`` onnxruntime cannot load is fetched again once (never offline).
    """
    settings = get_model_settings()
    model_id, precision = split_precision(model_id)
    ref = parse_model_id(model_id)
    api_key = api_key or settings.api_key
    if ref.kind == "generic":
        from edge_agent.models.foundation.loader import get_foundation_model

        return get_foundation_model(ref, api_key, settings, progress=progress, status=status)
    if not ref.read_only:
        from edge_agent.models.credentials import check_api_key
        from edge_agent.models.packages.loader import load_package_model, use_packages

        check_api_key(ref, api_key, settings)  # before any request: a 401 after retries says it late
        if use_packages(ref, api_key, settings):
            return load_package_model(ref, api_key, settings, progress=progress, status=status)
    task_type, model_type = _type_of(ref, api_key, settings)
    family = get_family(task_type, model_type, ref.model_id)
    weights_file = family.weights_file

    def fetch(refetch_if_unchanged: tuple[int, int] | None = None) -> Path:
        return artifacts.ensure_artifacts(
            ref,
            api_key,
            settings=settings,
            progress=progress,
            status=status,
            weights_file=weights_file,
            refetch_if_unchanged=refetch_if_unchanged,
        )

    directory = fetch()
    if ref.read_only:
        weights_file = artifacts.local_weights_file(directory, weights_file)
        if (directory / INFERENCE_CONFIG_FILE).is_file() and not (directory / cache.ENVIRONMENT_FILE).is_file():
            # a package directory copied as is: inference_config.json drives the pre-processing
            loaded = package_artifacts(directory, ref.model_id, weights_file)
            return build_from_artifacts(
                family, ref.model_id, loaded, task_type, model_type, settings, status, precision
            )
    try:
        return build_model(
            family, ref.model_id, directory, task_type, model_type, settings, status, weights_file, precision
        )
    except CacheIntegrityError as exc:
        if ref.read_only or settings.offline_mode:
            final = CacheIntegrityError(
                f"{exc}. {'OFFLINE_MODE is on, so it is not fetched again; ' if not ref.read_only else ''}"
                f"nothing was deleted"
            )
            # Nothing will replace a local directory's weights by itself: a restart cannot help.
            final.permanent = ref.read_only
            raise final from exc
        logger.warning("cached weights of %s do not load (%s); fetching them again", ref.model_id, exc)
        bad = cache.file_fingerprint(directory / weights_file)
        directory = fetch(refetch_if_unchanged=bad)
        try:
            return build_model(
                family, ref.model_id, directory, task_type, model_type, settings, status, weights_file, precision
            )
        except CacheIntegrityError as again:
            raise CacheIntegrityError(
                f"{ref.model_id}: the weights served by the API do not load even after fetching them again "
                f"({again}); the model version may be broken on the server"
            ) from again


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

    ``precision`` (None: MODEL_PRECISION) picks the fp32 weights or their INT8 copy (models/precision.py).
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
