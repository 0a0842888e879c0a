"""The OpenVINO execution provider (onnxruntime-openvino): options, compiled-model cache, install check.

onnxruntime-openvino installs the same ``onnxruntime`` Python package as the plain wheel, so the two
(or onnxruntime-gpu) overwrite each other's files when both are installed; see the README.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.speed.precision import keyed_dir

logger = logging.getLogger(__name__)

OPENVINO = "OpenVINOExecutionProvider"
# Distributions that each install the same ``onnxruntime`` Python package.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
_mixed_checked = False


def openvino_cache_dir(settings: ModelSettings, model_key: str) -> Path:
    """Per-model directory of OpenVINO's compiled models under the model cache (like TensorRT engines)."""
    return keyed_dir(settings.openvino_cache_dir, model_key)


def openvino_options(settings: ModelSettings, model_key: str) -> dict[str, str]:
    """Provider options: device, compiled-model cache, threads (ORT_INTRA_OP_THREADS)."""
    options = {"device_type": settings.openvino_device_type}
    if settings.openvino_cache_enabled:
        cache = openvino_cache_dir(settings, model_key)
        cache.mkdir(parents=True, exist_ok=True)
        options["cache_dir"] = str(cache)
    if settings.ort_intra_op_threads > 0:
        # OpenVINO runs its own thread pool; the session's intra-op setting does not reach it.
        options["num_of_threads"] = str(settings.ort_intra_op_threads)
    return options


def compile_notice(settings: ModelSettings, model_key: str) -> tuple[str, str] | None:
    """(message while compiling, label once compiled) when nothing is cached for the model yet."""
    if not settings.openvino_cache_enabled:
        return None
    compiled = openvino_cache_dir(settings, model_key)
    if compiled.is_dir() and any(compiled.iterdir()):
        return None
    return (
        f"compiling {model_key} for OpenVINO {settings.openvino_device_type} (first start only; cached in {compiled})",
        f"OpenVINO {settings.openvino_device_type} compile of {model_key} done",
    )


def installed_onnxruntime_builds() -> dict[str, str]:
    """{distribution: version} of every onnxruntime build pip has installed here."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def warn_on_mixed_onnxruntime(available: list[str]) -> None:
    """Once per process: several builds share one package directory; the last installed wins file by file."""
    global _mixed_checked
    if _mixed_checked:
        return
    _mixed_checked = True
    builds = installed_onnxruntime_builds()
    if len(builds) > 1:
        logger.warning(
            "several onnxruntime builds are installed (%s); they overwrite each other's files, and the one in "
            "use offers %s. Keep one: pip uninstall -y %s, then pip install --no-deps the one you want "
            "(README: OpenVINO)",
            ", ".join(f"{k} {v}" for k, v in builds.items()),
            ", ".join(available),
            " ".join(builds),
        )
