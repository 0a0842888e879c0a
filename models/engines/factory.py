"""Which engine runs a weights file: ONNX Runtime for ``.onnx``, torch for TorchScript."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.models.artifacts.artifact_loader import ModelArtifacts
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.base import Engine

TORCHSCRIPT_SUFFIXES = (".torchscript", ".pt")
DEFAULT_INPUT_SIZE = 640


def is_torchscript(name: str) -> bool:
    return name.endswith(TORCHSCRIPT_SUFFIXES)


def create_engine(
    artifacts: ModelArtifacts, model_id: str, settings: ModelSettings, status: Callable[[str], None] | None = None
) -> Engine:
    path = artifacts.weights_path
    if is_torchscript(path.name):
        from edge_agent.models.engines.torch import TorchEngine  # torch is imported only for TorchScript models

        if artifacts.preprocessing.resize_size is not None:
            width, height = artifacts.preprocessing.resize_size
        else:
            width = height = artifacts.resolution or DEFAULT_INPUT_SIZE
        return TorchEngine(path, model_id, settings, (height, width), artifacts.static_batch_size, status)
    from edge_agent.models.engines.onnx import OnnxEngine

    return OnnxEngine(path, model_id, settings, status, concurrent=True)
