"""Make a model's artifact files available locally: the cache, a local directory or a built-in.

Downloads follow Roboflow Inference's steps (SPEC §6): ask ``/ort/{project}/{version}``, write the
classes to ``class_names.txt``, fetch ``environment`` (JSON) and ``model`` (bytes), merge
``colors`` into ``environment["COLORS"]`` (as a JSON string, as Roboflow stores it). All of it
happens under the model's one lock, every file lands atomically, and sizes/hashes are recorded so
a truncated or corrupt ``weights.onnx`` is noticed and fetched again. In OFFLINE_MODE, or when the
network is down, nothing is fetched and nothing is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    CacheWriteError,
    ModelDownloadError,
    ModelNotCachedError,
    ModelNotFoundError,
    UnsupportedModelTypeError,
)
from edge_agent.models.common.settings import ModelSettings, get_model_settings
from edge_agent.models.identity.ids import BUILTIN_ROOT, ModelRef, cache_dir_for

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str], None]

# modelType the API leaves out for some old versions -> Roboflow Inference's defaults per task.
MODEL_TYPE_DEFAULTS: dict[str, str] = {
    "object-detection": "yolov5v2s",
    "instance-segmentation": "yolact",
    "classification": "vit",
    "keypoint-detection": "yolov8n",
}
# Local directories without model_type.json are assumed to hold a YOLOv8-layout detector.
LOCAL_DEFAULT_TYPE = ("object-detection", "yolov8")

# The /ort answer is needed twice on a first load (model type, then artifacts); a short memo saves
# the second API call. Artifact URLs are signed, so entries expire quickly.
_DESCRIPTION_TTL_S = 120.0
_descriptions: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
_descriptions_lock = threading.Lock()


def _memo_key(base_url: str, model_id: str, api_key: str | None) -> tuple[str, str]:
    digest = hashlib.sha256(f"{base_url}\n{api_key or ''}".encode()).hexdigest()[:16]
    return model_id, digest


def forget_descriptions() -> None:
    with _descriptions_lock:
        _descriptions.clear()


def describe(ref: ModelRef, api_key: str | None, settings: ModelSettings, *, fresh: bool = False) -> dict[str, Any]:
    """The API's ``ort`` description of ``ref`` (memoised for a short while)."""
    assert ref.project is not None and ref.version is not None
    key = _memo_key(settings.api_base_url, ref.model_id, api_key)
    now = time.monotonic()
    if not fresh:
        with _descriptions_lock:
            hit = _descriptions.get(key)
        if hit is not None and now - hit[0] < _DESCRIPTION_TTL_S:
            return hit[1]
    answer = RoboflowApi(settings).describe_model(ref.project, ref.version, api_key)
    with _descriptions_lock:
        _descriptions[key] = (now, answer)
    return answer


def types_from_description(ref: ModelRef, ort: dict[str, Any]) -> tuple[str, str]:
    task = ort.get("type") or "object-detection"
    model_type = ort.get("modelType")
    if not model_type or model_type == "ort":
        model_type = MODEL_TYPE_DEFAULTS.get(task)
    if not isinstance(task, str) or not isinstance(model_type, str):
        raise ModelDownloadError(
            f"the Roboflow API did not say which kind of model {ref.model_id} is (type={task!r}, "
            f"modelType={ort.get('modelType')!r})"
        )
    return task, model_type


def builtin_names() -> list[str]:
    if not BUILTIN_ROOT.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_ROOT.iterdir() if (p / cache.WEIGHTS_FILE).is_file())


TORCHSCRIPT_WEIGHTS = "weights.torchscript"


def local_weights_file(directory: Path, weights_file: str) -> str:
    """The weights name to use in a local directory: the family's own, else ``weights.onnx``, else a
    TorchScript export (``weights.torchscript`` or the only ``*.torchscript``) for the torch engine."""
    if (directory / weights_file).is_file():
        return weights_file
    if (directory / cache.WEIGHTS_FILE).is_file():
        return cache.WEIGHTS_FILE
    if (directory / TORCHSCRIPT_WEIGHTS).is_file():
        return TORCHSCRIPT_WEIGHTS
    scripts = sorted(p.name for p in directory.glob("*.torchscript"))
    return scripts[0] if len(scripts) == 1 else weights_file


def local_directory(ref: ModelRef, weights_file: str = cache.WEIGHTS_FILE) -> Path:
    """The directory of a local or built-in model, checked to hold weights."""
    assert ref.local_dir is not None
    if not (ref.local_dir / local_weights_file(ref.local_dir, weights_file)).is_file():
        if ref.kind == "builtin":
            names = ", ".join(f"builtin/{n}" for n in builtin_names()) or "none are installed"
            raise ModelNotFoundError(
                f"no built-in model {ref.model_id} (looked in {ref.local_dir}); available: {names}"
            )
        names = weights_file if weights_file == cache.WEIGHTS_FILE else f"{weights_file} or {cache.WEIGHTS_FILE}"
        raise ModelNotFoundError(f"local model directory {ref.local_dir} has no {names} (nor {TORCHSCRIPT_WEIGHTS})")
    return ref.local_dir


def ensure_artifacts(
    ref: ModelRef,
    api_key: str | None = None,
    *,
    settings: ModelSettings | None = None,
    progress: ProgressCallback | None = None,
    status: StatusCallback | None = None,
    refetch_if_unchanged: tuple[int, int] | None = None,
    weights_file: str = cache.WEIGHTS_FILE,
) -> Path:
    """Directory holding ``ref``'s complete artifacts, downloading (or repairing) them if needed.

    ``refetch_if_unchanged``: the fingerprint of a ``weights.onnx`` that failed to load; it is
    fetched again unless another process has replaced it meanwhile.
    """
    settings = settings or get_model_settings()
    if ref.read_only:
        return local_directory(ref, weights_file)
    if ref.kind == "generic":
        raise UnsupportedModelTypeError(
            f"{ref.model_id} is a {ref.family} foundation model; this build of edge-agent has no {ref.family} runtime"
        )
    api_key = api_key or settings.api_key
    directory = cache_dir_for(ref, settings.model_cache_dir)
    weights = directory / weights_file

    def wanted(state: cache.CacheState) -> bool:
        if not state.complete:
            return True
        return refetch_if_unchanged is not None and cache.file_fingerprint(weights) == refetch_if_unchanged

    state = cache.inspect_cache_dir(directory, weights_file)
    if not wanted(state):
        return directory
    if settings.offline_mode:
        _raise_offline(ref, directory, state, refetch_if_unchanged is not None, weights_file)
    with cache.model_lock(ref, settings):
        state = cache.inspect_cache_dir(directory, weights_file)
        if not wanted(state):
            return directory  # another process finished the download while we waited
        reason = _why(state, refetch_if_unchanged is not None, weights_file)
        logger.info("fetching %s into %s (%s)", ref.model_id, directory, reason)
        cache.remove_stale_temps(directory)
        try:
            _download(ref, directory, api_key, settings, progress, status, weights_file)
        except OSError as exc:
            raise CacheWriteError(f"cannot write {ref.model_id} into {directory}: {exc.strerror or exc}") from None
        except ModelDownloadError as exc:
            if state.missing:
                raise
            raise CacheIntegrityError(
                f"the cached {ref.model_id} is damaged ({reason}) and fetching it again failed: {exc}. "
                f"Nothing was deleted; it is retried on the next load"
            ) from exc
    return directory


def _why(state: cache.CacheState, load_failed: bool, weights_file: str = cache.WEIGHTS_FILE) -> str:
    parts = []
    if state.missing:
        parts.append("missing " + ", ".join(state.missing))
    parts.extend(state.corrupt)
    if load_failed and not parts:
        parts.append(f"{weights_file} could not be loaded by onnxruntime")
    return "; ".join(parts)


def _raise_offline(
    ref: ModelRef, directory: Path, state: cache.CacheState, load_failed: bool, weights_file: str
) -> None:
    if state.missing and len(state.missing) == len(cache.REQUIRED_FILES):
        raise ModelNotCachedError(
            f"OFFLINE_MODE is on and {ref.model_id} is not in the model cache ({directory}). Fetch it "
            f"on a connected machine with `edge-agent models pull {ref.model_id}` and copy the "
            f"directory, or turn OFFLINE_MODE off"
        )
    if state.missing:
        raise ModelNotCachedError(
            f"OFFLINE_MODE is on and the cached {ref.model_id} in {directory} is incomplete "
            f"({_why(state, load_failed, weights_file)}); turn OFFLINE_MODE off once to complete it"
        )
    raise CacheIntegrityError(
        f"the cached {ref.model_id} in {directory} is damaged ({_why(state, load_failed, weights_file)}) and "
        f"OFFLINE_MODE is on, so it cannot be fetched again; nothing was deleted"
    )


def _class_names(ref: ModelRef, ort: dict[str, Any], environment: dict[str, Any]) -> list[str]:
    classes = ort.get("classes")
    if isinstance(classes, list) and all(isinstance(c, str) for c in classes):
        return list(classes)
    names = cache.class_map_names(environment)
    if names is not None:
        return names
    raise ModelDownloadError(f"the Roboflow API gave no class names for {ref.model_id}")


def _url(ref: ModelRef, ort: dict[str, Any], key: str) -> str:
    value = ort.get(key)
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ModelDownloadError(
            f"the Roboflow API answer for {ref.model_id} has no usable '{key}' URL; the model version "
            f"may not be trained/deployed yet"
        )
    return value


def _download(
    ref: ModelRef,
    directory: Path,
    api_key: str | None,
    settings: ModelSettings,
    progress: ProgressCallback | None,
    status: StatusCallback | None,
    weights_file: str = cache.WEIGHTS_FILE,
) -> None:
    api = RoboflowApi(settings)
    ort = describe(ref, api_key, settings)
    try:
        model_url, env_url = _url(ref, ort, "model"), _url(ref, ort, "environment")
    except ModelDownloadError:
        ort = describe(ref, api_key, settings, fresh=True)
        model_url, env_url = _url(ref, ort, "model"), _url(ref, ort, "environment")
    task_type, model_type = types_from_description(ref, ort)
    if status:
        status(f"downloading {ref.model_id}")
    environment = api.fetch_json(env_url, f"environment.json of {ref.model_id}")
    if not isinstance(environment, dict):
        raise ModelDownloadError(f"environment.json of {ref.model_id} is not a JSON object")
    if "colors" in ort:
        environment["COLORS"] = json.dumps(ort["colors"])
    names = _class_names(ref, ort, environment)
    weights = api.download(model_url, directory, weights_file, f"weights of {ref.model_id}", progress)
    try:
        # weights first: a crash before the manifest leaves a size mismatch that forces a refetch
        cache.commit_temp(weights.path, directory / weights_file)
    finally:
        with contextlib.suppress(OSError):
            weights.path.unlink()
    cache.atomic_write_json(directory / cache.ENVIRONMENT_FILE, environment)
    cache.atomic_write_lines(directory / cache.CLASS_NAMES_FILE, names)
    if isinstance(ort.get("keypoints_metadata"), list):
        cache.atomic_write_json(directory / cache.KEYPOINTS_FILE, ort["keypoints_metadata"])
    cache.write_model_type(directory, ref.model_id, task_type, model_type)
    cache.atomic_write_json(
        directory / cache.MANIFEST_FILE,
        {
            "model_id": ref.model_id,
            "downloaded_at": time.time(),
            "files": {weights_file: {"size": weights.size, "md5": weights.md5}},
        },
    )
    logger.info("downloaded %s (%d bytes of weights, md5 %s)", ref.model_id, weights.size, weights.md5)
