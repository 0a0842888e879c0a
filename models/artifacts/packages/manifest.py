"""The package registry's answer, parsed into typed packages (``/models/v1/external/weights``).

Unknown keys are ignored and a package whose manifest is unknown or malformed is dropped with a
warning (never failing the load), as Roboflow's client does; ``oak``/``tfjs``/``mediapipe``
manifests are dropped silently. Package ids and file handles are checked here, before any path is
built from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edge_agent.models.artifacts.packages.layout import check_file_handle, check_md5, check_package_id
from edge_agent.models.common.errors import ModelDownloadError

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("fp32", "fp16", "bf16", "int8", "unknown")
# manifest "type" -> backend name (Roboflow's internal spelling, used in model_config.json)
MANIFEST_BACKENDS: dict[str, str] = {
    "onnx-model-package-v1": "onnx",
    "trt-model-package-v1": "trt",
    "torch-model-package-v1": "torch",
    "torch-script-model-package-v1": "torch-script",
    "hf-model-package-v1": "hugging-face",
    "ultralytics-model-package-v1": "ultralytics",
    "coreml-model-package-v1": "coreml",
}
_SILENTLY_DROPPED = ("oak", "tfjs", "mediapipe")


@dataclass(frozen=True)
class PackageFile:
    handle: str
    url: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class TrtDetails:
    cuda_device_type: str
    cuda_device_cc: str
    cuda_version: str
    trt_version: str
    machine_type: str  # gpu-server | jetson
    same_cc_compatible: bool = False
    trt_forward_compatible: bool = False
    lean_runtime_excluded: bool = False
    l4t_version: str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None


@dataclass(frozen=True)
class ModelPackage:
    """One package as the registry (or a cached record) describes it."""

    package_id: str
    backend: str
    quantization: str
    files: tuple[PackageFile, ...]
    trusted: bool = False
    dynamic_batch: bool = False
    static_batch: int | None = None
    opset: int | None = None
    incompatible_providers: tuple[str, ...] = ()
    supported_device_types: tuple[str, ...] = ()
    torch_version: str | None = None
    torchvision_version: str | None = None
    trt: TrtDetails | None = None
    features: dict[str, Any] | None = None
    recommended_parameters: dict[str, Any] | None = None

    def file(self, handle: str) -> PackageFile | None:
        return next((f for f in self.files if f.handle == handle), None)

    def describe(self) -> str:
        batch = "dynamic batch" if self.dynamic_batch else f"batch {self.static_batch}"
        return f"{self.package_id} ({self.backend}, {self.quantization}, {batch})"


@dataclass(frozen=True)
class ModelMetadata:
    model_id: str
    architecture: str
    task_type: str | None
    variant: str | None
    packages: tuple[ModelPackage, ...]
    dependencies: tuple[dict[str, Any], ...] = ()
    recommended_parameters: dict[str, Any] | None = None
    dropped: tuple[tuple[str, str], ...] = field(default=())  # (package id, why) of unusable packages


def _bool(manifest: dict[str, Any], key: str, default: bool = False) -> bool:
    value = manifest.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _positive(manifest: dict[str, Any], key: str) -> int | None:
    value = manifest.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number >= 1")
    return value


def _text(manifest: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = manifest.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is required")
    return value


def _files(raw: Any, package_id: str) -> tuple[PackageFile, ...]:
    if not isinstance(raw, list):
        raise ValueError("packageFiles must be a list")
    files = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ValueError("packageFiles entries must be objects")
        handle = check_file_handle(entry.get("fileHandle"))
        url = entry.get("downloadUrl")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise ValueError(f"downloadUrl of {handle} is not an http(s) URL")
        md5 = entry.get("md5Hash")
        if md5 is not None:
            md5 = check_md5(md5, f"file {handle} of package {package_id}")
        files.append(PackageFile(handle, url, md5))
    handles = [f.handle for f in files]
    if len(set(handles)) != len(handles):
        raise ValueError("packageFiles lists a fileHandle twice")
    return tuple(files)


def parse_package(raw: dict[str, Any]) -> ModelPackage | None:
    """One ``modelPackages`` entry, or None (logged) when it cannot be used."""
    if raw.get("type") != "external-model-package-v1":
        logger.warning("skipping a model package of type %r (not external-model-package-v1)", raw.get("type"))
        return None
    manifest = raw.get("packageManifest")
    package_id = raw.get("packageId")
    kind = manifest.get("type") if isinstance(manifest, dict) else None
    if isinstance(kind, str) and kind.startswith(_SILENTLY_DROPPED):
        return None
    try:
        package_id = check_package_id(package_id)
        if not isinstance(manifest, dict):
            raise ValueError("packageManifest must be an object")
        backend = MANIFEST_BACKENDS.get(str(kind))
        if backend is None:
            raise ValueError(f"unknown manifest type {kind!r}")
        quantization = manifest.get("quantization", "unknown" if backend == "ultralytics" else None)
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
        dynamic = _bool(manifest, "dynamicBatchSize")
        static = _positive(manifest, "staticBatchSize")
        if backend in ("onnx", "trt", "torch", "torch-script", "coreml"):
            if not dynamic and static is None:
                raise ValueError("dynamicBatchSize false needs staticBatchSize > 0")
            if dynamic and static is not None:
                raise ValueError("dynamicBatchSize true forbids staticBatchSize")
        opset = _positive(manifest, "opset") if backend == "onnx" else None
        if backend == "onnx" and opset is None:
            raise ValueError("opset is required")
        incompatible = manifest.get("incompatibleProviders") or []
        if not isinstance(incompatible, list) or not all(isinstance(p, str) for p in incompatible):
            raise ValueError("incompatibleProviders must be a list of provider names")
        devices: tuple[str, ...] = ()
        torch_version = torchvision_version = None
        if backend == "torch-script":
            raw_devices = manifest.get("supportedDeviceTypes")
            if not isinstance(raw_devices, list) or not raw_devices or not all(isinstance(d, str) for d in raw_devices):
                raise ValueError("supportedDeviceTypes must be a non-empty list")
            devices = tuple(raw_devices)
            torch_version = _text(manifest, "torchVersion")
            torchvision_version = _text(manifest, "torchVisionVersion", required=False)
        trt = _trt(manifest, dynamic) if backend == "trt" else None
        trusted = raw.get("trustedSource", False) is True
        features = raw.get("modelFeatures") if isinstance(raw.get("modelFeatures"), dict) else None
        recommended = raw.get("recommendedParameters") if isinstance(raw.get("recommendedParameters"), dict) else None
        return ModelPackage(
            package_id=package_id,
            backend=backend,
            quantization=str(quantization),
            files=_files(raw.get("packageFiles"), package_id),
            trusted=trusted,
            dynamic_batch=dynamic,
            static_batch=static,
            opset=opset,
            incompatible_providers=tuple(incompatible),
            supported_device_types=devices,
            torch_version=torch_version,
            torchvision_version=torchvision_version,
            trt=trt,
            features=features or None,
            recommended_parameters=recommended,
        )
    except (ValueError, ModelDownloadError) as exc:
        logger.warning("skipping model package %r: %s", package_id, str(exc).removeprefix("the registry sent "))
        return None


def _trt(manifest: dict[str, Any], dynamic: bool) -> TrtDetails:
    machine = _text(manifest, "machineType")
    if machine not in ("gpu-server", "jetson"):
        raise ValueError(f"machineType {machine!r} is not gpu-server or jetson")
    specs = manifest.get("machineSpecs")
    if not isinstance(specs, dict):
        raise ValueError("machineSpecs is required")
    bounds = [_positive(manifest, k) for k in ("minBatchSize", "optBatchSize", "maxBatchSize")]
    if dynamic and any(b is None for b in bounds):
        raise ValueError("a dynamic TensorRT package needs minBatchSize, optBatchSize and maxBatchSize")
    return TrtDetails(
        cuda_device_type=str(_text(manifest, "cudaDeviceType")),
        cuda_device_cc=str(_text(manifest, "cudaDeviceCC")),
        cuda_version=str(_text(manifest, "cudaVersion")),
        trt_version=str(_text(manifest, "trtVersion")),
        machine_type=str(machine),
        same_cc_compatible=_bool(manifest, "sameCCCompatible"),
        trt_forward_compatible=_bool(manifest, "trtForwardCompatible"),
        lean_runtime_excluded=_bool(manifest, "trtLeanRuntimeExcluded"),
        l4t_version=specs.get("l4tVersion") if isinstance(specs.get("l4tVersion"), str) else None,
        min_batch=bounds[0],
        opt_batch=bounds[1],
        max_batch=bounds[2],
    )


def parse_page(answer: Any, model_id: str) -> tuple[dict[str, Any], list[ModelPackage], str | None]:
    """(modelMetadata, usable packages, nextPage) of one page of the weights answer."""
    metadata = answer.get("modelMetadata") if isinstance(answer, dict) else None
    if not isinstance(metadata, dict) or metadata.get("type") != "external-model-metadata-v1":
        raise ModelDownloadError(
            f"the package registry's answer for {model_id} has no external-model-metadata-v1 modelMetadata; "
            f"is ROBOFLOW_API_HOST the Roboflow API?"
        )
    if not isinstance(metadata.get("modelArchitecture"), str) or not metadata["modelArchitecture"]:
        raise ModelDownloadError(f"the package registry's answer for {model_id} has no modelArchitecture")
    raw_packages = metadata.get("modelPackages") or []
    if not isinstance(raw_packages, list):
        raise ModelDownloadError(f"the package registry's answer for {model_id}: modelPackages is not a list")
    packages = [p for p in (parse_package(r) for r in raw_packages if isinstance(r, dict)) if p is not None]
    next_page = metadata.get("nextPage")
    return metadata, packages, next_page if isinstance(next_page, str) and next_page else None


def metadata_from_pages(model_id: str, pages: list[tuple[dict[str, Any], list[ModelPackage]]]) -> ModelMetadata:
    """Every page's packages, the other fields from the last page (as Roboflow merges them)."""
    last = pages[-1][0]
    packages = [p for _, page in pages for p in page]
    raw_model_id = last.get("modelId")
    canonical = raw_model_id if isinstance(raw_model_id, str) and raw_model_id else model_id
    raw_dependencies = last.get("modelDependencies")
    dependencies = raw_dependencies if isinstance(raw_dependencies, list) else []
    return ModelMetadata(
        model_id=canonical,
        architecture=str(last["modelArchitecture"]),
        task_type=last.get("taskType") if isinstance(last.get("taskType"), str) else None,
        variant=last.get("modelVariant") if isinstance(last.get("modelVariant"), str) else None,
        packages=tuple(packages),
        dependencies=tuple(d for d in dependencies if isinstance(d, dict)),
        recommended_parameters=last.get("recommendedParameters")
        if isinstance(last.get("recommendedParameters"), dict)
        else None,
    )
