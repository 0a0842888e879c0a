"""Depth Anything v2 (``depth-anything-v2/{small,base,large}``): relative depth of every pixel.

The checkpoint is a Hugging Face DepthAnything directory (``config.json``, ``model.safetensors``,
``preprocessor_config.json``), from either Roboflow stack (see :mod:`.artifacts`). Pre- and
post-processing are the checkpoint's own image processor (resize keeping the aspect ratio to a
multiple of 14, ImageNet mean/std; bicubic upsampling of the prediction back to the frame),
fed RGB: Roboflow's current stack hands it the BGR array unflipped, which is wrong.

On a stream the whole map is too big for a message every frame: a message carries the boxes of
``DEPTH_DETECTOR_MODEL_ID`` (run on the same frame) each with its median normalised depth; the
live view shows a small depth picture, and the control API serves the full map on demand.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation import depth_maths
from edge_agent.models.foundation.base import WholeImageModel
from edge_agent.models.foundation.torch_support import device_and_dtype, import_runtime
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.tasks.model import Model

REQUIRED_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
#: longer side of the depth picture drawn into the live view, in pixels
PICTURE_SIDE = 160


@dataclass(frozen=True)
class DepthMap:
    """One image's depth: the normalised map (H, W) float32 in source pixels, 1 = nearest.

    ``detections`` (boxes of the paired detector) and ``box_depth`` (median depth in each) are
    what a stream publishes; ``depth_map_format`` is how :meth:`roboflow_response` encodes the map.
    """

    normalized: np.ndarray
    image_size: tuple[int, int]
    depth_map_format: str = "json"
    detections: Detections | None = None
    box_depth: np.ndarray | None = None
    task_type: str = "depth-estimation"

    def __len__(self) -> int:
        return 0 if self.detections is None else len(self.detections)

    def filter_confidence(self, threshold: float) -> DepthMap:
        if self.detections is None or self.box_depth is None:
            return self
        keep = self.detections.confidences >= threshold
        if bool(keep.all()):
            return self
        return replace(self, detections=self.detections.select(keep), box_depth=self.box_depth[keep])

    # the live view draws what has boxes (pipelines/annotate.py)
    @property
    def boxes(self) -> np.ndarray | None:
        return None if self.detections is None else self.detections.boxes

    @property
    def class_ids(self) -> np.ndarray:
        return np.zeros(0, np.int64) if self.detections is None else self.detections.class_ids

    @property
    def class_names(self) -> tuple[str, ...]:
        return () if self.detections is None else self.detections.class_names

    @property
    def confidences(self) -> np.ndarray:
        return np.zeros(0, np.float32) if self.detections is None else self.detections.confidences

    def draw_overlay(self, image: np.ndarray) -> None:
        """The depth picture (viridis, longer side PICTURE_SIDE) in the top-right corner, in place."""
        import cv2

        small = depth_maths.colorize(depth_maths.downscale(self.normalized, PICTURE_SIDE))
        height, width = image.shape[:2]
        h, w = min(small.shape[0], height), min(small.shape[1], width)
        image[:h, width - w :] = small[:h, :w]
        cv2.rectangle(image, (width - w, 0), (width - 1, h - 1), (255, 255, 255), 1)

    def to_response(self) -> dict[str, Any]:
        """What a stream publishes: the paired detector's boxes, each with ``depth``."""
        width, height = self.image_size
        rows: list[dict[str, Any]] = []
        if self.detections is not None and self.box_depth is not None:
            rows = self.detections.box_rows()
            for row, value in zip(rows, self.box_depth.tolist(), strict=True):
                row["depth"] = None if np.isnan(value) else value
        return {"predictions": rows, "image": {"width": width, "height": height}}

    def roboflow_response(self) -> dict[str, Any]:
        """Roboflow's ``/infer/depth-estimation`` body: the map, its format, a viridis picture (base64 PNG)."""
        picture = base64.b64encode(depth_maths.encode_png(depth_maths.colorize(self.normalized))).decode("ascii")
        return {
            "normalized_depth": depth_maths.depth_map_payload(self.normalized, self.depth_map_format),
            "depth_map_format": self.depth_map_format,
            "image": picture,
        }


@dataclass(frozen=True)
class DepthParams:
    confidence: float | None
    depth_map_format: str


class DepthAnythingModel(WholeImageModel):
    """Hugging Face ``AutoModelForDepthEstimation`` behind the FoundationModel interface.

    As a stream's second model (``STREAM_<NAME>_SECOND_MODEL_ID``) it takes the detector's boxes
    as prompts: one depth map per frame, the median depth inside each box
    (``models/tasks/on_detections.py``).
    """

    boxes_as = "prompts"

    def __init__(
        self,
        model_id: str,
        directory: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
        detector: Model | None = None,
    ) -> None:
        super().__init__(model_id, "depth-estimation", model_id.split("/", 1)[0])
        what = f"{model_id} (Depth Anything)"
        transformers = import_runtime("transformers", what, "transformers")
        self.torch = import_runtime("torch", what, "transformers")
        self.directory = directory
        self.settings = settings
        self.device, self.dtype = device_and_dtype(settings, what)
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
            network = self.load_network(transformers, directory)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelArtifactsError(directory, f"is not a loadable Depth Anything checkpoint ({exc})") from None
        self.network = network.to(self.device).eval()
        self.detector = detector
        self.max_batch_size = settings.max_batch_size

    def load_network(self, transformers: Any, directory: Path) -> Any:
        return transformers.AutoModelForDepthEstimation.from_pretrained(
            str(directory), local_files_only=True, dtype=self.dtype
        )

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, depth_map_format: str = "json"
    ) -> DepthParams:
        if depth_map_format not in depth_maths.DEPTH_MAP_FORMATS:
            raise InvalidInputError(
                f"depth_map_format must be one of {', '.join(depth_maths.DEPTH_MAP_FORMATS)}, not {depth_map_format!r}"
            )
        return DepthParams(confidence, depth_map_format)

    def depth(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Raw predicted depth of each BGR image, upsampled to its size (the processor's bicubic)."""
        torch = self.torch
        out: list[np.ndarray] = []
        # frames of one size share a batch; the processor keeps each one's aspect ratio
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        results: dict[int, np.ndarray] = {}
        for (height, width), members in groups.items():
            rgb = [np.ascontiguousarray(images[i][:, :, ::-1]) for i in members]
            inputs = self.processor(images=rgb, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            with torch.inference_mode():
                outputs = self.network(pixel_values=pixels)
                outputs.predicted_depth = outputs.predicted_depth.float()
                post = self.processor.post_process_depth_estimation(
                    outputs, target_sizes=[(height, width)] * len(members)
                )
            for i, item in zip(members, post, strict=True):
                results[i] = item["predicted_depth"].cpu().numpy().astype(np.float32)
        for i in range(len(images)):
            out.append(results[i])
        return out

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        maps = [depth_maths.normalize_depth(d) for d in self.depth(images)]
        found: list[Any] = [None] * len(images)
        if self.detector is not None:
            kwargs = {} if params.confidence is None else {"confidence": params.confidence}
            found = self.detector.predict(images, **kwargs)
        out: list[Prediction] = []
        for image, normalized, detections in zip(images, maps, found, strict=True):
            size = (image.shape[1], image.shape[0])
            if isinstance(detections, Detections):
                out.append(
                    DepthMap(
                        normalized,
                        size,
                        params.depth_map_format,
                        detections,
                        depth_maths.box_depths(normalized, detections.boxes),
                    )
                )
            else:
                out.append(DepthMap(normalized, size, params.depth_map_format))
        return out

    def predict_on_boxes(
        self, image: np.ndarray, detections: Detections, which: np.ndarray, options: Any = None
    ) -> DepthMap:
        """The frame's depth with each selected box's median depth (NaN, published null, for the others)."""
        image = self.load_image(image)
        normalized = depth_maths.normalize_depth(self.depth([image])[0])
        depths = np.full(len(detections), np.nan, np.float32)
        chosen = np.flatnonzero(np.asarray(which, bool))
        if chosen.size:
            depths[chosen] = depth_maths.box_depths(normalized, detections.boxes[chosen])
        return DepthMap(normalized, (image.shape[1], image.shape[0]), "json", detections, depths)

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
