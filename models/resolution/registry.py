"""Which kind of model an id is, which class runs it, and ``get_model`` that returns it ready.

``get_model_type`` order (SPEC §4): alias -> local directory -> generic families ->
``model_type.json`` in the cache -> the API (answer saved to ``model_type.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts import fetch as artifacts
from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.artifacts.packages.inference_config import INFERENCE_CONFIG_FILE, package_artifacts
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    ModelNotCachedError,
)
from edge_agent.models.common.settings import ModelSettings, get_model_settings
from edge_agent.models.identity.families import GENERIC_FAMILIES, check_family_enabled
from edge_agent.models.identity.ids import ModelRef, cache_dir_for, parse_model_id
from edge_agent.models.resolution.build import build_from_artifacts, build_model, get_family
from edge_agent.models.speed.precision import (
    split_precision,
)
from edge_agent.models.tasks.model import Model

logger = logging.getLogger(__name__)


def _package_dir_type(directory: Path) -> tuple[str, str] | None:
    """(task, type) of a package directory copied as is (its model_config.json)."""
    config = cache.read_json_file(directory / "model_config.json")
    if not isinstance(config, dict) or not isinstance(config.get("model_architecture"), str):
        return None
    from edge_agent.models.resolution.package_loader import package_types

    return package_types(config["model_architecture"], config.get("task_type"), None)


def _type_of(ref: ModelRef, api_key: str | None, settings: ModelSettings) -> tuple[str, str]:
    if ref.read_only:
        directory = ref.local_dir
        assert directory is not None
        from edge_agent.models.foundation.vlm_families import hf_checkpoint_type

        found = cache.read_model_type(directory) or _package_dir_type(directory) or hf_checkpoint_type(directory)
        if found is None:
            logger.info("%s has no model_type.json; assuming %s/%s", directory, *artifacts.LOCAL_DEFAULT_TYPE)
            return artifacts.LOCAL_DEFAULT_TYPE
        return found
    if ref.kind == "generic":
        assert ref.family is not None
        family = GENERIC_FAMILIES[ref.family]
        check_family_enabled(ref.family, family, settings)
        return family.task_type, family.model_type
    from edge_agent.models.resolution.credentials import check_api_key
    from edge_agent.models.resolution.package_loader import package_model_type, use_packages

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
        from edge_agent.models.resolution.foundation_loader import get_foundation_model

        def load_detector(detector_id: str) -> Model:  # a detector paired with a foundation model
            return get_model(detector_id, api_key, progress=progress, status=status)

        return get_foundation_model(
            ref, api_key, settings, progress=progress, status=status, load_detector=load_detector
        )
    if not ref.read_only:
        from edge_agent.models.resolution.credentials import check_api_key
        from edge_agent.models.resolution.package_loader import load_package_model, use_packages

        check_api_key(ref, api_key, settings)  # before any request: a 401 after retries says it late
        if use_packages(ref, api_key, settings):
            return load_package_model(ref, api_key, settings, progress=progress, status=status)
    task_type, model_type = _type_of(ref, api_key, settings)
    from edge_agent.models.foundation.vlm_families import is_vlm_type

    if is_vlm_type(model_type):  # Hugging Face checkpoints (Florence-2, PaliGemma, ...): their own loader
        from edge_agent.models.foundation.vlm_loader import get_vlm_model

        return get_vlm_model(ref, task_type, model_type, api_key, settings, progress=progress, status=status)
    if model_type == "owlv2-finetuned":  # Roboflow Instant: a serialized OWLv2, not an ONNX family
        from edge_agent.models.foundation.owlv2 import load_instant

        directory = ref.local_dir if ref.local_dir is not None else cache_dir_for(ref, settings.model_cache_dir)
        return load_instant(ref.model_id, directory, settings, status)
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
