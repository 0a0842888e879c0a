"""The ONNX Runtime engine: one InferenceSession with the configured execution providers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.models.common.errors import ModelRuntimeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.base import Engine, TensorSpec, static_dim
from edge_agent.models.speed.concurrency import plan_runs, usable_cores

logger = logging.getLogger(__name__)

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(double)": "float64",
}


def _spec(arg: object) -> TensorSpec:
    name = getattr(arg, "name")  # noqa: B009 - onnxruntime NodeArg
    shape = tuple(static_dim(d) for d in (getattr(arg, "shape") or ()))  # noqa: B009
    kind = getattr(arg, "type")  # noqa: B009
    return TensorSpec(name=name, shape=shape, dtype=_ORT_DTYPES.get(kind, kind))


class OnnxEngine(Engine):
    """Owns the session; ``max_batch_size`` applies when the batch axis is dynamic."""

    name = "onnxruntime"

    def __init__(
        self,
        weights_path: Path,
        model_id: str,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
        precision: str = "fp32",
        precision_reason: str = "",
        *,
        concurrent: bool = False,
    ) -> None:
        """``concurrent``: the caller may run several batches at once (a task model whose own state
        is per thread), so the session is sized by the run plan (models/speed/concurrency.py)."""
        from edge_agent.models.engines.providers import create_session, planned_providers

        self.weights_path = Path(weights_path)
        self.precision = precision
        self.precision_reason = precision_reason
        # An INT8 copy gets its own TensorRT/OpenVINO cache directory (and first-build notice).
        cache_key = model_id if precision == "fp32" else f"{model_id}@{precision}"
        threads: int | None = None
        if concurrent:
            plan = plan_runs(
                settings.model_concurrency, settings.ort_intra_op_threads, planned_providers(settings), usable_cores()
            )
            self.concurrency, self.concurrency_reason, threads = plan.in_flight, plan.reason, plan.intra_op_threads
            logger.info("model %s: %s", model_id, plan.reason)
        self.session = create_session(
            self.weights_path, cache_key, settings, settings.max_batch_size, status, intra_op_threads=threads
        )
        inputs = [_spec(a) for a in self.session.get_inputs()]
        outputs = [_spec(a) for a in self.session.get_outputs()]
        super().__init__(model_id, inputs, outputs, settings.max_batch_size)
        self._input_name = inputs[0].name
        self._output_names = [o.name for o in outputs]
        self._providers: list[str] = list(self.session.get_providers())

    @property
    def providers(self) -> list[str]:
        return self._providers

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        try:
            return list(self.session.run(self._output_names, {self._input_name: batch}))
        except Exception as exc:
            raise ModelRuntimeError(f"onnxruntime failed running {self.model_id}: {exc}") from exc
