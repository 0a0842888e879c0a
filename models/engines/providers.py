"""onnxruntime execution providers and session creation.

Automatic order: TensorRT (only with TENSORRT_ENABLED) -> CUDA -> OpenVINO -> CoreML -> CPU,
limited to what the installed onnxruntime offers. ONNXRUNTIME_EXECUTION_PROVIDERS overrides it;
a name onnxruntime does not know is an error that lists what is available. TensorRT engines are
cached under MODEL_CACHE_DIR/.tensorrt/<model>/ and OpenVINO's compiled models under
MODEL_CACHE_DIR/.openvino/<model>/, so only the first start pays the (long) build or compile.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edge_agent.models.common.errors import CacheIntegrityError, ExecutionProviderError, ModelRuntimeError
from edge_agent.models.common.settings import PROVIDER_SHORT_NAMES, ModelSettings
from edge_agent.models.speed.openvino import OPENVINO, compile_notice, openvino_options, warn_on_mixed_onnxruntime

logger = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PRIORITY = (TENSORRT, CUDA, OPENVINO, "CoreMLExecutionProvider", CPU)


def resolve_providers(
    requested: list[str] | None,
    available: list[str],
    known: list[str],
    tensorrt_enabled: bool,
) -> list[str]:
    """The provider names to use, best first.

    ``requested`` None: the automatic order filtered by ``available``. Otherwise the requested
    names in their order; names onnxruntime does not know at all raise ExecutionProviderError,
    known ones this build lacks are skipped with a warning (so one fleet-wide setting works on
    GPU and CPU boxes alike).
    """
    if requested is None:
        if tensorrt_enabled and TENSORRT not in available:
            # Asked for explicitly (it is opt-in): running without it would be a silent surprise.
            raise ExecutionProviderError(
                f"TENSORRT_ENABLED=true but this onnxruntime has no {TENSORRT} (it offers "
                f"{', '.join(available)}); install an onnxruntime-gpu build with TensorRT, or set "
                "TENSORRT_ENABLED=false"
            )
        chosen = [p for p in PRIORITY if p in available and (p != TENSORRT or tensorrt_enabled)]
        if not chosen:
            chosen = [p for p in available if p != "AzureExecutionProvider"] or [CPU]
        return chosen
    shorts = ", ".join(sorted(PROVIDER_SHORT_NAMES))
    unknown = [p for p in requested if p not in known and p not in available]
    if unknown:
        raise ExecutionProviderError(
            f"ONNXRUNTIME_EXECUTION_PROVIDERS names unknown provider(s) {', '.join(unknown)}; this "
            f"onnxruntime offers {', '.join(available)} (short names: {shorts})"
        )
    chosen = []
    for name in requested:
        if name in available and name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ExecutionProviderError(
            f"none of the providers in ONNXRUNTIME_EXECUTION_PROVIDERS ({', '.join(requested)}) is "
            f"available; this onnxruntime offers {', '.join(available)}"
        )
    skipped = [p for p in requested if p not in available]
    if skipped:
        logger.warning(
            "execution provider(s) %s are not available in this onnxruntime build (it offers %s); skipping them",
            ", ".join(skipped),
            ", ".join(available),
        )
    return chosen


def planned_providers(settings: ModelSettings) -> list[str]:
    """The providers a session made now would be asked for, best first (no session is made)."""
    return resolve_providers(
        settings.execution_providers,
        ort.get_available_providers(),
        ort.get_all_providers(),
        settings.tensorrt_enabled,
    )


def engine_cache_dir(settings: ModelSettings, model_key: str) -> Path:
    """Per-model TensorRT engine directory under the model cache."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key.strip("/"))[-80:] or "model"
    digest = hashlib.sha256(model_key.encode()).hexdigest()[:10]
    return settings.tensorrt_cache_dir / f"{slug}-{digest}"


def provider_options(
    providers: list[str],
    settings: ModelSettings,
    model_key: str,
    input_name: str,
    input_shape: list[Any],
    max_batch_size: int,
) -> list[Any]:
    """Providers with their options (TensorRT: engine cache, FP16, batch optimisation profile)."""
    out: list[Any] = []
    for name in providers:
        if name == TENSORRT:
            engines = engine_cache_dir(settings, model_key)
            engines.mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(engines),
                "trt_fp16_enable": settings.tensorrt_fp16,
            }
            if len(input_shape) == 4 and not isinstance(input_shape[0], int):
                _, c, h, w = input_shape
                if all(isinstance(d, int) for d in (c, h, w)):
                    # One engine for every batch size up to the maximum, instead of one per size.
                    options["trt_profile_min_shapes"] = f"{input_name}:1x{c}x{h}x{w}"
                    options["trt_profile_opt_shapes"] = f"{input_name}:{max_batch_size}x{c}x{h}x{w}"
                    options["trt_profile_max_shapes"] = f"{input_name}:{max_batch_size}x{c}x{h}x{w}"
            out.append((name, options))
        elif name == OPENVINO:
            out.append((name, openvino_options(settings, model_key)))
        else:
            out.append(name)
    return out


def first_build_notice(providers: list[str], settings: ModelSettings, model_key: str) -> tuple[str, str] | None:
    """(message while building, label once built) when a provider has nothing cached for the model yet."""
    if TENSORRT in providers:
        engines = engine_cache_dir(settings, model_key)
        if not any(engines.iterdir()):
            return (
                f"building TensorRT engine for {model_key} (first start only; can take ~10 minutes "
                f"on a Jetson, cached in {engines})",
                f"TensorRT engine for {model_key} built",
            )
    elif OPENVINO in providers:
        return compile_notice(settings, model_key)
    return None


def session_options(settings: ModelSettings, intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Session options from the settings; ``intra_op_threads`` (a run plan's) overrides theirs."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    threads = settings.ort_intra_op_threads if intra_op_threads is None else intra_op_threads
    if threads > 0:
        options.intra_op_num_threads = threads
    if settings.ort_inter_op_threads > 0:
        options.inter_op_num_threads = settings.ort_inter_op_threads
    if not settings.ort_allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _read_input_shape(path: Path, options: ort.SessionOptions) -> tuple[str, list[Any]]:
    """Input name/shape, needed before the real session only when TensorRT needs a profile."""
    probe = ort.InferenceSession(str(path), sess_options=options, providers=[CPU])
    first = probe.get_inputs()[0]
    return first.name, list(first.shape)


_CORRUPT_ERRORS = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)


def create_session(
    path: Path,
    model_key: str,
    settings: ModelSettings,
    max_batch_size: int,
    status: Callable[[str], None] | None = None,
    intra_op_threads: int | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for ``path`` with the configured providers; logs the providers once.

    A file onnxruntime cannot parse raises CacheIntegrityError (the caller may fetch it again);
    other failures raise ModelRuntimeError.
    """
    warn_on_mixed_onnxruntime(ort.get_available_providers())
    providers = planned_providers(settings)
    options = session_options(settings, intra_op_threads)
    notice: tuple[str, str] | None = None
    try:
        specs: list[Any] = list(providers)
        if TENSORRT in providers or OPENVINO in providers:
            name, shape = _read_input_shape(path, options) if TENSORRT in providers else ("", [])
            specs = provider_options(providers, settings, model_key, name, shape, max_batch_size)
            notice = first_build_notice(providers, settings, model_key)
            if notice:
                logger.warning(notice[0])
                if status:
                    status(notice[0])
        started = time.monotonic()
        session = ort.InferenceSession(str(path), sess_options=options, providers=specs)
        if notice:
            done = f"{notice[1]} in {time.monotonic() - started:.1f} s"
            logger.warning(done)
            if status:
                status(done)
    except _CORRUPT_ERRORS as exc:
        raise CacheIntegrityError(f"{path} is not a loadable ONNX model: {exc}") from exc
    except (ExecutionProviderError, CacheIntegrityError):
        raise
    except Exception as exc:
        raise ModelRuntimeError(f"onnxruntime could not load {path} with providers {providers}: {exc}") from exc
    logger.info("model %s: execution providers %s (requested %s)", model_key, session.get_providers(), providers)
    return session
