"""What this machine can run: the :class:`~models.packages.selection.Box` package choice reads.

torch is imported only when a candidate package needs it (a TorchScript or TensorRT package),
so choosing among ONNX packages never pays for it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from pathlib import Path

from edge_agent.models.artifacts.packages.selection import Box, Gpu
from edge_agent.models.common.settings import ModelSettings

logger = logging.getLogger(__name__)

_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _l4t_version() -> str | None:
    try:
        text = _TEGRA_RELEASE.read_text()
    except OSError:
        return None
    match = re.search(r"R(\d+).*?REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _gpus() -> tuple[Gpu, ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    found = []
    for index in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(index).replace(" ", "-").lower()
        major, minor = torch.cuda.get_device_capability(index)
        found.append(Gpu(name, f"{major}.{minor}"))
    return tuple(found)


def probe_box(settings: ModelSettings, *, need_torch: bool = False) -> Box:
    """This box as package choice sees it. ``need_torch``: look at GPUs through torch (imports it)."""
    import onnxruntime

    from edge_agent.models.engines.providers import resolve_providers

    providers = tuple(
        resolve_providers(
            settings.execution_providers,
            onnxruntime.get_available_providers(),
            onnxruntime.get_all_providers(),
            settings.tensorrt_enabled,
        )
    )
    engines = {"onnx"}
    has_torch = torch_installed()
    if has_torch:
        engines.add("torch-script")
    gpus: tuple[Gpu, ...] = ()
    if need_torch and has_torch:
        gpus = _gpus()
    device = settings.default_device
    if device == "auto":
        gpu_provider = providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        device = "cuda" if gpus or (gpu_provider and not need_torch) else "cpu"
    l4t = _l4t_version()
    return Box(
        device=device,
        engines=frozenset(engines),
        onnxruntime_version=getattr(onnxruntime, "__version__", None),
        onnx_providers=providers,
        torch_version=installed_version("torch") if has_torch else None,
        torchvision_version=installed_version("torchvision"),
        gpus=gpus,
        trt_version=installed_version("tensorrt"),
        jetson=l4t is not None,
        l4t_version=l4t,
    )
