"""The transformers engine: a Hugging Face vision-language checkpoint, optionally with a LoRA adapter.

Mirrors Roboflow's ``TransformerModel`` / ``LoRATransformerModel``: ``from_pretrained`` on a local
directory (never the hub: ``local_files_only``), a dtype (float32 on the CPU unless VLM_DTYPE says
otherwise, float16 on CUDA), the 4-bit NF4 path on CUDA when bitsandbytes is installed, and an
adapter attached with peft and merged into the base weights (``merge_and_unload``) unless the base
is quantised (a 4-bit base cannot take merged weights; the adapter then stays attached, as in
Roboflow's current stack). ``generate`` runs one greedy/beam search at a time under a lock.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.models.common.errors import CacheIntegrityError, MissingExtraError, ModelRuntimeError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.torch_runtime import import_torch, resolve_device

_DTYPES = ("float32", "float16", "bfloat16")


class GenerationCancelled(ModelRuntimeError):
    """The model is closing: the generation in flight was stopped."""


@dataclass(frozen=True)
class GenerationSettings:
    """What ``generate`` is told; everything else comes from the checkpoint's generation_config.json."""

    max_new_tokens: int
    num_beams: int = 1

    def kwargs(self) -> dict[str, Any]:
        # do_sample off and no n-gram ban, as Roboflow (an n-gram ban of 3 broke JSON answers there).
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": False,
            "num_beams": self.num_beams,
            "no_repeat_ngram_size": 0,
        }
        if self.num_beams > 1:
            out["early_stopping"] = False
        return out


def import_transformers(what: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(what, "vlm", "transformers") from None
    transformers.logging.set_verbosity_error()  # load reports and progress bars are not service logs
    transformers.utils.logging.disable_progress_bar()
    return transformers


def choose_dtype(torch: Any, device: Any, setting: str) -> Any:
    """VLM_DTYPE -> a torch dtype: auto is float32 on the CPU (half precision is slow or unsupported
    there) and float16 on CUDA."""
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if setting not in _DTYPES:
        raise ValueError(f"VLM_DTYPE must be auto, {', '.join(_DTYPES)}; got {setting!r}")
    return getattr(torch, setting)


def wants_4bit(device: Any, setting: str) -> bool:
    """4-bit NF4: ``auto`` on CUDA with bitsandbytes installed; ``4bit`` demands both."""
    available = importlib.util.find_spec("bitsandbytes") is not None
    if setting == "none":
        return False
    if setting == "4bit":
        if device.type != "cuda":
            raise ModelRuntimeError("VLM_QUANTIZATION=4bit needs a CUDA device (bitsandbytes 4-bit runs on CUDA only)")
        if not available:
            raise MissingExtraError("VLM_QUANTIZATION=4bit", "vlm-cuda", "bitsandbytes")
        return True
    return device.type == "cuda" and available


class TransformersEngine:
    """A loaded checkpoint (``model``) on its device, and ``generate`` under a lock."""

    name = "transformers"

    def __init__(
        self,
        model_class: Any,
        directory: Path,
        model_id: str,
        settings: ModelSettings,
        adapter_directory: Path | None = None,
        status: Callable[[str], None] | None = None,
        **load_kwargs: Any,
    ) -> None:
        self.model_id = model_id
        torch = import_torch(f"{model_id} (a vision-language model)")
        import_transformers(f"{model_id} (a vision-language model)")
        self.torch = torch
        self.device = resolve_device(torch, settings.default_device)
        self.dtype = choose_dtype(torch, self.device, settings.vlm_dtype)
        self.quantized = wants_4bit(self.device, settings.vlm_quantization)
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True, **load_kwargs}
        if self.quantized:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=self.dtype if self.dtype != torch.float32 else torch.float16,
            )
            kwargs["device_map"] = {"": self.device.index or 0}
        if status:
            status(f"loading {model_id} ({'4-bit' if self.quantized else str(self.dtype).removeprefix('torch.')})")
        try:
            model = model_class.from_pretrained(str(directory), **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CacheIntegrityError(
                f"{directory} does not hold a loadable {model_class.__name__} checkpoint: {exc}"
            ) from exc
        if not self.quantized:
            model = model.to(self.device)
        self.merged_adapter = False
        if adapter_directory is not None:
            model = attach_adapter(model, adapter_directory, merge=not self.quantized, model_id=model_id)
            self.merged_adapter = not self.quantized
        self.model = model.eval()
        self._lock = threading.Lock()
        # Set to end the generation in flight: between tokens (a stopping criterion) and inside a
        # forward pass, at the next layer (a pre-hook on every layer of every ModuleList), so a
        # stopping agent never waits on a long prefill (a real-size vision tower takes seconds).
        self.cancel = threading.Event()
        # Fraction of the wall time a generation may compute (1 = unpaced; see _pace)
        self.cpu_share = 1.0
        self._busy = 0.0
        self._resumed = time.perf_counter()
        for module in list(model.modules()):
            if isinstance(module, torch.nn.ModuleList):
                for layer in module:
                    layer.register_forward_pre_hook(self._check_cancel)

    def _check_cancel(self, module: Any, args: Any) -> None:
        if self.cancel.is_set():
            raise GenerationCancelled(f"{self.model_id}: generation cancelled")
        if self.cpu_share < 1.0:
            self._pace()

    def _pace(self) -> None:
        """Keep the generating thread busy at most ``cpu_share`` of the wall time: after every 20 ms
        of work (measured layer to layer), sleep long enough to bring the share back down. A VLM
        beside a detector on a small box then takes its answer slower instead of the detector's
        frames (nice alone does not keep it from the memory bandwidth and caches the detector needs)."""
        now = time.perf_counter()
        self._busy += now - self._resumed
        self._resumed = now
        if self._busy >= 0.02:
            pause = self._busy * (1.0 / self.cpu_share - 1.0)
            self._busy = 0.0
            if self.cancel.wait(pause):
                raise GenerationCancelled(f"{self.model_id}: generation cancelled")
            self._resumed = time.perf_counter()

    @property
    def providers(self) -> list[str]:
        kind = "nf4" if self.quantized else str(self.dtype).removeprefix("torch.")
        return [f"transformers:{self.device}:{kind}"]

    def to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors onto the model's device; floating inputs (pixels) in the model's dtype."""
        out = {}
        for key, value in inputs.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            out[key] = value
        return out

    def generate(self, inputs: dict[str, Any], generation: GenerationSettings, **extra: Any) -> Any:
        """Token ids (batch, length) on the CPU, as ``model.generate`` returns them (``extra``: more
        ``generate`` arguments, e.g. a streamer)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        cancel = self.cancel

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        torch = self.torch
        with self._lock, torch.inference_mode():
            if cancel.is_set():
                raise ModelRuntimeError(f"{self.model_id}: the model is closing")
            self._busy, self._resumed = 0.0, time.perf_counter()
            try:
                out = self.model.generate(
                    **self.to_device(inputs),
                    **generation.kwargs(),
                    **extra,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                )
            except GenerationCancelled:
                raise
            except Exception as exc:
                raise ModelRuntimeError(f"{self.model_id}: generation failed: {exc}") from exc
        return out.to("cpu")

    def close(self) -> None:
        self.cancel.set()
        with self._lock:  # after the generation in flight has stopped
            self.model = None


def attach_adapter(model: Any, adapter_directory: Path, *, merge: bool, model_id: str) -> Any:
    """A peft LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) on ``model``,
    merged into its weights when ``merge`` (W' = W + B·A·alpha/r), else left attached."""
    try:
        from peft import PeftModel
    except ImportError:
        raise MissingExtraError(f"{model_id} (a LoRA adapter)", "vlm", "peft") from None
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_directory), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CacheIntegrityError(
            f"the LoRA adapter in {adapter_directory} does not fit its base model: {exc}"
        ) from exc
    if not merge:
        return peft_model
    return peft_model.merge_and_unload()
