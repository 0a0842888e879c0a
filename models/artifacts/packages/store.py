"""Read and write the ``inference-models`` cache: packages, shared blobs, their two manifests.

Writing a package (:meth:`PackageStore.materialize`) follows Roboflow's sequence so its stack
loads what we wrote, online or offline: every file is downloaded to a temp file in
``shared-blobs/``, its md5 checked against the registry's (a mismatch refuses the file and keeps
nothing of it), renamed to ``shared-blobs/<md5>``; then each ``<fileHandle>`` becomes an absolute
symlink to its blob (made under a temp name and renamed over), then ``model_config.json`` and the
``offline-weights-registry`` record are written atomically. The caller holds the model's one
lock; Roboflow's own materialization and blob locks are taken as well, so the two programs never
interleave on one package.

Reading (:meth:`PackageStore.cached_packages`) accepts what Roboflow leaves: symlinks into
shared-blobs, or plain files; ``model_config.json`` or only a registry record. Loading checks every
hashed file's md5; offline nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.api import ProgressCallback, RoboflowApi
from edge_agent.models.artifacts.packages.layout import (
    MODEL_CONFIG_FILE,
    PackageLayout,
    check_file_handle,
    check_package_id,
)
from edge_agent.models.artifacts.packages.manifest import ModelMetadata, ModelPackage, PackageFile, TrtDetails
from edge_agent.models.common.errors import CacheLockTimeoutError, ChecksumMismatchError, ModelDownloadError
from edge_agent.models.common.settings import ModelSettings

logger = logging.getLogger(__name__)

OFFLINE_MANIFEST_VERSION = 4
REGISTRY_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedPackage:
    """A package found in the cache, with what its manifests say about the model."""

    model_id: str
    package: ModelPackage
    directory: Path
    architecture: str | None
    task_type: str | None
    variant: str | None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _atomic_symlink(target: Path, link: Path) -> None:
    temp = link.with_name(f".{link.name}.{uuid.uuid4().hex}{cache.TEMP_SUFFIX}")
    os.symlink(str(target), temp)
    try:
        os.replace(temp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _dumps(content: Any) -> bytes:
    return json.dumps(content, indent=2, sort_keys=True).encode("utf-8")


def model_config(metadata_model_id: str, architecture: str, task_type: str | None, package: ModelPackage) -> dict:
    """``model_config.json`` as Roboflow's loader writes it (offline manifest v4)."""
    artifacts = sorted(
        (
            {
                "file_handle": f.handle,
                "md5_hash": f.md5,
                "unhashed": f.md5 is None,
                "sha256_hash": None,
                "source_hash": None,
                "storage": "shared_blob" if f.md5 else "package_file",
            }
            for f in package.files
        ),
        key=lambda a: str(a["file_handle"]).casefold(),
    )
    return {
        "offline_manifest_version": OFFLINE_MANIFEST_VERSION,
        "model_architecture": architecture,
        "task_type": task_type,
        "backend_type": package.backend,
        "model_features": package.features,
        "trusted_source": package.trusted,
        "model_dependencies": [],
        "recommended_parameters": package.recommended_parameters,
        "quantization": package.quantization,
        "dynamic_batch_size_supported": package.dynamic_batch,
        "static_batch_size": package.static_batch,
        "canonical_model_id": metadata_model_id,
        "package_artifacts": artifacts,
        "dependency_package_paths": [],
        "model_id": metadata_model_id,
    }


def _registry_package(package: ModelPackage) -> dict[str, Any]:
    trt = package.trt
    return {
        "package_id": package.package_id,
        "backend": package.backend,
        "quantization": package.quantization,
        "dynamic_batch_size_supported": package.dynamic_batch,
        "static_batch_size": package.static_batch,
        "trusted_source": package.trusted,
        "model_features": package.features,
        "recommended_parameters": package.recommended_parameters,
        "cache_model_id": None,
        "environment_requirements": None,
        "onnx_package_details": {"opset": package.opset, "incompatible_providers": list(package.incompatible_providers)}
        if package.backend == "onnx"
        else None,
        "trt_package_details": None if trt is None else {k: getattr(trt, k) for k in TrtDetails.__dataclass_fields__},
        "torch_script_package_details": {
            "supported_device_types": list(package.supported_device_types),
            "torch_version": package.torch_version,
            "torch_vision_version": package.torchvision_version,
        }
        if package.backend == "torch-script"
        else None,
        "artifacts": [{"file_handle": f.handle, "md5_hash": f.md5} for f in package.files],
    }


def _package_from_record(entry: dict[str, Any]) -> ModelPackage | None:
    try:
        package_id = check_package_id(entry.get("package_id"))
        files = tuple(
            PackageFile(check_file_handle(a["file_handle"]), None, a.get("md5_hash") or None)
            for a in entry.get("artifacts") or []
        )
        onnx = entry.get("onnx_package_details") or {}
        torch_script = entry.get("torch_script_package_details") or {}
        trt = entry.get("trt_package_details")
        return ModelPackage(
            package_id=package_id,
            backend=str(entry["backend"]),
            quantization=str(entry.get("quantization") or "unknown"),
            files=files,
            trusted=bool(entry.get("trusted_source", False)),
            dynamic_batch=bool(entry.get("dynamic_batch_size_supported", False)),
            static_batch=entry.get("static_batch_size"),
            opset=onnx.get("opset"),
            incompatible_providers=tuple(onnx.get("incompatible_providers") or ()),
            supported_device_types=tuple(torch_script.get("supported_device_types") or ("cpu", "cuda")),
            torch_version=torch_script.get("torch_version"),
            torchvision_version=torch_script.get("torch_vision_version"),
            trt=TrtDetails(**trt) if isinstance(trt, dict) else None,
            features=entry.get("model_features"),
            recommended_parameters=entry.get("recommended_parameters"),
        )
    except (KeyError, TypeError, ValueError, ModelDownloadError):
        return None


def _package_from_config(package_id: str, config: dict[str, Any], detail: ModelPackage | None) -> ModelPackage | None:
    try:
        files = tuple(
            PackageFile(check_file_handle(a["file_handle"]), None, None if a.get("unhashed") else a.get("md5_hash"))
            for a in config.get("package_artifacts") or []
        )
        return ModelPackage(
            package_id=package_id,
            backend=str(config["backend_type"]),
            quantization=str(config.get("quantization") or "unknown"),
            files=files,
            trusted=bool(config.get("trusted_source", False)),
            dynamic_batch=bool(config.get("dynamic_batch_size_supported", False)),
            static_batch=config.get("static_batch_size"),
            opset=detail.opset if detail else None,
            incompatible_providers=detail.incompatible_providers if detail else (),
            # model_config.json does not say which devices a TorchScript export runs on
            supported_device_types=detail.supported_device_types if detail else ("cpu", "cuda"),
            torch_version=detail.torch_version if detail else None,
            torchvision_version=detail.torchvision_version if detail else None,
            trt=detail.trt if detail else None,
            features=config.get("model_features"),
            recommended_parameters=config.get("recommended_parameters"),
        )
    except (KeyError, TypeError, ValueError, ModelDownloadError):
        return None


class PackageStore:
    def __init__(self, settings: ModelSettings, api: RoboflowApi | None = None) -> None:
        self.settings = settings
        self.layout = PackageLayout(settings.model_cache_dir)
        self._api = api

    @property
    def api(self) -> RoboflowApi:
        if self._api is None:
            self._api = RoboflowApi(self.settings)
        return self._api

    # -- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self, path: Path, what: str) -> Any:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=self.settings.model_cache_lock_timeout)
        try:
            lock.acquire()
        except FileLockTimeout:
            raise CacheLockTimeoutError(
                f"gave up waiting {self.settings.model_cache_lock_timeout:.0f} s for {path} ({what}); another "
                f"process (edge-agent or Roboflow Inference) holds it. Retry later or raise MODEL_CACHE_LOCK_TIMEOUT"
            ) from None
        try:
            yield
        finally:
            lock.release()

    # -- reading -------------------------------------------------------------------------------

    def registry_record(self, model_id: str) -> dict[str, Any] | None:
        content = cache.read_json_file(self.layout.registry_record(model_id))
        if isinstance(content, dict) and content.get("canonical_model_id") in (model_id, None):
            return content
        return None

    def cached_packages(self, model_id: str) -> list[CachedPackage]:
        """Packages of ``model_id`` whose every file is present (md5 is checked at load, not here)."""
        model_dir = self.layout.model_dir(model_id)
        if not model_dir.is_dir():
            return []
        record = self.registry_record(model_id) or {}
        raw_model_info = record.get("model")
        model_info = raw_model_info if isinstance(raw_model_info, dict) else {}
        from_record = {}
        for entry in record.get("packages") or []:
            if isinstance(entry, dict):
                parsed = _package_from_record(entry)
                if parsed is not None:
                    from_record[parsed.package_id] = parsed
        found = []
        for package_dir in sorted(model_dir.iterdir()):
            if package_dir.name.startswith(".") or package_dir.is_symlink() or not package_dir.is_dir():
                continue
            try:
                package_id = check_package_id(package_dir.name)
            except ModelDownloadError:
                continue
            config = cache.read_json_file(package_dir / MODEL_CONFIG_FILE)
            package = None
            architecture = model_info.get("model_architecture")
            task_type = model_info.get("task_type")
            if isinstance(config, dict) and config.get("model_id", model_id) == model_id:
                package = _package_from_config(package_id, config, from_record.get(package_id))
                architecture = config.get("model_architecture") or architecture
                task_type = config.get("task_type") or task_type
            if package is None:
                package = from_record.get(package_id)
            if package is None or not package.files:
                continue
            if not all((package_dir / f.handle).is_file() for f in package.files):
                continue
            found.append(
                CachedPackage(
                    model_id=model_id,
                    package=package,
                    directory=package_dir,
                    architecture=architecture if isinstance(architecture, str) else None,
                    task_type=task_type if isinstance(task_type, str) else None,
                    variant=model_info.get("model_variant")
                    if isinstance(model_info.get("model_variant"), str)
                    else None,
                )
            )
        return found

    def problems(self, cached: CachedPackage) -> list[str]:
        """What is wrong with a cached package's files: missing, outside the cache, empty, md5."""
        root = Path(os.path.realpath(self.layout.root))
        out = []
        for f in cached.package.files:
            path = cached.directory / f.handle
            try:
                real = Path(os.path.realpath(path))
                size = real.stat().st_size
            except OSError:
                out.append(f"{f.handle}: missing")
                continue
            if not real.is_relative_to(root):
                out.append(f"{f.handle}: points outside the cache ({real})")
            elif size == 0:
                out.append(f"{f.handle}: empty file")
            elif f.md5 is not None and cache.md5_of(real) != f.md5:
                out.append(f"{f.handle}: md5 differs from the recorded {f.md5}")
        return out

    # -- writing -------------------------------------------------------------------------------

    def materialize(
        self,
        metadata: ModelMetadata,
        package: ModelPackage,
        progress: ProgressCallback | None = None,
        status: Callable[[str], None] | None = None,
    ) -> Path:
        """Download ``package`` into the cache (the caller holds the model's lock); its directory."""
        model_id = metadata.model_id
        for f in package.files:
            if f.md5 is None:
                raise ModelDownloadError(
                    f"file {f.handle} of package {package.package_id} of {model_id} comes without an md5Hash; "
                    f"edge-agent refuses files it cannot verify"
                )
            if f.url is None:
                raise ModelDownloadError(f"file {f.handle} of package {package.package_id} has no downloadUrl")
        model_dir = self.layout.model_dir(model_id)
        package_dir = self.layout.package_dir(model_id, package.package_id)
        created: list[Path] = []
        new_dir = not package_dir.exists()
        try:
            with self._file_lock(self.layout.materialization_lock(model_id, package.package_id), "package lock"):
                if status:
                    status(f"downloading {model_id} (package {package.package_id})")
                for f in package.files:
                    assert f.md5 is not None and f.url is not None
                    if self._fetch_blob(f.md5, f.url, f"{f.handle} of {model_id}", progress):
                        created.append(self.layout.blob(f.md5))
                package_dir.mkdir(parents=True, exist_ok=True)
                for f in package.files:
                    self._link(package_dir, f)
                cached = CachedPackage(
                    model_id, package, package_dir, metadata.architecture, metadata.task_type, metadata.variant
                )
                bad = self.problems(cached)
                if bad:
                    raise ModelDownloadError(
                        f"package {package.package_id} of {model_id} is damaged after writing: {bad}"
                    )
                cache.atomic_write_bytes(
                    package_dir / MODEL_CONFIG_FILE,
                    _dumps(model_config(model_id, metadata.architecture, metadata.task_type, package)),
                )
            self._record(metadata, package)
        except BaseException:
            self._forget_blobs(created)
            if new_dir and package_dir.is_dir():
                shutil.rmtree(package_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only when empty
            raise
        logger.info("cached %s package %s in %s", model_id, package.package_id, package_dir)
        return package_dir

    def _fetch_blob(self, md5: str, url: str, what: str, progress: ProgressCallback | None) -> bool:
        """Make ``shared-blobs/<md5>`` hold the file; True when it was written now."""
        blob = self.layout.blob(md5)
        if blob.is_file() and cache.md5_of(blob) == md5:
            return False
        self.layout.blobs.mkdir(parents=True, exist_ok=True)
        with self._file_lock(self.layout.blob_lock(md5), "blob lock"):
            if blob.is_file() and cache.md5_of(blob) == md5:
                return False  # another process wrote it while we waited
            downloaded = self.api.download(url, self.layout.blobs, md5, what, progress)
            try:
                if downloaded.md5 != md5:
                    raise ChecksumMismatchError(what, md5, downloaded.md5)
                cache.commit_temp(downloaded.path, blob)
            finally:
                with contextlib.suppress(OSError):
                    downloaded.path.unlink()
        return True

    def _link(self, package_dir: Path, f: PackageFile) -> None:
        assert f.md5 is not None
        link = self.layout.file_path(package_dir, f.handle)
        link.parent.mkdir(parents=True, exist_ok=True)
        blob = self.layout.blob(f.md5).absolute()
        if link.is_symlink() and Path(os.path.realpath(link)) == Path(os.path.realpath(blob)):
            return
        if link.is_file() and not link.is_symlink() and cache.md5_of(link) == f.md5:
            return  # Roboflow leaves a correct regular file in place; so do we
        _atomic_symlink(blob, link)

    def _record(self, metadata: ModelMetadata, package: ModelPackage) -> None:
        """Merge the package into ``offline-weights-registry/<slug>.json`` (Roboflow's OFFLINE_MODE reads it)."""
        path = self.layout.registry_record(metadata.model_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._file_lock(path.with_name(f".{path.name}.lock"), "registry lock"):
            record = cache.read_json_file(path)
            if not isinstance(record, dict) or record.get("canonical_model_id") != metadata.model_id:
                record = {
                    "canonical_model_id": metadata.model_id,
                    "format_version": REGISTRY_FORMAT_VERSION,
                    # Roboflow's reader knows the sources it writes; "warmup" is the one a fetch-ahead writes.
                    "source": "warmup",
                    "requested_aliases": [],
                    "packages": [],
                    "proven": {},
                }
            record["recorded_at"] = _now_iso()
            record["model"] = {
                "model_architecture": metadata.architecture,
                "model_variant": metadata.variant,
                "task_type": metadata.task_type,
                "model_dependencies": None,
                "recommended_parameters": metadata.recommended_parameters,
            }
            others = [p for p in record.get("packages") or [] if isinstance(p, dict)]
            record["packages"] = [p for p in others if p.get("package_id") != package.package_id]
            record["packages"].append(_registry_package(package))
            cache.atomic_write_bytes(path, _dumps(record))

    # -- clearing ------------------------------------------------------------------------------

    def _referenced_md5s(self, skip: Path | None = None) -> set[str]:
        """md5s of every blob some package (other than under ``skip``) links to or lists."""
        found: set[str] = set()
        root = self.layout.models_cache
        if not root.is_dir():
            return found
        for dirpath, _dirs, files in os.walk(root):
            if skip is not None and Path(dirpath).is_relative_to(skip):
                continue
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink():
                    found.add(Path(os.readlink(path)).name)
                elif name == MODEL_CONFIG_FILE:
                    config = cache.read_json_file(path) or {}
                    for artifact in config.get("package_artifacts") or [] if isinstance(config, dict) else []:
                        if isinstance(artifact, dict) and isinstance(artifact.get("md5_hash"), str):
                            found.add(artifact["md5_hash"])
        return found

    def _forget_blobs(self, blobs: list[Path]) -> None:
        if not blobs:
            return
        keep = self._referenced_md5s()
        for blob in blobs:
            if blob.name not in keep:
                with contextlib.suppress(OSError):
                    blob.unlink()

    def clear(self, model_id: str) -> bool:
        """Remove the model's packages, its registry record and the blobs nothing else uses."""
        model_dir = self.layout.model_dir(model_id)
        record = self.layout.registry_record(model_id)
        removed = False
        md5s: set[str] = set()
        if model_dir.is_dir():
            for cached in self.cached_packages(model_id):
                md5s.update(f.md5 for f in cached.package.files if f.md5)
            for path in model_dir.rglob("*"):
                if path.is_symlink():
                    md5s.add(Path(os.readlink(path)).name)
            trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.layout.root))
            os.replace(model_dir, trash / "model")
            shutil.rmtree(trash, ignore_errors=True)
            removed = True
        if record.is_file():
            record.unlink()
            removed = True
        if md5s:
            keep = self._referenced_md5s()
            for md5 in md5s - keep:
                with contextlib.suppress(OSError, ModelDownloadError):
                    self.layout.blob(md5).unlink()
        return removed

    # -- listing -------------------------------------------------------------------------------

    def model_ids(self) -> list[tuple[str, Path]]:
        """(model id, model directory) of every model in ``models-cache`` whose id is recorded."""
        out: list[tuple[str, Path]] = []
        root = self.layout.models_cache
        if not root.is_dir():
            return out
        by_slug: dict[str, str] = {}
        registry = self.layout.registry
        if registry.is_dir():
            for path in registry.glob("*.json"):
                content = cache.read_json_file(path)
                if isinstance(content, dict) and isinstance(content.get("canonical_model_id"), str):
                    by_slug[path.stem] = content["canonical_model_id"]
        for model_dir in sorted(root.iterdir()):
            if not model_dir.is_dir() or model_dir.is_symlink():
                continue
            model_id = by_slug.get(model_dir.name)
            if model_id is None:
                for config_path in model_dir.glob(f"*/{MODEL_CONFIG_FILE}"):
                    config = cache.read_json_file(config_path)
                    if isinstance(config, dict) and isinstance(config.get("model_id"), str):
                        model_id = config["model_id"]
                        break
            if model_id is not None and self.layout.model_dir(model_id).name == model_dir.name:
                out.append((model_id, model_dir))
        return out


def files_size(cached: CachedPackage) -> int:
    total = 0
    for f in cached.package.files:
        with contextlib.suppress(OSError):
            total += (cached.directory / f.handle).stat().st_size
    return total
