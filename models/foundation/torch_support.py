"""What the torch-based foundation families share: importing their runtimes, device and dtype, and
running a network on a numpy batch."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from edge_agent.models.common.errors import MissingExtraError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.torch_runtime import import_torch, resolve_device


def import_runtime(module: str, what: str, extra: str) -> ModuleType:
    """``module`` (transformers, ...), or MissingExtraError naming the extra that installs it."""
    import_torch(what)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(what, extra, module.split(".")[0]) from None


def device_and_dtype(settings: ModelSettings, what: str) -> tuple[Any, Any]:
    """DEFAULT_DEVICE's torch device, and FOUNDATION_DTYPE's dtype (auto: float32 on the CPU, float16 on CUDA)."""
    torch = import_torch(what)
    device = resolve_device(torch, settings.default_device)
    choice = settings.foundation_dtype
    if choice == "auto":
        choice = "float16" if device.type == "cuda" else "float32"
    return device, getattr(torch, choice)


def run_on_numpy(torch: Any, network: Any, batch: np.ndarray, device: Any, dtype: Any) -> np.ndarray:
    """``network`` on a numpy batch moved to ``device``/``dtype``; its output back as float32 numpy."""
    with torch.inference_mode():
        out: np.ndarray = network(torch.from_numpy(batch).to(device, dtype)).float().cpu().numpy()
    return out
