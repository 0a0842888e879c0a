"""Importing torch only when a model needs it, and choosing its device.

torch is the optional extra ``edge-agent[torch]``: nothing imports it at module level, so ONNX-only
boxes never pay for it and a missing install is a clear error naming the extra.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edge_agent.models.common.errors import MissingExtraError, ModelRuntimeError


def import_torch(what: str) -> ModuleType:
    try:
        import torch
    except ImportError:
        raise MissingExtraError(what, "torch", "torch") from None
    return torch


def resolve_device(torch: ModuleType, requested: str) -> Any:
    """DEFAULT_DEVICE -> a torch.device: auto is the first CUDA GPU when torch sees one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelRuntimeError(
                f"DEFAULT_DEVICE={requested} but this torch ({torch.__version__}) sees no CUDA device; "
                f"set DEFAULT_DEVICE=cpu or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelRuntimeError(
                f"DEFAULT_DEVICE={requested} but torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    return device
