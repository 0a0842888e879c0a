"""Which package of a model this box runs: Roboflow's filters and ranking, as pure functions.

Filters, in order (each rejection keeps its reason for the log and the error): the requested
package id; a backend edge-agent has an engine for and whose runtime is installed; trusted
source; allowed backends; batch size; quantization (CPU: fp32, bf16, unknown; GPU: fp32, fp16,
unknown; int8 only when asked for); then the runtime match of the backend (ONNX opset and the
first execution provider, TorchScript device type and torch version, TensorRT version, compute
capability or GPU name, L4T on Jetson). The survivors are ranked as Roboflow ranks them (backend
TensorRT > ONNX > torch > TorchScript, then quantization, trust, dynamic batch, smaller static
batch, higher opset, ...), after the order of ``MODEL_PACKAGE_BACKENDS`` when it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from edge_agent.models.artifacts.packages.manifest import ModelPackage
from edge_agent.models.common.errors import NoSuitablePackageError

BACKEND_RANK = {"coreml": 8, "trt": 7, "onnx": 6, "torch": 5, "hugging-face": 4, "torch-script": 3, "ultralytics": 1}
QUANTIZATION_RANK = {"int8": 4, "fp16": 3, "fp32": 2, "bf16": 2, "unknown": 1}
CPU_QUANTIZATIONS = ("unknown", "fp32", "bf16")
GPU_QUANTIZATIONS = ("unknown", "fp32", "fp16")
# Highest ONNX opset each onnxruntime minor version runs (Roboflow's table); newer releases run at
# least the last entry's.
_OPSET_BY_ORT_MINOR = {15: 19, 16: 19, 17: 20, 18: 21, 19: 21, 20: 21, 21: 22, 22: 23}
_DEFAULT_OPSET = 19


@dataclass(frozen=True)
class Gpu:
    name: str  # torch's device name, spaces as '-', lower case: nvidia-h200, orin
    compute_capability: str  # "8.7"


@dataclass(frozen=True)
class Box:
    """What this machine can run, as far as package choice is concerned."""

    device: str = "cpu"  # cpu | cuda | cuda:N
    engines: frozenset[str] = frozenset({"onnx"})  # backends edge-agent can run here
    onnxruntime_version: str | None = None
    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    torch_version: str | None = None
    torchvision_version: str | None = None
    gpus: tuple[Gpu, ...] = ()
    trt_version: str | None = None
    jetson: bool = False
    l4t_version: str | None = None

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0]

    @property
    def selected_gpus(self) -> tuple[Gpu, ...]:
        if self.device_type != "cuda":
            return ()
        if ":" in self.device:
            index = int(self.device.split(":", 1)[1])
            return self.gpus[index : index + 1]
        return self.gpus

    def describe(self) -> str:
        parts = [f"device {self.device}", f"engines {', '.join(sorted(self.engines))}"]
        if self.onnxruntime_version:
            parts.append(f"onnxruntime {self.onnxruntime_version} ({', '.join(self.onnx_providers)})")
        if self.torch_version:
            parts.append(f"torch {self.torch_version}")
        if self.gpus:
            parts.append("GPUs " + ", ".join(f"{g.name} (CC {g.compute_capability})" for g in self.gpus))
        if self.trt_version:
            parts.append(f"TensorRT {self.trt_version}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Preferences:
    package_id: str | None = None
    backends: tuple[str, ...] | None = None  # allowed, best first
    quantizations: tuple[str, ...] | None = None
    batch_size: tuple[int, int] | None = None  # (min, max) the caller will send
    allow_untrusted: bool = False


@dataclass(frozen=True)
class Selection:
    chosen: ModelPackage
    ranked: tuple[ModelPackage, ...]
    rejected: tuple[tuple[str, str], ...] = field(default=())

    def describe(self) -> str:
        text = f"package {self.chosen.describe()}"
        if len(self.ranked) > 1:
            text += "; fallbacks " + ", ".join(p.package_id for p in self.ranked[1:])
        if self.rejected:
            text += "; rejected " + "; ".join(f"{pkg}: {why}" for pkg, why in self.rejected)
        return text


def _version(text: str | None) -> Version | None:
    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def max_opset(onnxruntime_version: str | None) -> int:
    version = _version(onnxruntime_version)
    if version is None or version.major != 1:
        return _DEFAULT_OPSET
    if version.minor in _OPSET_BY_ORT_MINOR:
        return _OPSET_BY_ORT_MINOR[version.minor]
    return max(_OPSET_BY_ORT_MINOR.values()) if version.minor > max(_OPSET_BY_ORT_MINOR) else _DEFAULT_OPSET


def default_quantizations(box: Box) -> tuple[str, ...]:
    return CPU_QUANTIZATIONS if box.device_type == "cpu" else GPU_QUANTIZATIONS


def _batch_reason(package: ModelPackage, batch: tuple[int, int] | None) -> str | None:
    if batch is None:
        return None
    low, high = batch
    if not package.dynamic_batch and package.static_batch is None:
        return None  # a manifest without batch fields (Hugging Face packages): the model's code batches
    if not package.dynamic_batch:
        static = package.static_batch or 0
        if not low <= static <= high:
            return f"static batch {static} is outside the batch sizes {low}..{high} this agent sends"
        return None
    trt = package.trt
    if trt is not None and trt.min_batch is not None and trt.max_batch is not None:
        if trt.min_batch > low or trt.max_batch < high:
            return f"TensorRT batch range {trt.min_batch}..{trt.max_batch} does not cover {low}..{high}"
    return None


def _onnx_reason(package: ModelPackage, box: Box) -> str | None:
    limit = max_opset(box.onnxruntime_version)
    if package.opset is not None and package.opset > limit:
        return f"opset {package.opset} is newer than onnxruntime {box.onnxruntime_version} runs (<= {limit})"
    first = box.onnx_providers[0] if box.onnx_providers else None
    if first is not None and first in package.incompatible_providers:
        return f"marked incompatible with {first}, the first execution provider here"
    return None


def _torch_script_reason(package: ModelPackage, box: Box) -> str | None:
    if box.device_type not in package.supported_device_types:
        return f"built for {', '.join(package.supported_device_types)}, not {box.device_type}"
    have, need = _version(box.torch_version), _version(package.torch_version)
    if have is not None and need is not None and have.release < need.release:
        return f"needs torch >= {package.torch_version}, this box has {box.torch_version}"
    if package.torchvision_version:
        have_tv, need_tv = _version(box.torchvision_version), _version(package.torchvision_version)
        if have_tv is None:
            return f"needs torchvision >= {package.torchvision_version}, which is not installed"
        if need_tv is not None and have_tv.release < need_tv.release:
            return f"needs torchvision >= {package.torchvision_version}, this box has {box.torchvision_version}"
    return None


def _trt_reason(package: ModelPackage, box: Box) -> str | None:
    trt = package.trt
    assert trt is not None
    if box.device_type != "cuda":
        return "TensorRT engines need a CUDA device"
    gpus = box.selected_gpus
    if not gpus:
        return "no CUDA GPU found"
    if trt.same_cc_compatible:
        if not any(g.compute_capability == trt.cuda_device_cc for g in gpus):
            found = ", ".join(f"{g.name} CC {g.compute_capability}" for g in gpus)
            return f"built for compute capability {trt.cuda_device_cc}; this box has {found}"
    elif not any(g.name == trt.cuda_device_type for g in gpus):
        return f"built for {trt.cuda_device_type}; this box has {', '.join(g.name for g in gpus)}"
    have, need = _version(box.trt_version), _version(trt.trt_version)
    if have is None or need is None:
        return "TensorRT version unknown"
    if trt.trt_forward_compatible:
        if have.release < need.release:
            return f"needs TensorRT >= {trt.trt_version}, this box has {box.trt_version}"
        if trt.lean_runtime_excluded:
            return "forward-compatible engine without the lean runtime"
    elif have.release != need.release:
        return f"built with TensorRT {trt.trt_version}, this box has {box.trt_version}"
    if trt.machine_type == "jetson" or box.jetson:
        if trt.machine_type != "jetson" or not box.jetson:
            return f"built for a {trt.machine_type}, this box is {'a Jetson' if box.jetson else 'not a Jetson'}"
        have_l4t, need_l4t = _version(box.l4t_version), _version(trt.l4t_version)
        if have_l4t is None or need_l4t is None or have_l4t.release[:2] != need_l4t.release[:2]:
            return f"built for L4T {trt.l4t_version}, this box has {box.l4t_version}"
    return None


def rejection(package: ModelPackage, box: Box, prefs: Preferences) -> str | None:
    """Why ``package`` cannot be used here, or None when it can."""
    if package.backend not in box.engines:
        if package.backend in ("onnx", "torch-script", "trt"):
            return f"no {package.backend} runtime installed here"
        return f"edge-agent has no engine for {package.backend} packages"
    if not package.trusted and not prefs.allow_untrusted:
        return "not from a trusted source (ALLOW_UNTRUSTED_PACKAGES)"
    if prefs.backends is not None and package.backend not in prefs.backends:
        return f"backend {package.backend} is not in MODEL_PACKAGE_BACKENDS"
    reason = _batch_reason(package, prefs.batch_size)
    if reason:
        return reason
    allowed = prefs.quantizations or default_quantizations(box)
    if package.quantization not in allowed:
        return f"quantization {package.quantization} is not among {', '.join(allowed)} for {box.device}"
    if package.features and "nms_fused" in package.features:
        return "NMS is fused into the graph (edge-agent runs its own NMS)"
    if package.backend == "onnx":
        return _onnx_reason(package, box)
    if package.backend == "torch-script":
        return _torch_script_reason(package, box)
    if package.backend == "trt":
        return _trt_reason(package, box)
    return None


def _rank_key(package: ModelPackage, box: Box, prefs: Preferences) -> tuple:
    preferred = prefs.backends or ()
    order = -preferred.index(package.backend) if package.backend in preferred else -len(preferred)
    trt = package.trt
    return (
        order,
        BACKEND_RANK.get(package.backend, 0),
        QUANTIZATION_RANK.get(package.quantization, 0),
        package.trusted,
        package.dynamic_batch,
        -(package.static_batch or 0),
        package.opset or 0,
        not (trt.trt_forward_compatible if trt else False),
        not (trt.same_cc_compatible if trt else False),
        -sum(1 for p in package.incompatible_providers if p in box.onnx_providers),
        package.package_id,
    )


def rank(
    packages: Sequence[ModelPackage], box: Box, prefs: Preferences
) -> tuple[list[ModelPackage], list[tuple[str, str]]]:
    """(usable packages best first, [(package id, why not)] for the others)."""
    usable, rejected = [], []
    for package in packages:
        if prefs.package_id is not None and package.package_id != prefs.package_id:
            continue
        why = rejection(package, box, prefs)
        if why is None:
            usable.append(package)
        else:
            rejected.append((package.package_id, why))
    usable.sort(key=lambda p: _rank_key(p, box, prefs), reverse=True)
    return usable, rejected


def choose(model_id: str, packages: Sequence[ModelPackage], box: Box, prefs: Preferences) -> Selection:
    """The best package for this box, or NoSuitablePackageError listing why each one was refused."""
    if prefs.package_id is not None and all(p.package_id != prefs.package_id for p in packages):
        listed = ", ".join(p.package_id for p in packages) or "none"
        raise NoSuitablePackageError(model_id, [(prefs.package_id, f"MODEL_PACKAGE_ID names no package ({listed})")])
    usable, rejected = rank(packages, box, prefs)
    if not usable:
        raise NoSuitablePackageError(model_id, rejected)
    return Selection(usable[0], tuple(usable), tuple(rejected))
