"""The artifact cache: ``MODEL_CACHE_DIR/<project>/<version>/`` in Roboflow Inference's layout.

Files: ``weights.onnx``, ``environment.json``, ``class_names.txt``, optional
``keypoints_metadata.json`` and ``model_type.json`` — the same names and formats Roboflow Inference
writes, so either program can use a cache the other filled. Our own bookkeeping lives in a hidden
``.edge-agent.json`` (sizes and hashes recorded at download) that Roboflow ignores.

Unlike the reference: every write is atomic (temp file in the same directory, fsync, rename, fsync
of the directory); one lock file per model id guards download, repair and clear alike; nothing is
deleted on a load error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from edge_agent.models.common.errors import CacheLockTimeoutError, CacheWriteError
from edge_agent.models.common.settings import ModelSettings, get_model_settings
from edge_agent.models.identity.ids import ModelRef, lock_name

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.onnx"
ENVIRONMENT_FILE = "environment.json"
CLASS_NAMES_FILE = "class_names.txt"
MODEL_TYPE_FILE = "model_type.json"
KEYPOINTS_FILE = "keypoints_metadata.json"
MANIFEST_FILE = ".edge-agent.json"
# What a detection model needs; Roboflow Inference checks the same set before it downloads.
REQUIRED_FILES = (WEIGHTS_FILE, ENVIRONMENT_FILE, CLASS_NAMES_FILE)
LOCKS_DIR = ".locks"
TEMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path_in(directory: Path, name: str) -> Path:
    """A fresh temp file next to ``directory/name`` (same file system, so rename is atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    os.close(fd)
    return Path(path)


def commit_temp(temp: Path, target: Path) -> None:
    """fsync ``temp`` and rename it over ``target`` atomically."""
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(temp, 0o644)
    os.replace(temp, target)
    _fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    temp = temp_path_in(target.parent, target.name)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def atomic_write_json(target: Path, content: Any) -> None:
    atomic_write_bytes(target, json.dumps(content, indent=4).encode("utf-8"))


def atomic_write_lines(target: Path, lines: list[str]) -> None:
    atomic_write_bytes(target, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def remove_stale_temps(directory: Path, older_than_s: float = 3600.0) -> None:
    """Remove temp files a killed download left behind (only old ones: another may be writing)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > older_than_s:
                        entry.unlink()


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- locking -------------------------------------------------------------------------------------


@contextlib.contextmanager
def model_lock(ref: ModelRef, settings: ModelSettings | None = None) -> Iterator[None]:
    """Hold the one cross-process lock of ``ref``'s cache directory."""
    with named_lock(lock_name(ref), ref.model_id, settings):
        yield


@contextlib.contextmanager
def named_lock(name: str, what: str, settings: ModelSettings | None = None) -> Iterator[None]:
    """Hold the cross-process lock file ``MODEL_CACHE_DIR/.locks/<name>`` (``what`` names it in errors)."""
    settings = settings or get_model_settings()
    locks = settings.model_cache_dir / LOCKS_DIR
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheWriteError(
            f"cannot create {locks}: {exc.strerror or exc}; set MODEL_CACHE_DIR to a writable directory"
        ) from None
    path = locks / name
    lock = FileLock(str(path), timeout=settings.model_cache_lock_timeout)
    try:
        lock.acquire()
    except FileLockTimeout:
        raise CacheLockTimeoutError(
            f"gave up waiting {settings.model_cache_lock_timeout:.0f} s for the cache lock of "
            f"{what} ({path}); another process is downloading, quantizing or clearing it. Retry later or "
            f"raise MODEL_CACHE_LOCK_TIMEOUT"
        ) from None
    try:
        yield
    finally:
        lock.release()


# --- reading metadata ----------------------------------------------------------------------------


def read_json_file(path: Path) -> Any | None:
    """Parsed JSON, or None when the file is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def class_map_names(environment: dict[str, Any]) -> list[str] | None:
    """Class names from ``environment.json``'s ``CLASS_MAP`` (``{"0": "cat", ...}``, as an object
    or as a JSON string of one), in class-id order; None when it is missing or malformed."""
    class_map = environment.get("CLASS_MAP")
    if isinstance(class_map, str):
        try:
            class_map = json.loads(class_map)
        except ValueError:
            return None
    if not isinstance(class_map, dict):
        return None
    try:
        return [str(class_map[k]) for k in sorted(class_map, key=lambda k: int(k))]
    except (TypeError, ValueError):
        return None


def read_model_type(directory: Path) -> tuple[str, str] | None:
    """(task_type, model_type) from ``model_type.json``, or None when absent/malformed."""
    content = read_json_file(directory / MODEL_TYPE_FILE)
    if not isinstance(content, dict):
        return None
    task, kind = content.get("project_task_type"), content.get("model_type")
    if not isinstance(task, str) or not isinstance(kind, str) or not task or not kind:
        return None
    return task, kind


def write_model_type(directory: Path, model_id: str, task_type: str, model_type: str) -> None:
    atomic_write_json(
        directory / MODEL_TYPE_FILE,
        {"project_task_type": task_type, "model_type": model_type, "model_id": model_id},
    )


def read_manifest(directory: Path) -> dict[str, Any] | None:
    content = read_json_file(directory / MANIFEST_FILE)
    return content if isinstance(content, dict) else None


@dataclass(frozen=True)
class CacheState:
    """What is wrong with a cache directory, if anything."""

    missing: tuple[str, ...]
    corrupt: tuple[str, ...]  # file: reason

    @property
    def complete(self) -> bool:
        return not self.missing and not self.corrupt


def inspect_cache_dir(directory: Path, weights_file: str = WEIGHTS_FILE) -> CacheState:
    """Cheap checks every load runs: files present, sizes as recorded, JSON parses, ONNX magic.

    ``weights_file`` is the family's weights name (``yolov5s_weights.onnx`` for YOLOv5, as
    Roboflow Inference names it in its cache).
    """
    required = (weights_file, ENVIRONMENT_FILE, CLASS_NAMES_FILE)
    missing = tuple(name for name in required if not (directory / name).is_file())
    corrupt: list[str] = []
    weights = directory / weights_file
    if weights_file not in missing:
        try:
            size = weights.stat().st_size
        except OSError:  # removed meanwhile (a concurrent clear)
            return CacheState(missing=(*missing, weights_file), corrupt=())
        recorded = ((read_manifest(directory) or {}).get("files") or {}).get(weights_file) or {}
        if size == 0:
            corrupt.append(f"{weights_file}: empty file")
        elif isinstance(recorded.get("size"), int) and recorded["size"] != size:
            corrupt.append(f"{weights_file}: {size} bytes on disk, {recorded['size']} recorded at download")
        else:
            with open(weights, "rb") as handle:
                head = handle.read(1)
            # An ONNX ModelProto serialises ir_version (field 1, varint) first: tag byte 0x08.
            if head != b"\x08":
                corrupt.append(f"{weights_file}: not an ONNX protobuf (first byte {head!r})")
    if ENVIRONMENT_FILE not in missing and not isinstance(read_json_file(directory / ENVIRONMENT_FILE), dict):
        corrupt.append(f"{ENVIRONMENT_FILE}: not a JSON object")
    return CacheState(missing=missing, corrupt=tuple(corrupt))


def file_fingerprint(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns): tells whether another process replaced a file since we looked."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# --- listing and clearing ------------------------------------------------------------------------
