"""A package's ``inference_config.json`` -> the pre-processing and normalisation a task runs.

Keys (Roboflow's ``inference_models`` schema): ``image_pre_processing`` (``static-crop`` in percent,
``contrast``, ``grayscale``, ``auto-orient``), ``network_input`` (``training_input_size``,
``resize_mode`` stretch | letterbox | letterbox-reflect-edges | center-crop | fit-longer-edge,
``padding_value``, ``color_mode``, ``scaling_factor``, ``normalization`` [[mean], [std]],
``input_channels``), ``forward_pass`` (``static_batch_size``). Problems are
:class:`ModelArtifactsError` naming the file and the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.models.artifacts import cache
from edge_agent.models.artifacts.artifact_loader import ModelArtifacts, read_class_names, read_keypoints
from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.maths.preprocessing import CONTRAST_TYPES, InputNormalization, Preprocessing

logger = logging.getLogger(__name__)

INFERENCE_CONFIG_FILE = "inference_config.json"
RESIZE_MODES = ("stretch", "letterbox", "letterbox-reflect-edges", "center-crop", "fit-longer-edge")


@dataclass(frozen=True)
class InferenceConfig:
    preprocessing: Preprocessing
    normalization: InputNormalization
    static_batch_size: int | None
    max_dynamic_batch_size: int | None
    resize_mode: str


def _enabled(step: Any) -> bool:
    return isinstance(step, dict) and bool(step.get("enabled", False))


def _size(raw: Any, where: Path) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        width, height = int(raw["width"]), int(raw["height"])
    except (KeyError, TypeError, ValueError):
        raise ModelArtifactsError(
            where, "network_input.training_input_size needs whole-number height and width"
        ) from None
    if width < 1 or height < 1:
        raise ModelArtifactsError(where, f"network_input.training_input_size {width}x{height} is not positive")
    return width, height


def _normalization(raw: Any, scaling: float, channels: str, where: Path) -> InputNormalization:
    if raw is None:
        return InputNormalization(scale=1.0 / scaling, channels=channels)
    try:
        mean, std = raw
        mean3 = tuple(float(v) for v in mean)
        std3 = tuple(float(v) for v in std)
        if len(mean3) != 3 or len(std3) != 3:
            raise ValueError
        return InputNormalization(mean=mean3, std=std3, scale=1.0 / scaling, channels=channels)
    except (TypeError, ValueError):
        raise ModelArtifactsError(
            where, "network_input.normalization must be [[mean, mean, mean], [std, std, std]] with std > 0"
        ) from None


def parse_inference_config(content: Any, where: Path) -> InferenceConfig:
    if not isinstance(content, dict):
        raise ModelArtifactsError(where, "is not a JSON object")
    network = content.get("network_input")
    if not isinstance(network, dict):
        raise ModelArtifactsError(where, "has no network_input object")
    mode = network.get("resize_mode", "stretch")
    if mode not in RESIZE_MODES:
        raise ModelArtifactsError(where, f"network_input.resize_mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    pad = network.get("padding_value")
    if mode == "fit-longer-edge":
        # A batch of different shapes cannot be stacked; Roboflow's YOLO models make it a letterbox.
        logger.warning("%s: resize_mode fit-longer-edge is run as a letterbox with padding 127", where)
        pad = 127
    try:
        pad_value = int(pad) if pad is not None else 0
    except (TypeError, ValueError):
        raise ModelArtifactsError(where, f"network_input.padding_value {pad!r} is not a number") from None
    channels = str(network.get("color_mode", "rgb")).lower()
    if channels not in ("rgb", "bgr"):
        raise ModelArtifactsError(where, f"network_input.color_mode {channels!r} is not rgb or bgr")
    if network.get("input_channels", 3) != 3:
        raise ModelArtifactsError(where, "network_input.input_channels must be 3")
    try:
        scaling = float(network.get("scaling_factor", 255.0) or 255.0)
    except (TypeError, ValueError):
        raise ModelArtifactsError(where, "network_input.scaling_factor is not a number") from None
    if scaling <= 0:
        raise ModelArtifactsError(where, "network_input.scaling_factor must be > 0")
    size = _size(network.get("training_input_size"), where)
    steps = content.get("image_pre_processing") or {}
    if not isinstance(steps, dict):
        raise ModelArtifactsError(where, "image_pre_processing must be an object")
    crop = None
    if _enabled(steps.get("static-crop")):
        raw = steps["static-crop"]
        try:
            crop = tuple(float(raw[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        except (KeyError, TypeError, ValueError):
            raise ModelArtifactsError(
                where, "image_pre_processing.static-crop needs x_min, y_min, x_max, y_max"
            ) from None
        if not (0 <= crop[0] < crop[2] <= 100 and 0 <= crop[1] < crop[3] <= 100):
            raise ModelArtifactsError(where, f"image_pre_processing.static-crop {crop} must be percentages, min < max")
    contrast = None
    if _enabled(steps.get("contrast")):
        contrast = steps["contrast"].get("type")
        if contrast not in CONTRAST_TYPES:
            raise ModelArtifactsError(
                where, f"image_pre_processing.contrast type {contrast!r} is not one of {CONTRAST_TYPES}"
            )
    raw_forward = content.get("forward_pass")
    forward = raw_forward if isinstance(raw_forward, dict) else {}
    static = forward.get("static_batch_size")
    dynamic_max = forward.get("max_dynamic_batch_size")
    for key, value in (("static_batch_size", static), ("max_dynamic_batch_size", dynamic_max)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelArtifactsError(where, f"forward_pass.{key} must be a whole number >= 1")
    preprocessing = Preprocessing(
        letterbox=mode in ("letterbox", "letterbox-reflect-edges", "fit-longer-edge"),
        pad_value=pad_value,
        static_crop=crop,  # type: ignore[arg-type]
        contrast=contrast,
        grayscale=_enabled(steps.get("grayscale")),
        auto_orient=_enabled(steps.get("auto-orient")),
        resize_size=size,
        center_crop=mode == "center-crop",
    )
    return InferenceConfig(
        preprocessing=preprocessing,
        normalization=_normalization(network.get("normalization"), scaling, channels, where),
        static_batch_size=static,
        max_dynamic_batch_size=dynamic_max,
        resize_mode=mode,
    )


def load_inference_config(directory: Path) -> InferenceConfig:
    path = directory / INFERENCE_CONFIG_FILE
    content = cache.read_json_file(path)
    if content is None:
        raise ModelArtifactsError(path, "is missing or not JSON")
    return parse_inference_config(content, path)


def package_artifacts(directory: Path, model_id: str, weights_file: str) -> ModelArtifacts:
    """The :class:`ModelArtifacts` of a package directory (class_names.txt + inference_config.json)."""
    config = load_inference_config(directory)
    return ModelArtifacts(
        directory=directory,
        weights_path=directory / weights_file,
        environment={},
        preprocessing=config.preprocessing,
        class_names=read_class_names(directory, {}),
        keypoints=read_keypoints(directory),
        normalization=config.normalization,
        static_batch_size=config.static_batch_size,
    )
