"""Every model in the cache, both layouts, with the task and type the registry gives it
(``edge-agent models list``).

It sits with the registry because a package's metadata names an architecture, and only the
catalog knows which of edge-agent's model types that is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_agent.models.artifacts.cache import (
    ENVIRONMENT_FILE,
    MODEL_TYPE_FILE,
    WEIGHTS_FILE,
    inspect_cache_dir,
    model_lock,
    read_json_file,
    read_manifest,
    read_model_type,
)
from edge_agent.models.artifacts.packages.layout import RESERVED_SEGMENTS
from edge_agent.models.artifacts.packages.store import PackageStore, files_size
from edge_agent.models.common.errors import InvalidModelIdError
from edge_agent.models.common.settings import ModelSettings, get_model_settings
from edge_agent.models.identity.ids import parse_model_id
from edge_agent.models.resolution.package_loader import package_types
from edge_agent.models.speed.precision import QUANTIZED_DIR, quantized_dir, read_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedModel:
    model_id: str
    path: Path
    size_bytes: int
    task_type: str | None
    model_type: str | None
    complete: bool
    #: "legacy" (<project>/<version>/) or "inference-models" (models-cache/<slug>/<package>/)
    layout: str = "legacy"


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def list_cached_models(settings: ModelSettings | None = None) -> list[CachedModel]:
    """Every ``<project>/<version>`` directory in the cache that holds model files."""
    settings = settings or get_model_settings()
    root = settings.model_cache_dir
    found: list[CachedModel] = []
    if not root.is_dir():
        return found
    for project in sorted(root.iterdir()):
        if project.name.startswith(".") or not project.is_dir() or project.is_symlink():
            continue
        if project.name in RESERVED_SEGMENTS:
            continue
        if project.name.startswith("~"):  # a foundation model under Roboflow's slugged name
            content = read_json_file(project / MODEL_TYPE_FILE)
            if isinstance(content, dict) and isinstance(content.get("model_id"), str):
                types = read_model_type(project)
                found.append(
                    CachedModel(
                        model_id=content["model_id"],
                        path=project,
                        size_bytes=_dir_size(project),
                        task_type=types[0] if types else None,
                        model_type=types[1] if types else None,
                        complete=(read_manifest(project) or {}).get("files") is not None,
                    )
                )
            continue
        for version in sorted(project.iterdir()):
            if version.name.startswith(".") or not version.is_dir() or version.is_symlink():
                continue
            names = {p.name for p in version.iterdir()}
            if not names & {WEIGHTS_FILE, MODEL_TYPE_FILE, ENVIRONMENT_FILE} and not any(
                n.endswith(".onnx") for n in names
            ):
                continue
            types = read_model_type(version)
            found.append(
                CachedModel(
                    model_id=f"{project.name}/{version.name}",
                    path=version,
                    size_bytes=_dir_size(version),
                    task_type=types[0] if types else None,
                    model_type=types[1] if types else None,
                    complete=inspect_cache_dir(version).complete,
                )
            )
    found.extend(_package_models(settings))
    found.extend(_int8_copies(settings))
    return found


def _int8_copies(settings: ModelSettings) -> list[CachedModel]:
    """INT8 copies of read-in-place (built-in, local) models, kept under ``.quantized/`` of the cache.

    (A cached model's copy lives in its own directory and is counted with it.)
    """
    root = settings.model_cache_dir / QUANTIZED_DIR
    out: list[CachedModel] = []
    if not root.is_dir():
        return out
    for directory in sorted(root.iterdir()):
        if not directory.is_dir() or directory.is_symlink():
            continue
        for record_path in sorted(directory.glob("*.int8.json")):
            record = read_record(record_path)
            if record is None:
                continue
            weights = record_path.with_name(record_path.name[: -len(".json")] + ".onnx")
            types = _read_in_place_types(record.model_id)
            out.append(
                CachedModel(
                    model_id=record.model_id,
                    path=directory,
                    size_bytes=_dir_size(directory),
                    task_type=types[0] if types else None,
                    model_type=types[1] if types else None,
                    complete=weights.is_file() and weights.stat().st_size == record.int8.size,
                    layout="int8-copy",
                )
            )
    return out


def _read_in_place_types(model_id: str) -> tuple[str, str] | None:
    try:
        ref = parse_model_id(model_id)
    except InvalidModelIdError:
        return None
    return read_model_type(ref.local_dir) if ref.local_dir is not None else None


def clear_int8_copies(model_id: str, settings: ModelSettings | None = None) -> bool:
    """Delete the INT8 copies this box made of a built-in or local model (never the model itself,
    which ``clear_cache`` refuses to touch); True when there were some."""
    settings = settings or get_model_settings()
    ref = parse_model_id(model_id)
    directory = quantized_dir(settings.model_cache_dir, ref.model_id)
    if not ref.read_only or not directory.is_dir():
        return False
    with model_lock(ref, settings):
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=settings.model_cache_dir))
        os.replace(directory, trash / "copies")
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("cleared the INT8 copies of %s (%s)", ref.model_id, directory)
    return True


def _package_models(settings: ModelSettings) -> list[CachedModel]:
    """Models in the inference-models layout (models-cache/<slug>/<package>/)."""
    store = PackageStore(settings)
    out = []
    for model_id, model_dir in store.model_ids():
        packages = store.cached_packages(model_id)
        first = packages[0] if packages else None
        types = package_types(first.architecture, first.task_type, first.variant) if first else (None, None)
        out.append(
            CachedModel(
                model_id=model_id,
                path=model_dir,
                size_bytes=sum(files_size(p) for p in packages),
                task_type=types[0],
                model_type=types[1],
                complete=bool(packages),
                layout="inference-models",
            )
        )
    return out
