"""Paths of the ``inference-models`` cache layout, and the checks that keep them inside the cache.

    <root>/models-cache/<slug(model_id)>/<packageId>/<fileHandle> -> <root>/shared-blobs/<md5>
    <root>/models-cache/<slug>/<packageId>/model_config.json
    <root>/offline-weights-registry/<slug>.json

``<root>`` is MODEL_CACHE_DIR (Roboflow's server sets INFERENCE_HOME to MODEL_CACHE_DIR, so both
programs share one tree). Package ids and file handles come from a server: they are checked
against Roboflow's own rules before any path is built from them, so no answer can name a file
outside the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from edge_agent.models.common.errors import InvalidModelIdError, ModelDownloadError

MODELS_CACHE = "models-cache"
SHARED_BLOBS = "shared-blobs"
OFFLINE_REGISTRY = "offline-weights-registry"
AUTO_RESOLUTION = "auto-resolution-cache"
MODEL_CONFIG_FILE = "model_config.json"
# First path segments Roboflow reserves in MODEL_CACHE_DIR: no model id may use them as its project.
RESERVED_SEGMENTS = frozenset(
    {
        "_file_locks",
        AUTO_RESOLUTION,
        "hf_home",
        "huggingface",
        "lora-bases",
        MODELS_CACHE,
        "owl-v2-serialized-data",
        SHARED_BLOBS,
        "usage.db",
        "workflow",
        OFFLINE_REGISTRY,
    }
)

_PACKAGE_ID_RE = re.compile(r"[A-Za-z0-9]{1,255}")
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_MD5_RE = re.compile(r"[0-9a-f]{32}")
_FORBIDDEN_FIRST = frozenset({MODEL_CONFIG_FILE, "model_dependencies", "dependencies"})


def slug(model_id: str) -> str:
    """Roboflow's directory name for a model id: ``v2-<readable prefix>-<blake2s-128 hex>``."""
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", model_id)
    prefix = re.sub(r"[_-]{2,}", "-", prefix)[:48] or "special-char-only-model-id"
    return f"v2-{prefix}-{hashlib.blake2s(model_id.encode('utf-8'), digest_size=16).hexdigest()}"


def legacy_slug(model_id: str) -> str:
    """The legacy cache's directory for an id it cannot use as a path (upper case, say): ``~<prefix>-<hash>``."""
    return "~" + slug(model_id)[len("v2-") :]


def check_package_id(package_id: object) -> str:
    if not isinstance(package_id, str) or not _PACKAGE_ID_RE.fullmatch(package_id):
        raise ModelDownloadError(f"the registry sent an invalid packageId {package_id!r} (letters and digits only)")
    if package_id.upper() in _WINDOWS_DEVICES:
        raise ModelDownloadError(f"the registry sent a reserved packageId {package_id!r}")
    return package_id


def check_file_handle(handle: object) -> str:
    """A package-relative path, segment by segment, as Roboflow checks it."""
    if not isinstance(handle, str) or not handle or len(handle) > 1024:
        raise ModelDownloadError(f"the registry sent an invalid fileHandle {handle!r}")
    segments = handle.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT_RE.fullmatch(segment):
            raise ModelDownloadError(
                f"the registry sent fileHandle {handle!r}; each '/'-separated part must be letters, digits, "
                f"'.', '_' or '-' (no empty, '.' or '..' parts)"
            )
        if segment.startswith(".") and segment.endswith(".lock"):
            raise ModelDownloadError(f"the registry sent fileHandle {handle!r}, which names a lock file")
    if segments[0] in _FORBIDDEN_FIRST:
        raise ModelDownloadError(f"the registry sent fileHandle {handle!r}, a name the cache reserves")
    return handle


def check_md5(value: object, what: str) -> str:
    if not isinstance(value, str) or not _MD5_RE.fullmatch(value):
        raise ModelDownloadError(f"{what}: md5Hash {value!r} is not 32 lower-case hex digits")
    return value


def _inside(root: Path, path: Path) -> Path:
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and not real.is_relative_to(real_root):
        raise InvalidModelIdError(f"{path} resolves to {real}, outside {real_root} (a symlink in the cache?)")
    return path


class PackageLayout:
    """Every path of the layout under one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def models_cache(self) -> Path:
        return self.root / MODELS_CACHE

    @property
    def blobs(self) -> Path:
        return self.root / SHARED_BLOBS

    @property
    def registry(self) -> Path:
        return self.root / OFFLINE_REGISTRY

    def model_dir(self, model_id: str) -> Path:
        return _inside(self.root, self.models_cache / slug(model_id))

    def package_dir(self, model_id: str, package_id: str) -> Path:
        return _inside(self.root, self.model_dir(model_id) / check_package_id(package_id))

    def file_path(self, package_dir: Path, handle: str) -> Path:
        """Where a file handle lives in a package directory (the link itself, not its target)."""
        path = package_dir / check_file_handle(handle)
        _inside(package_dir, path.parent)
        return path

    def blob(self, md5: str) -> Path:
        return self.blobs / check_md5(md5, "blob")

    def registry_record(self, model_id: str) -> Path:
        return self.registry / f"{slug(model_id)}.json"

    def materialization_lock(self, model_id: str, package_id: str) -> Path:
        """Roboflow's own lock for writing a package; held too, so the two programs never interleave."""
        return self.model_dir(model_id) / f".{check_package_id(package_id)}.materialization.lock"

    def blob_lock(self, md5: str) -> Path:
        return self.blobs / f".{check_md5(md5, 'blob')}.lock"
