"""Fine-tuned models from the package registry: resolve, choose, cache, build.

``use_packages`` decides per model whether the package registry serves it (MODEL_REGISTRY, what
the caches hold, whether ``/ort`` knows it); ``load_package_model`` then loads the best package
this box runs from the cache, or asks ``/weights``, checks the family is one edge-agent runs
before downloading anything, downloads the chosen package under the model's lock and builds the
model. A package that fails to load falls back to the next one in rank, as Roboflow's loader does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts import fetch as artifacts
from edge_agent.models.artifacts.api import ProgressCallback
from edge_agent.models.artifacts.packages.client import PackageRegistry
from edge_agent.models.artifacts.packages.inference_config import package_artifacts
from edge_agent.models.artifacts.packages.manifest import QUANTIZATIONS, ModelMetadata, ModelPackage
from edge_agent.models.artifacts.packages.selection import BACKEND_RANK, Preferences, Selection, choose
from edge_agent.models.artifacts.packages.store import CachedPackage, PackageStore
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    ModelNotCachedError,
    ModelNotFoundError,
    ModelRuntimeError,
    ModelSettingsError,
    UnsupportedModelTypeError,
)
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.box import probe_box
from edge_agent.models.identity.ids import ModelRef, cache_dir_for
from edge_agent.models.resolution.build import MODEL_REGISTRY, build_from_artifacts, get_family
from edge_agent.models.tasks.model import Model

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]
_TORCH_BACKENDS = ("torch-script", "trt")
_BACKEND_SPELLINGS = {"torchscript": "torch-script", "tensorrt": "trt", "hf": "hugging-face"}


def _comma_list(value: str | None, variable: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = []
    for raw in value.split(","):
        item = raw.strip().lower()
        item = _BACKEND_SPELLINGS.get(item, item)
        if not item:
            continue
        if item not in known:
            raise ModelSettingsError(f"{variable}={value!r}: {item!r} is not one of {', '.join(known)}")
        items.append(item)
    return tuple(items) or None


def preferences(settings: ModelSettings) -> Preferences:
    return Preferences(
        package_id=settings.model_package_id,
        backends=_comma_list(settings.model_package_backends, "MODEL_PACKAGE_BACKENDS", tuple(BACKEND_RANK)),
        quantizations=_comma_list(settings.model_package_quantization, "MODEL_PACKAGE_QUANTIZATION", QUANTIZATIONS),
        batch_size=(1, settings.max_batch_size),
        allow_untrusted=settings.allow_untrusted_packages,
    )


def package_types(architecture: str | None, task_type: str | None, variant: str | None) -> tuple[str, str]:
    """(task_type, model_type) in edge-agent's registry for what a package's metadata says."""
    task = task_type or "object-detection"
    for candidate in (variant, architecture):
        if candidate and (task, candidate) in MODEL_REGISTRY:
            return task, candidate
    return task, variant or architecture or "unknown"


def legacy_holds_weights(ref: ModelRef, settings: ModelSettings) -> bool:
    """Does the legacy ``<project>/<version>/`` directory hold the model's weights?

    A ``model_type.json`` alone does not count: Roboflow's inference-models writes one there
    beside the packages it keeps in its own layout (roboflow-packages.md §4).
    """
    directory = cache_dir_for(ref, settings.model_cache_dir)
    types = cache.read_model_type(directory)
    if types is None:
        return False
    from edge_agent.models.resolution.build import MODEL_REGISTRY

    family = MODEL_REGISTRY.get(types)
    weights_file = family.weights_file if family is not None else cache.WEIGHTS_FILE
    return (directory / weights_file).is_file()


def use_packages(ref: ModelRef, api_key: str | None, settings: ModelSettings) -> bool:
    """Whether the package registry (and its cache layout) serves ``ref``.

    ``auto`` looks in both cache layouts, online and offline, and takes whichever holds the
    model's weights (the legacy one first); only when neither does it ask ``/ort``.
    """
    if settings.model_registry != "auto":
        return settings.model_registry == "packages"
    if legacy_holds_weights(ref, settings):
        return False
    if PackageStore(settings).cached_packages(ref.model_id):
        return True
    if cache.read_model_type(cache_dir_for(ref, settings.model_cache_dir)) is not None:
        return False  # a legacy record of the model's type: /ort fetches its weights
    if settings.offline_mode:
        return False  # the legacy path names the directory it looked in
    try:
        artifacts.describe(ref, api_key, settings)
    except ModelNotFoundError:
        logger.info("the /ort API has no answer for %s; asking the package registry", ref.model_id)
        return True
    return False


def package_model_type(ref: ModelRef, api_key: str | None, settings: ModelSettings) -> tuple[str, str]:
    """(task_type, model_type) from the package cache, else ``/stat`` (no weights are fetched)."""
    cached = PackageStore(settings).cached_packages(ref.model_id)
    if cached:
        first = cached[0]
        return package_types(first.architecture, first.task_type, first.variant)
    if settings.offline_mode:
        raise _not_cached(ref, settings)
    stat = PackageRegistry(settings).stat(ref.model_id, api_key)
    return package_types(stat.architecture, stat.task_type, stat.variant)


def _not_cached(ref: ModelRef, settings: ModelSettings) -> ModelNotCachedError:
    store = PackageStore(settings)
    return ModelNotCachedError(
        f"OFFLINE_MODE is on and {ref.model_id} is in neither cache layout of {settings.model_cache_dir} "
        f"({cache_dir_for(ref, settings.model_cache_dir)} nor {store.layout.model_dir(ref.model_id)}). Fetch it "
        f"on a connected machine with `edge-agent models pull {ref.model_id}` and copy the cache, or turn "
        f"OFFLINE_MODE off"
    )


def weights_handle(package: ModelPackage) -> str:
    """The network file of a package: ``weights.onnx`` / ``weights.torchscript`` or the only such file."""
    suffixes = (".torchscript", ".pt") if package.backend == "torch-script" else (".onnx",)
    handles = [f.handle for f in package.files if f.handle.endswith(suffixes)]
    for preferred in ("weights.onnx", "weights.torchscript"):
        if preferred in handles:
            return preferred
    if len(handles) == 1:
        return handles[0]
    raise UnsupportedModelTypeError(
        f"package {package.package_id} ({package.backend}) has {len(handles)} weights files "
        f"({', '.join(handles) or 'none'}); expected one {' or '.join(suffixes)} file"
    )


def _build(
    model_id: str,
    directory: Path,
    package: ModelPackage,
    types: tuple[str, str],
    settings: ModelSettings,
    status: StatusCallback | None,
) -> Model:
    task_type, model_type = types
    family = get_family(task_type, model_type, model_id)
    if status:
        status(f"loading {model_id}")
    loaded = package_artifacts(directory, model_id, weights_handle(package))
    model = build_from_artifacts(family, model_id, loaded, task_type, model_type, settings, status)
    model.directory = directory
    return model


def _log_choice(model_id: str, selection: Selection, box_text: str, where: str) -> None:
    logger.info("model %s: %s (%s; box: %s)", model_id, selection.describe(), where, box_text)


def _from_cache(
    ref: ModelRef, settings: ModelSettings, status: StatusCallback | None, store: PackageStore
) -> Model | None:
    cached = store.cached_packages(ref.model_id)
    if not cached:
        return None
    box = probe_box(settings, need_torch=any(c.package.backend in _TORCH_BACKENDS for c in cached))
    selection = choose(ref.model_id, [c.package for c in cached], box, preferences(settings))
    _log_choice(ref.model_id, selection, box.describe(), "from the cache")
    by_id: dict[str, CachedPackage] = {c.package.package_id: c for c in cached}
    failures = []
    for package in selection.ranked:
        entry = by_id[package.package_id]
        problems = store.problems(entry)
        if problems:
            failures.append(f"{package.package_id}: {'; '.join(problems)}")
            continue
        types = package_types(entry.architecture, entry.task_type, entry.variant)
        try:
            return _build(ref.model_id, entry.directory, package, types, settings, status)
        except (CacheIntegrityError, ModelRuntimeError) as exc:
            failures.append(f"{package.package_id}: {exc}")
            logger.warning(
                "cached package %s of %s does not load (%s); trying the next", package.package_id, ref.model_id, exc
            )
    if settings.offline_mode:
        raise CacheIntegrityError(
            f"the cached packages of {ref.model_id} are damaged ({'; '.join(failures)}) and OFFLINE_MODE is on, "
            f"so they cannot be fetched again; nothing was deleted"
        )
    logger.warning("cached packages of %s are unusable (%s); fetching again", ref.model_id, "; ".join(failures))
    return None


def load_package_model(
    ref: ModelRef,
    api_key: str | None,
    settings: ModelSettings,
    *,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Model:
    from edge_agent.models.artifacts.cache import model_lock

    store = PackageStore(settings)
    model = _from_cache(ref, settings, status, store)
    if model is not None:
        return model
    if settings.offline_mode:
        raise _not_cached(ref, settings)
    metadata = PackageRegistry(settings).weights(ref.model_id, api_key)
    if metadata.model_id != ref.model_id:
        # The cache is keyed by the id edge-agent is asked for, so an offline start finds it.
        logger.info("the registry calls %s %s; caching it as %s", ref.model_id, metadata.model_id, ref.model_id)
        metadata = ModelMetadata(
            ref.model_id,
            metadata.architecture,
            metadata.task_type,
            metadata.variant,
            metadata.packages,
            metadata.dependencies,
            metadata.recommended_parameters,
        )
    types = package_types(metadata.architecture, metadata.task_type, metadata.variant)
    get_family(*types, ref.model_id)  # refuse an unsupported family before downloading anything
    box = probe_box(settings, need_torch=any(p.backend in _TORCH_BACKENDS for p in metadata.packages))
    selection = choose(ref.model_id, metadata.packages, box, preferences(settings))
    _log_choice(ref.model_id, selection, box.describe(), "from the registry")
    failures: list[str] = []
    for index, package in enumerate(selection.ranked):
        if index:
            logger.warning(
                "falling back from %s to %s for %s",
                selection.ranked[index - 1].package_id,
                package.package_id,
                ref.model_id,
            )
        with model_lock(ref, settings):
            directory = store.materialize(metadata, package, progress, status)
        try:
            return _build(ref.model_id, directory, package, types, settings, status)
        except (CacheIntegrityError, ModelRuntimeError) as exc:
            failures.append(f"{package.package_id}: {exc}")
    raise ModelRuntimeError(f"no package of {ref.model_id} loads here: {'; '.join(failures)}")


def package_directory(
    model_id: str,
    api_key: str | None,
    settings: ModelSettings,
    *,
    backends: tuple[str, ...] = ("onnx",),
    own_engines: tuple[str, ...] = (),
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
) -> Path:
    """The directory of the best cached-or-downloaded package of ``model_id`` among ``backends``.

    ``own_engines``: backends the caller runs with its own code (a foundation family's Hugging Face
    or torch checkpoint), runnable here whatever engines the box has.

    For the parts foundation models are made of (PP-OCR's detection and recognition packages):
    no model is built here, and MODEL_PACKAGE_ID/MODEL_PACKAGE_BACKENDS (meant for the stream's
    model) do not apply.
    """
    import dataclasses

    from edge_agent.models.artifacts.cache import model_lock
    from edge_agent.models.identity.ids import parse_model_id

    ref = parse_model_id(model_id)
    store = PackageStore(settings)
    prefs = dataclasses.replace(preferences(settings), package_id=None, backends=backends)
    cached = [c for c in store.cached_packages(ref.model_id) if c.package.backend in backends]
    if cached:
        box = probe_box(settings, need_torch=any(c.package.backend in _TORCH_BACKENDS for c in cached))
        box = dataclasses.replace(box, engines=box.engines | frozenset(own_engines))
        selection = choose(ref.model_id, [c.package for c in cached], box, prefs)
        by_id = {c.package.package_id: c for c in cached}
        for package in selection.ranked:
            problems = store.problems(by_id[package.package_id])
            if not problems:
                _log_choice(ref.model_id, selection, box.describe(), "from the cache")
                return by_id[package.package_id].directory
            if settings.offline_mode:
                raise CacheIntegrityError(
                    f"the cached package {package.package_id} of {ref.model_id} is damaged ({'; '.join(problems)}) "
                    f"and OFFLINE_MODE is on, so it cannot be fetched again; nothing was deleted"
                )
    if settings.offline_mode:
        raise _not_cached(ref, settings)
    metadata = PackageRegistry(settings).weights(ref.model_id, api_key)
    if metadata.model_id != ref.model_id:
        metadata = dataclasses.replace(metadata, model_id=ref.model_id)
    box = probe_box(settings, need_torch=any(p.backend in _TORCH_BACKENDS for p in metadata.packages))
    box = dataclasses.replace(box, engines=box.engines | frozenset(own_engines))
    selection = choose(ref.model_id, metadata.packages, box, prefs)
    _log_choice(ref.model_id, selection, box.describe(), "from the registry")
    with model_lock(ref, settings):
        return store.materialize(metadata, selection.chosen, progress, status)
