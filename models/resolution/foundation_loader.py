"""``get_model`` for ``family/variant`` ids: the family's flag, its runtime, its weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.common.errors import UnsupportedModelTypeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.families import GENERIC_FAMILIES, check_family_enabled
from edge_agent.models.identity.ids import ModelRef
from edge_agent.models.tasks.model import Model

StatusCallback = Callable[[str], None]
RUNNABLE = ("clip", "pp_ocr", "sam", "sam2", "owlv2")


def get_foundation_model(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Model:
    assert ref.family is not None and ref.version is not None
    family = GENERIC_FAMILIES[ref.family]
    check_family_enabled(ref.family, family, settings)
    if ref.family == "clip":
        return _clip(ref, api_key, settings, progress, status)
    if ref.family == "pp_ocr":
        return _pp_ocr(ref, api_key, settings, progress, status)
    if ref.family in ("sam", "sam2"):
        return _sam(ref, api_key, settings, progress, status)
    if ref.family == "owlv2":
        from edge_agent.models.foundation.owlv2 import load_owlv2

        assert ref.version is not None
        _require_transformers(ref.model_id, "owlv2")
        return load_owlv2(ref.model_id, ref.version, settings, status)
    raise UnsupportedModelTypeError(
        f"{ref.model_id} is a {ref.family} foundation model; this build of edge-agent runs the "
        f"{', '.join(RUNNABLE)} families only"
    )


def _clip(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    from edge_agent.models.artifacts.core_cache import ensure_core_files
    from edge_agent.models.foundation.clip import TEXTUAL_FILE, VISUAL_FILE, ClipModel
    from edge_agent.models.foundation.tokenizer import ClipTokenizer

    ClipTokenizer(f"{ref.model_id} (CLIP)")  # a missing extra is said before anything is downloaded
    directory = ensure_core_files(
        ref,
        (VISUAL_FILE, TEXTUAL_FILE),
        api_key,
        settings,
        task_type="embed",
        model_type="clip",
        progress=progress,
        status=status,
    )
    if status:
        status(f"loading {ref.model_id}")
    return ClipModel(ref.model_id, directory, settings, status)


def _pp_ocr(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    import importlib.util

    from edge_agent.models.common.errors import MissingExtraError
    from edge_agent.models.foundation.ocr import DET_PACKAGE, REC_PACKAGE, PPOCRModel
    from edge_agent.models.resolution.package_loader import package_directory

    assert ref.version is not None
    if importlib.util.find_spec("yaml") is None:  # said before anything is downloaded
        raise MissingExtraError(ref.model_id, "ocr", "PyYAML")
    det_size, rec_size = ref.version.split("-")
    directories = []
    for package, size in ((DET_PACKAGE, det_size), (REC_PACKAGE, rec_size)):
        directories.append(
            None
            if size == "none"
            else package_directory(f"{package}/{size}", api_key, settings, progress=progress, status=status)
        )
    if status:
        status(f"loading {ref.model_id}")
    return PPOCRModel(ref.model_id, directories[0], directories[1], settings, status)


def _require_transformers(model_id: str, extra: str) -> None:
    import importlib.util

    from edge_agent.models.common.errors import MissingExtraError

    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:  # said before anything is downloaded
            raise MissingExtraError(model_id, extra, module)


def _sam(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
) -> Model:
    """Legacy ``/core_model/<family>/<v>`` (SAM ``encoder.pth``, SAM2 ``weights.pt``) or the current
    stack's package (``model.pth``/``model.pt`` + ``sam_configuration.json``), whichever the cache
    holds; a download takes the legacy route."""
    import json

    from edge_agent.models.artifacts.core_cache import core_model_dir, ensure_core_files, inspect
    from edge_agent.models.common.errors import ModelArtifactsError
    from edge_agent.models.foundation import sam, sam2

    assert ref.version is not None and ref.family is not None
    module: Any = sam2 if ref.family == "sam2" else sam
    cls: Any = sam2.Sam2Segmenter if ref.family == "sam2" else sam.SamSegmenter
    _require_transformers(ref.model_id, ref.family)
    weights, version = None, ref.version
    if not inspect(core_model_dir(ref, settings.model_cache_dir), (module.LEGACY_FILE,)).complete:
        package = _cached_package(ref, settings, ("torch",), module.PACKAGE_FILES)
        if package is not None:
            config_path = package / "sam_configuration.json"
            try:
                version = str(json.loads(config_path.read_text())["version"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ModelArtifactsError(config_path, 'must be {"version": "<variant>"}') from None
            weights = package / module.PACKAGE_FILES[0]
    if weights is None:
        directory = ensure_core_files(
            ref,
            (module.LEGACY_FILE,),
            api_key,
            settings,
            task_type="embed",
            model_type=ref.family,
            progress=progress,
            status=status,
        )
        weights = directory / module.LEGACY_FILE
    if status:
        status(f"loading {ref.model_id}")
    model: Model = cls(ref.model_id, weights, version, settings, status)
    return model


def _cached_package(
    ref: ModelRef, settings: ModelSettings, backends: tuple[str, ...], files: tuple[str, ...]
) -> Path | None:
    """The directory of an intact cached package of ``ref`` (current stack) holding ``files``, or None."""
    from edge_agent.models.artifacts.packages.store import PackageStore

    store = PackageStore(settings)
    for entry in store.cached_packages(ref.model_id):
        if entry.package.backend in backends and not store.problems(entry):
            if all((entry.directory / name).is_file() for name in files):
                return entry.directory
    return None
