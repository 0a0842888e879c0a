"""The torch engine: a TorchScript module on the CPU or a CUDA device, fp16 optional on CUDA.

Runs TorchScript packages of the registry (``weights.torchscript``) and a ``.torchscript`` file in
a local model directory, behind the same :class:`Engine` interface as ONNX Runtime, so tasks,
decoders and NMS are shared. TorchScript declares no shapes: the input is (batch, 3, H, W) from the
model's files, and the output shapes are read from one forward pass at load (which also warms up
the device). Images are pre-processed on the device (:mod:`.torch_preprocessing`); ``run`` takes
that tensor (or a numpy batch) and returns numpy outputs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import CacheIntegrityError, ModelLayoutError, ModelRuntimeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.base import Engine, TensorSpec
from edge_agent.models.engines.torch_runtime import import_torch, resolve_device
from edge_agent.models.maths.preprocessing import ImageMeta, InputNormalization, Preprocessing


class TorchEngine(Engine):
    name = "torch"

    def __init__(
        self,
        weights_path: Path,
        model_id: str,
        settings: ModelSettings,
        input_hw: tuple[int, int],
        static_batch: int | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        torch = import_torch(f"{model_id} (a TorchScript model)")
        self.torch = torch
        self.weights_path = Path(weights_path)
        self.device = resolve_device(torch, settings.default_device)
        self.fp16 = settings.torch_fp16 and self.device.type == "cuda"
        self._dtype = torch.float16 if self.fp16 else torch.float32
        # One forward at a time per module: TorchScript modules are not documented as re-entrant.
        self._lock = threading.Lock()
        try:
            module = torch.jit.load(str(self.weights_path), map_location=self.device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CacheIntegrityError(f"{self.weights_path} is not a loadable TorchScript file: {exc}") from exc
        self.module = module.eval()
        if self.fp16:
            self.module.half()
        height, width = input_hw
        probe_batch = static_batch or 1
        try:
            probe = self._forward(torch.zeros((probe_batch, 3, height, width), dtype=self._dtype, device=self.device))
        except Exception as exc:
            raise ModelRuntimeError(
                f"{model_id}: the TorchScript module failed on a ({probe_batch}, 3, {height}, {width}) input: {exc}"
            ) from exc
        dtype = "float16" if self.fp16 else "float32"
        inputs = [TensorSpec("images", (static_batch, 3, height, width), dtype)]
        outputs = []
        for i, out in enumerate(probe):
            shape = tuple(int(d) for d in out.shape)
            if not shape or shape[0] != probe_batch:
                raise ModelLayoutError(
                    model_id, "batched outputs", "outputs with the batch axis first", [(f"output{i}", list(shape))]
                )
            outputs.append(TensorSpec(f"output{i}", (static_batch, *shape[1:]), "float32"))
        super().__init__(model_id, inputs, outputs, settings.max_batch_size)

    @property
    def providers(self) -> list[str]:
        return [f"torch:{self.device}{':fp16' if self.fp16 else ''}"]

    def _forward(self, tensor: Any) -> list[Any]:
        torch = self.torch
        with self._lock, torch.inference_mode():
            result = self.module(tensor)
        if isinstance(result, dict):
            result = list(result.values())
        elif not isinstance(result, (list, tuple)):
            result = [result]
        return list(result)

    def make_preprocessor(
        self, pre: Preprocessing, input_size: tuple[int, int], norm: InputNormalization
    ) -> Callable[[list[np.ndarray]], tuple[Any, list[ImageMeta]]]:
        from edge_agent.models.engines.torch_preprocessing import TorchPreprocessor

        return TorchPreprocessor(self.torch, self.device, pre, input_size, norm, self._dtype)

    def run(self, batch: Any) -> list[np.ndarray]:
        torch = self.torch
        tensor = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        tensor = tensor.to(self.device, dtype=self._dtype)
        n = int(tensor.shape[0])
        if not self.dynamic_batch and n != self.static_batch:
            if n > self.static_batch:
                raise ValueError(f"{self.model_id}: batch of {n} exceeds the network's fixed batch {self.static_batch}")
            padded = torch.zeros((self.static_batch, *tensor.shape[1:]), dtype=tensor.dtype, device=self.device)
            padded[:n] = tensor
            tensor = padded
        try:
            outputs = self._forward(tensor)
        except Exception as exc:
            raise ModelRuntimeError(f"torch failed running {self.model_id}: {exc}") from exc
        return [o[:n].detach().to("cpu", dtype=torch.float32).numpy() for o in outputs]

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.run(batch)

    def close(self) -> None:
        self.module = None
