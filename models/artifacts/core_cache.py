"""Foundation-model weights from ``/core_model/{family}/{variant}``, in the legacy cache layout.

The directory is Roboflow's: ``MODEL_CACHE_DIR/<family>/<variant>/`` when every part is lower
case, else ``MODEL_CACHE_DIR/~<prefix>-<blake2s>`` (``clip/ViT-B-16`` ->
``~clip-ViT-B-16-209529c2...``), so either program finds what the other fetched. Each file is
saved under the last segment of its URL, as Roboflow saves it. The guarantees are those of
``models.cache``: the model's one lock, atomic writes, sizes and md5 recorded and checked at every
load, nothing deleted offline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.artifacts.packages.layout import RESERVED_SEGMENTS, legacy_slug
from edge_agent.models.common.errors import (
    CacheIntegrityError,
    CacheWriteError,
    InvalidModelIdError,
    ModelDownloadError,
    ModelNotCachedError,
)
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.identity.ids import ModelRef

logger = logging.getLogger(__name__)

_PLAIN_SEGMENT = re.compile(r"[a-z0-9._ -]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def core_model_dir(ref: ModelRef, root: Path) -> Path:
    """Roboflow's legacy cache directory of a ``family/variant`` id, proven inside ``root``."""
    assert ref.project is not None and ref.version is not None
    parts = [ref.project, ref.version]
    plain = all(_PLAIN_SEGMENT.fullmatch(p) for p in parts) and parts[0] not in RESERVED_SEGMENTS
    candidate = root.joinpath(*parts) if plain else root / legacy_slug(ref.model_id)
    real_root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(candidate)).is_relative_to(real_root):
        raise InvalidModelIdError(f"the cache directory of {ref.model_id} resolves outside MODEL_CACHE_DIR {root}")
    return candidate


def file_name_of(url: str, key: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not _FILE_NAME.fullmatch(name) or len(name) > 200:
        raise ModelDownloadError(f"the weights URL for {key!r} ends in {name!r}, which is not a usable file name")
    return name


def inspect(directory: Path, required: tuple[str, ...]) -> cache.CacheState:
    """Files present, sizes as recorded at download, ONNX files starting like a protobuf."""
    missing = tuple(n for n in required if not (directory / n).is_file())
    recorded = (cache.read_manifest(directory) or {}).get("files") or {}
    corrupt = []
    for name in required:
        if name in missing:
            continue
        path = directory / name
        size = path.stat().st_size
        expected = (recorded.get(name) or {}).get("size")
        if size == 0:
            corrupt.append(f"{name}: empty file")
        elif isinstance(expected, int) and expected != size:
            corrupt.append(f"{name}: {size} bytes on disk, {expected} recorded at download")
        elif name.endswith(".onnx"):
            with open(path, "rb") as handle:
                if handle.read(1) != b"\x08":
                    corrupt.append(f"{name}: not an ONNX protobuf")
    return cache.CacheState(missing=missing, corrupt=tuple(corrupt))


def ensure_core_files(
    ref: ModelRef,
    required: tuple[str, ...],
    api_key: str | None,
    settings: ModelSettings,
    *,
    task_type: str,
    model_type: str,
    progress: ProgressCallback | None = None,
    status: Callable[[str], None] | None = None,
) -> Path:
    """The directory holding ``required`` files of a foundation model, fetched if needed."""
    directory = core_model_dir(ref, settings.model_cache_dir)
    state = inspect(directory, required)
    if state.complete:
        return directory
    problem = "; ".join([*(f"missing {m}" for m in state.missing), *state.corrupt])
    if settings.offline_mode:
        if state.missing:
            raise ModelNotCachedError(
                f"OFFLINE_MODE is on and {ref.model_id} is not (completely) in the model cache ({directory}: "
                f"{problem}). Fetch it on a connected machine with `edge-agent models pull {ref.model_id}`"
            )
        raise CacheIntegrityError(
            f"the cached {ref.model_id} in {directory} is damaged ({problem}) and OFFLINE_MODE is on; "
            f"nothing was deleted"
        )
    with cache.model_lock(ref, settings):
        state = inspect(directory, required)
        if state.complete:
            return directory
        logger.info("fetching %s into %s (%s)", ref.model_id, directory, problem)
        try:
            _download(ref, directory, required, api_key, settings, task_type, model_type, progress, status)
        except OSError as exc:
            raise CacheWriteError(f"cannot write {ref.model_id} into {directory}: {exc.strerror or exc}") from None
    return directory


def _download(
    ref: ModelRef,
    directory: Path,
    required: tuple[str, ...],
    api_key: str | None,
    settings: ModelSettings,
    task_type: str,
    model_type: str,
    progress: ProgressCallback | None,
    status: Callable[[str], None] | None,
) -> None:
    assert ref.project is not None and ref.version is not None
    api = RoboflowApi(settings)
    urls = api.describe_core_model(ref.project, ref.version, api_key)
    names = {file_name_of(url, key): url for key, url in urls.items()}
    absent = [n for n in required if n not in names]
    if absent:
        raise ModelDownloadError(
            f"the Roboflow API lists no {', '.join(absent)} for {ref.model_id} "
            f"(it lists {', '.join(names) or 'nothing'})"
        )
    if status:
        status(f"downloading {ref.model_id}")
    recorded = download_files(api, names, directory, ref.model_id, progress)
    cache.write_model_type(directory, ref.model_id, task_type, model_type)
    cache.atomic_write_json(
        directory / cache.MANIFEST_FILE, {"model_id": ref.model_id, "downloaded_at": time.time(), "files": recorded}
    )
    logger.info("downloaded %s (%s)", ref.model_id, ", ".join(f"{n} {r['size']} bytes" for n, r in recorded.items()))


def download_files(
    api: RoboflowApi,
    names: dict[str, str],
    directory: Path,
    what: str,
    progress: ProgressCallback | None,
    on_file: Callable[[Path], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Download ``names`` (file name -> URL) into ``directory``, each committed atomically from its
    temp file; ``on_file`` runs on each file as it lands (unpacking an archive, say). Returns each
    file's size and md5 for the directory's manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_temps(directory)
    recorded: dict[str, dict[str, object]] = {}
    for name, url in names.items():
        got = api.download(url, directory, name, f"{name} of {what}", progress)
        try:
            cache.commit_temp(got.path, directory / name)
        finally:
            with contextlib.suppress(OSError):
                got.path.unlink()
        recorded[name] = {"size": got.size, "md5": got.md5}
        if on_file is not None:
            on_file(directory / name)
    return recorded
