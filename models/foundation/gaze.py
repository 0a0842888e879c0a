"""Gaze (L2CS-Net): yaw and pitch of each face's gaze, in radians.

``gaze/L2CS`` reads Roboflow's legacy ``L2CSNet_gaze360_resnet50_90bins.onnx`` (MODEL_CACHE_DIR/gaze/L2CS/
in every Roboflow version that had gaze, or its slug directory), ``l2cs-net/rn50`` the current
stack's package (``weights.onnx``). Roboflow exports the bin decoding into the graph (softmax over
90 bins, 4 degrees each from -180, in radians): a graph that outputs the 90 raw bins instead is
decoded here with the same arithmetic (:func:`decode_bins`).

Roboflow removed gaze in 2026 together with its MediaPipe face detector. Faces here come from
GAZE_FACE_DETECTOR_MODEL_ID, any detector model id (its keypoints, when it has them, are the
landmarks), or by default from OpenCV's frontal-face Haar cascade shipped with edge-agent
(:mod:`.haar_cascade`; its landmarks are the right and left eye centres where OpenCV's eye
cascade finds one on each side, MediaPipe's first two landmarks; its confidence is
``n / (n + 3)`` of the ``n`` windows merged into the face, the cascade having no score);
``face_detection=False`` reads the whole image as one face, as Roboflow's
``do_run_face_detection=false``. Each face crop is resized to 224x224 then 448x448 (Roboflow's
cv2 resize then torchvision Resize), RGB, ImageNet mean and std.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError, ModelLayoutError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.onnx import OnnxEngine
from edge_agent.models.foundation.base import WholeImageModel
from edge_agent.models.foundation.haar_cascade import MIN_NEIGHBORS, HaarFaceFinder
from edge_agent.models.maths.predictions import Detections, Prediction
from edge_agent.models.tasks.model import Model

LEGACY_FILE = "L2CSNet_gaze360_resnet50_90bins.onnx"
PACKAGE_FILE = "weights.onnx"
BINS = 90
DEGREES_PER_BIN = 4.0
OFFSET_DEGREES = -180.0
CROP_SIZE = 224
INPUT_SIZE = 448
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GAZE_MAX_BATCH_SIZE = 8  # Roboflow's GAZE_MAX_BATCH_SIZE


def decode_bins(logits: np.ndarray) -> np.ndarray:
    """(N, 90) bin logits -> (N,) radians: softmax expectation of the bin index, 4 degrees per bin, -180."""
    values = np.asarray(logits, np.float64)
    values = values - values.max(axis=-1, keepdims=True)
    probs = np.exp(values)
    probs /= probs.sum(axis=-1, keepdims=True)
    degrees = DEGREES_PER_BIN * (probs @ np.arange(values.shape[-1], dtype=np.float64)) + OFFSET_DEGREES
    return np.deg2rad(degrees).astype(np.float32)


def face_input(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """One face of a BGR image -> (3, 448, 448) float32: crop, 224 then 448, RGB, ImageNet mean/std."""
    x1, y1, x2, y2 = box
    crop = image[y1:y2, x1:x2]
    crop = cv2.resize(crop, (CROP_SIZE, CROP_SIZE))
    crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    rgb: np.ndarray = crop[:, :, ::-1].astype(np.float32) / 255.0
    normalized = (rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def face_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A float xyxy box -> integer pixel bounds inside the image (Roboflow crops at int origin/size)."""
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return x1, y1, x2, y2


def gaze_vector(yaw: float, pitch: float, length: float) -> tuple[float, float]:
    """Image-plane (dx, dy) of a gaze for drawing: L2CS's draw_gaze (yaw turns left/right, pitch up/down)."""
    return -length * float(np.sin(yaw) * np.cos(pitch)), -length * float(np.sin(pitch))


@dataclass(frozen=True)
class GazeDetections:
    """One image's faces (source pixels) with their gaze: ``yaw`` and ``pitch`` (K,) radians.

    ``landmarks`` (K, L, 2) pixels when the face detector gives keypoints. ``face_ms`` and
    ``gaze_ms`` are the two stages' times for this image (Roboflow always reports them null).
    """

    boxes: np.ndarray
    confidences: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    image_size: tuple[int, int]
    landmarks: np.ndarray | None = None
    face_ms: float | None = None
    gaze_ms: float | None = None
    task_type: str = "gaze-detection"

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def class_ids(self) -> np.ndarray:
        return np.zeros(len(self), np.int64)

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("face",)

    def filter_confidence(self, threshold: float) -> GazeDetections:
        keep = np.flatnonzero(self.confidences >= threshold)
        if keep.size == len(self):
            return self
        return replace(
            self,
            boxes=self.boxes[keep],
            confidences=self.confidences[keep],
            yaw=self.yaw[keep],
            pitch=self.pitch[keep],
            landmarks=None if self.landmarks is None else self.landmarks[keep],
        )

    def rows(self, nulls: bool = True) -> list[dict[str, Any]]:
        """One ``{face, yaw, pitch}`` per face; ``nulls=False`` leaves out Roboflow's always-null fields
        (stream messages: their ``tracker_id`` is a tracker's integer when present)."""
        width, height = self.image_size
        out = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            face: dict[str, Any] = {
                "x": (x1 + x2) / 2,
                "y": (y1 + y2) / 2,
                "width": x2 - x1,
                "height": y2 - y1,
                "confidence": float(self.confidences[i]),
                "class": "face",
                "class_confidence": None,
                "class_id": 0,
                "tracker_id": None,
                "detection_id": str(uuid.uuid4()),
                "parent_id": None,
                "landmarks": [],
            }
            if self.landmarks is not None and np.isfinite(self.landmarks[i]).all():
                # Roboflow: int pixels, clipped to the image (NaN: the face detector found none)
                face["landmarks"] = [
                    {"x": int(min(max(x, 0), width - 1)), "y": int(min(max(y, 0), height - 1))}
                    for x, y in self.landmarks[i].tolist()
                ]
            if not nulls:
                face = {k: v for k, v in face.items() if v is not None}
            out.append({"face": face, "yaw": float(self.yaw[i]), "pitch": float(self.pitch[i])})
        return out

    def to_response(self) -> dict[str, Any]:
        width, height = self.image_size
        return {"predictions": self.rows(nulls=False), "image": {"width": width, "height": height}}

    def roboflow_response(self) -> dict[str, Any]:
        """``/gaze/gaze_detection``'s body for one image, with the stage times filled in (seconds)."""
        face_s = None if self.face_ms is None else self.face_ms / 1000.0
        gaze_s = None if self.gaze_ms is None else self.gaze_ms / 1000.0
        total = (face_s or 0.0) + (gaze_s or 0.0)
        return {"predictions": self.rows(), "time": total, "time_face_det": face_s, "time_gaze_det": gaze_s}

    def draw_overlay(self, image: np.ndarray) -> None:
        """An arrow from each face's centre along its gaze, in place (boxes are drawn by annotate)."""
        thickness = max(2, round(max(image.shape[:2]) / 320))
        for box, yaw, pitch in zip(self.boxes, self.yaw.tolist(), self.pitch.tolist(), strict=True):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            dx, dy = gaze_vector(yaw, pitch, float(box[2] - box[0]))
            if not np.isfinite([cx, cy, dx, dy]).all():
                continue
            start = (round(cx), round(cy))
            cv2.arrowedLine(
                image, start, (round(cx + dx), round(cy + dy)), (0, 0, 255), thickness, cv2.LINE_AA, 0, 0.18
            )


@dataclass(frozen=True)
class GazeParams:
    confidence: float | None
    face_detection: bool


class GazeModel(WholeImageModel):
    """L2CS-Net on ONNX Runtime, on the faces of a face detector model, of the Haar cascade when
    there is none (``face_finder``), or on the whole image."""

    def __init__(
        self,
        model_id: str,
        weights: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
        face_detector: Model | None = None,
        face_finder: HaarFaceFinder | None = None,
    ) -> None:
        super().__init__(model_id, "gaze-detection", "l2cs")
        self.directory = weights.parent
        self.engine = OnnxEngine(weights, f"{model_id}/l2cs", settings, status)
        spec = self.engine.input
        if spec.rank != 4 or spec.dim(1) not in (3, None):
            raise ModelLayoutError(model_id, "L2CS-Net", "input 0 of shape (batch, 3, 448, 448)", [spec.describe()])
        if len(self.engine.outputs) < 2:
            raise ModelLayoutError(
                model_id,
                "L2CS-Net",
                "two outputs (yaw, pitch), radians or 90 bins each",
                [o.describe() for o in self.engine.outputs],
            )
        names = [o.name for o in self.engine.outputs]
        # Roboflow's export names them output_yaw and output_pitch; otherwise L2CS's order (yaw, pitch)
        self._yaw = names.index("output_yaw") if "output_yaw" in names else 0
        self._pitch = names.index("output_pitch") if "output_pitch" in names else 1
        self.face_detector = face_detector
        self.face_finder = face_finder
        self.max_batch_size = settings.max_batch_size
        self._step = min(GAZE_MAX_BATCH_SIZE, self.engine.max_batch_size)

    @property
    def providers(self) -> list[str]:
        return self.engine.providers

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, face_detection: bool = True
    ) -> GazeParams:
        if face_detection and self.face_detector is None and self.face_finder is None:
            raise InvalidInputError(
                f"{self.model_id} needs faces: set GAZE_FACE_DETECTOR_MODEL_ID to a face detector's model id, "
                f"or read the whole image as the face (--no-face-detection, face_detection=False)"
            )
        return GazeParams(confidence, bool(face_detection))

    def angles(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(yaw, pitch) radians of a (N, 3, 448, 448) batch of faces."""
        yaws: list[np.ndarray] = []
        pitches: list[np.ndarray] = []
        for start in range(0, len(batch), self._step):
            outputs = self.engine.run(batch[start : start + self._step])
            for index, into in ((self._yaw, yaws), (self._pitch, pitches)):
                value = np.asarray(outputs[index], np.float32)
                if value.ndim == 2 and value.shape[1] == BINS:
                    into.append(decode_bins(value))
                else:
                    into.append(value.reshape(-1))
        return np.concatenate(yaws), np.concatenate(pitches)

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        started = time.perf_counter()
        found: list[Any]
        if params.face_detection and self.face_detector is not None:
            kwargs = {} if params.confidence is None else {"confidence": params.confidence}
            found = self.face_detector.predict(images, **kwargs)
        elif params.face_detection:
            assert self.face_finder is not None
            found = [self._haar_faces(image, params.confidence) for image in images]
        else:
            found = [None] * len(images)
        face_ms = (time.perf_counter() - started) * 1000.0 / max(1, len(images))
        crops, owners, kept = [], [], []
        for n, (image, detections) in enumerate(zip(images, found, strict=True)):
            height, width = image.shape[:2]
            if detections is None:
                boxes = np.array([[0, 0, width, height]], np.float64)
                scores = np.ones(1, np.float32)
                keypoints = None
            elif isinstance(detections, Detections):
                boxes, scores, keypoints = detections.boxes, detections.confidences, detections.keypoints
            else:
                raise InvalidInputError(f"the face detector gave {type(detections).__name__}, not boxes")
            rows = []
            for i, box in enumerate(boxes):
                bounds = face_box(box, width, height)
                if bounds is not None:
                    crops.append(face_input(image, bounds))
                    owners.append(n)
                    rows.append(i)
            kept.append((boxes[rows], scores[rows], None if keypoints is None else keypoints[rows, :, :2]))
        started = time.perf_counter()
        if crops:
            yaw, pitch = self.angles(np.stack(crops))
        else:
            yaw = pitch = np.zeros(0, np.float32)
        gaze_ms = (time.perf_counter() - started) * 1000.0 / max(1, len(images))
        owner = np.asarray(owners, np.int64)
        out: list[Prediction] = []
        for n, (image, (boxes, scores, landmarks)) in enumerate(zip(images, kept, strict=True)):
            mine = owner == n
            out.append(
                GazeDetections(
                    boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
                    confidences=np.asarray(scores, np.float32),
                    yaw=yaw[mine],
                    pitch=pitch[mine],
                    image_size=(image.shape[1], image.shape[0]),
                    landmarks=landmarks,
                    face_ms=face_ms if params.face_detection else None,
                    gaze_ms=gaze_ms,
                )
            )
        return out

    def _haar_faces(self, image: np.ndarray, confidence: float | None) -> Detections:
        assert self.face_finder is not None
        faces = self.face_finder.find(image)
        scores = (faces.neighbours / (faces.neighbours + MIN_NEIGHBORS)).astype(np.float32)
        eyes = np.concatenate([faces.eyes, np.ones((*faces.eyes.shape[:2], 1))], axis=2)  # (K, 2, x y conf)
        detections = Detections(
            boxes=faces.boxes,
            confidences=scores,
            class_ids=np.zeros(len(scores), np.int64),
            class_names=("face",),
            image_size=(image.shape[1], image.shape[0]),
            keypoints=eyes,
        )
        return detections if confidence is None else detections.select(scores >= confidence)

    def close(self) -> None:
        self.engine.close()
        if self.face_detector is not None:
            self.face_detector.close()
