"""Where a foundation model's files come from: either of Roboflow's two stacks' caches, else a download.

Roboflow's legacy stack fetches ``/core_model/{family}/{variant}`` into
``MODEL_CACHE_DIR/<family>/<variant>/`` (or the ``~<slug>-<hash>`` directory of ids with capitals;
caches filled before 2026-06 hold plain ``<family>/<Variant>/`` directories for those too). Its
current stack (inference-models) fetches packages from the package registry into
``models-cache/``. A box may hold either, so both are looked at before anything is downloaded;
online, the package registry (what Roboflow runs on Linux) is asked first and ``/core_model`` when
the registry has no package of the id. Offline, only the caches are read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.artifacts.core_cache import core_model_dir, ensure_core_files, inspect
from edge_agent.models.common.errors import (
    ModelDownloadError,
    ModelNotCachedError,
    ModelNotFoundError,
    NoSuitablePackageError,
)
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.ids import ModelRef

StatusCallback = Callable[[str], None]


def plain_legacy_dir(ref: ModelRef, root: Path) -> Path | None:
    """``<family>/<Variant>/`` as Roboflow versions before the slug rule wrote it (ids with capitals)."""
    assert ref.project is not None and ref.version is not None
    candidate = root / ref.project / ref.version
    real_root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(candidate)).is_relative_to(real_root):
        return None
    return candidate


def cached_legacy_dir(ref: ModelRef, required: tuple[str, ...], settings: ModelSettings) -> Path | None:
    """A complete legacy-layout directory of ``ref``, if the cache holds one."""
    for directory in (core_model_dir(ref, settings.model_cache_dir), plain_legacy_dir(ref, settings.model_cache_dir)):
        if directory is not None and directory.is_dir() and inspect(directory, required).complete:
            return directory
    return None


def foundation_directory(
    ref: ModelRef,
    required: tuple[str, ...],
    api_key: str | None,
    settings: ModelSettings,
    *,
    task_type: str,
    model_type: str,
    backends: tuple[str, ...],
    package_id: str | None = None,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Path:
    """The directory holding ``required`` files of a foundation model, from either stack.

    ``package_id``: the id the package registry knows the model by, when it differs (Roboflow
    rewrites ``perception_encoder/`` to ``perception-encoder/``). ``backends``: package backends
    whose files this family reads (``hugging-face``, ``torch``, ``onnx``).
    """
    from edge_agent.models.artifacts.packages.store import PackageStore
    from edge_agent.models.resolution.package_loader import package_directory

    legacy = cached_legacy_dir(ref, required, settings)
    if legacy is not None:
        return legacy
    registry_id = package_id or ref.model_id
    cached = [c for c in PackageStore(settings).cached_packages(registry_id) if c.package.backend in backends]
    if cached or not settings.offline_mode:
        try:
            directory = package_directory(
                registry_id,
                api_key,
                settings,
                backends=backends,
                own_engines=backends,
                progress=progress,
                status=status,
            )
        except (ModelNotFoundError, NoSuitablePackageError, ModelDownloadError) as exc:
            if cached:
                raise
            registry_problem: Exception | None = exc
        else:
            missing = [name for name in required if not (directory / name).is_file()]
            if not missing:
                return directory
            registry_problem = ModelDownloadError(
                f"the package of {registry_id} in {directory} lacks {', '.join(missing)}"
            )
        try:
            return ensure_core_files(
                ref,
                required,
                api_key,
                settings,
                task_type=task_type,
                model_type=model_type,
                progress=progress,
                status=status,
            )
        except (ModelNotFoundError, ModelDownloadError) as exc:
            raise ModelDownloadError(
                f"neither Roboflow stack has {ref.model_id}: the package registry said: {registry_problem}; "
                f"/core_model said: {exc}"
            ) from None
    raise ModelNotCachedError(
        f"OFFLINE_MODE is on and {ref.model_id} is in neither model cache layout (legacy "
        f"{core_model_dir(ref, settings.model_cache_dir)} with {', '.join(required)}, nor a package of "
        f"{registry_id} in models-cache/). Fetch it on a connected machine with `edge-agent models pull {ref.model_id}`"
    )
