"""The engine interface every runtime implements (ONNX Runtime now; torch slots in beside it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the runtime declares it; ``None`` marks a dynamic axis."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def dim(self, axis: int) -> int | None:
        return self.shape[axis]

    def describe(self) -> tuple[str, list[object]]:
        return self.name, [d if d is not None else "?" for d in self.shape]


def static_dim(value: Any) -> int | None:
    """A runtime's axis size as an int, or None when the axis is dynamic (a name, -1, 0, None)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return None


class Engine(ABC):
    """Runs one network on a batch tensor.

    ``run`` takes an NCHW batch of at most :attr:`max_batch_size` images in :attr:`input_dtype`
    and returns the outputs (batch axis first where the network has one), trimmed to the images
    given: a fixed-batch network gets a short batch padded with blank images, and their outputs
    are dropped here, so tasks never see the padding.
    """

    name: str = "engine"
    #: the numeric precision of the weights it runs ("fp32", "int8", ...) and why (logs, stats)
    precision: str = "fp32"
    precision_reason: str = ""
    #: how many ``run`` calls may be in flight at once (from different threads), and why
    concurrency: int = 1
    concurrency_reason: str = "one run in flight"

    def __init__(self, model_id: str, inputs: list[TensorSpec], outputs: list[TensorSpec], max_batch_size: int):
        if not inputs:
            raise ValueError(f"{model_id}: the network has no inputs")
        self.model_id = model_id
        self.inputs = inputs
        self.outputs = outputs
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self.static_batch = batch or 0  # 0: the batch axis is dynamic
        self.max_batch_size = max(1, max_batch_size) if self.dynamic_batch else self.static_batch

    @property
    def dynamic_batch(self) -> bool:
        return self.static_batch == 0

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def input_dtype(self) -> type[np.floating[Any]]:
        return np.float16 if self.input.dtype == "float16" else np.float32

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        """(height, width) of an NCHW image input; None for dynamic axes."""
        shape = self.input.shape
        if len(shape) != 4:
            return None, None
        return shape[2], shape[3]

    @property
    def providers(self) -> list[str]:
        """Devices or providers in use, best first (for logs and stats)."""
        return []

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        if not self.dynamic_batch and n != self.static_batch:
            if n > self.static_batch:
                raise ValueError(f"{self.model_id}: batch of {n} exceeds the network's fixed batch {self.static_batch}")
            padded = np.zeros((self.static_batch, *batch.shape[1:]), dtype=batch.dtype)
            padded[:n] = batch
            batch = padded
        outputs = self._run(batch)
        full = batch.shape[0]
        return [o[:n] if o.ndim and o.shape[0] == full and full != n else o for o in outputs]

    def make_preprocessor(self, pre: Any, input_size: tuple[int, int], norm: Any) -> Any:
        """A callable doing the task's pre-processing on this engine's device, or None for numpy.

        An engine that owns a device (torch on CUDA) turns frames into tensors there, so each frame
        crosses to the device once as uint8; ``run`` then takes what that callable returned.
        """
        return None

    @abstractmethod
    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Execute the network on a batch of exactly the size it accepts."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the runtime's resources (sessions, device memory)."""
