"""YOLOv8 / YOLOv11 object detection (Roboflow's ``yolov8*`` / ``yolov11*`` ONNX exports)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import cache
from models.base import OnnxModel
from models.errors import InvalidInputError, ModelError
from models.images import ImageInput, load_image
from models.postprocessing import decode_yolov8, map_to_source, non_max_suppression
from models.preprocessing import ImageMeta, parse_preprocessing, preprocess_batch
from models.responses import ImageDimensions, ObjectDetectionPrediction, ObjectDetectionResponse
from models.settings import ModelSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionParams:
    confidence: float
    iou_threshold: float
    max_detections: int
    max_candidates: int
    class_agnostic_nms: bool


@dataclass(frozen=True)
class Detections:
    """One image's detections in source pixels: xyxy boxes, scores, class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


def _unit(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise InvalidInputError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def read_class_names(directory: Path, environment: dict[str, Any]) -> list[str]:
    """class_names.txt (one per line), else the environment's CLASS_MAP."""
    path = directory / cache.CLASS_NAMES_FILE
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
        if names:
            return names
    names = cache.class_map_names(environment)
    if names is not None:
        return names
    raise ModelError(f"{directory} has no class names (class_names.txt or CLASS_MAP in environment.json)")


class YOLOv8ObjectDetection(OnnxModel):
    """Output ``(B, 4 + nc, N)``: cx, cy, w, h in input pixels, then class scores in [0, 1]."""

    def __init__(
        self,
        model_id: str,
        directory: Path,
        task_type: str = "object-detection",
        model_type: str = "yolov8",
        settings: ModelSettings | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        directory = Path(directory)
        environment = cache.read_json_file(directory / cache.ENVIRONMENT_FILE)
        if environment is None:
            environment = {}
            logger.warning("%s: no readable environment.json; using stretch resize, no preprocessing", model_id)
        if not isinstance(environment, dict):
            raise ModelError(f"{directory / cache.ENVIRONMENT_FILE} is not a JSON object")
        self.environment = environment
        self.preprocessing = parse_preprocessing(
            environment.get("PREPROCESSING"), str(directory / cache.ENVIRONMENT_FILE)
        )
        self.class_names = read_class_names(directory, environment)
        super().__init__(model_id, directory, task_type, model_type, settings, status)
        self.input_size = self._input_size()
        self._check_output()

    def _input_size(self) -> tuple[int, int]:
        shape = self.input_shape
        if len(shape) != 4:
            raise ModelError(f"{self.model_id}: expected an NCHW image input, got shape {shape}")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            return w, h
        if self.preprocessing.resize_size is not None:
            return self.preprocessing.resize_size
        raise ModelError(
            f"{self.model_id}: the ONNX input has no fixed height/width and environment.json gives no resize size"
        )

    def _check_output(self) -> None:
        shape = self.session.get_outputs()[0].shape
        if len(shape) != 3:
            raise ModelError(f"{self.model_id}: expected a (batch, 4 + classes, boxes) output, got {shape}")
        rows = shape[1]
        if isinstance(rows, int) and rows - 4 < len(self.class_names):
            raise ModelError(
                f"{self.model_id}: output has {rows - 4} class rows but {len(self.class_names)} class names are listed"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- Model interface --------------------------------------------------------------------------

    def infer(  # type: ignore[override]
        self,
        images: ImageInput | list[ImageInput],
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        max_candidates: int | None = None,
        class_agnostic_nms: bool | None = None,
    ) -> list[ObjectDetectionResponse]:
        return super().infer(
            images,
            confidence=confidence,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            max_candidates=max_candidates,
            class_agnostic_nms=class_agnostic_nms,
        )

    def inference_parameters(  # type: ignore[override]
        self,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
        max_candidates: int | None = None,
        class_agnostic_nms: bool | None = None,
    ) -> DetectionParams:
        s = self.settings
        return DetectionParams(
            confidence=_unit("confidence", s.confidence if confidence is None else confidence),
            iou_threshold=_unit("iou_threshold", s.iou_threshold if iou_threshold is None else iou_threshold),
            max_detections=_positive_int(
                "max_detections", s.max_detections if max_detections is None else max_detections
            ),
            max_candidates=_positive_int(
                "max_candidates", s.max_candidates if max_candidates is None else max_candidates
            ),
            class_agnostic_nms=bool(s.class_agnostic_nms if class_agnostic_nms is None else class_agnostic_nms),
        )

    def load_image(self, image: ImageInput) -> np.ndarray:
        return load_image(image, auto_orient=self.preprocessing.auto_orient)

    def preprocess(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[ImageMeta]]:
        """Batch tensor (a view of a per-thread buffer, valid until this thread's next call)."""
        n = len(images)
        width, height = self.input_size
        local = self._local
        staging = getattr(local, "staging", None)
        if staging is None or staging.shape[0] < n:
            staging = local.staging = np.empty((n, height, width, 3), dtype=np.uint8)
        tensor = getattr(local, "tensor", None)
        if tensor is None or tensor.shape[0] < n:
            tensor = local.tensor = np.empty((n, 3, height, width), dtype=self.input_dtype)
        return preprocess_batch(images, self.preprocessing, self.input_size, staging, tensor, self.input_dtype)

    def postprocess(
        self, outputs: list[np.ndarray], metas: list[ImageMeta], params: DetectionParams
    ) -> list[Detections]:
        raw = outputs[0]
        if raw.ndim != 3 or raw.shape[1] - 4 < self.num_classes:
            raise ModelError(f"{self.model_id}: output shape {raw.shape} does not fit 4 + {self.num_classes} classes")
        results = []
        for i, meta in enumerate(metas):
            boxes, scores, class_ids = decode_yolov8(raw[i], self.num_classes, params.confidence, params.max_candidates)
            keep = non_max_suppression(
                boxes,
                scores,
                None if params.class_agnostic_nms else class_ids,
                params.iou_threshold,
                params.max_detections,
            )
            results.append(Detections(map_to_source(boxes[keep], meta), scores[keep], class_ids[keep]))
        return results

    def make_response(self, predictions: list[Detections], metas: list[ImageMeta]) -> list[ObjectDetectionResponse]:
        names = self.class_names
        responses = []
        for det, meta in zip(predictions, metas, strict=True):
            b = det.boxes
            widths = (b[:, 2] - b[:, 0]).tolist()
            heights = (b[:, 3] - b[:, 1]).tolist()
            xs = ((b[:, 0] + b[:, 2]) / 2).tolist()
            ys = ((b[:, 1] + b[:, 3]) / 2).tolist()
            preds = [
                ObjectDetectionPrediction.model_construct(
                    x=x,
                    y=y,
                    width=w,
                    height=h,
                    confidence=c,
                    class_name=names[k],
                    class_id=k,
                    detection_id=str(uuid.uuid4()),
                )
                for x, y, w, h, c, k in zip(
                    xs, ys, widths, heights, det.scores.tolist(), det.class_ids.tolist(), strict=True
                )
            ]
            responses.append(
                ObjectDetectionResponse.model_construct(
                    predictions=preds, image=ImageDimensions.model_construct(width=meta.width, height=meta.height)
                )
            )
        return responses
