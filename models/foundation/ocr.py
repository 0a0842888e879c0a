"""PP-OCR (``pp_ocr``): text boxes and strings in Roboflow's OCR response shape.

``pp_ocr/<det>-<rec>`` runs Roboflow's packages ``pp-ocrv6-det/<det>`` and ``pp-ocrv6-rec/<rec>``
from the package registry; each holds ``inference.onnx`` and ``inference.yml`` (PaddleOCR's export
config: pre-processing, thresholds and, for recognition, the character list). A stage of size
``none`` is skipped: no detector reads the whole image (or region) as one line; no recogniser
gives boxes without text. Per image (or per stream), ``regions`` limits reading to rectangles of
the frame, in source pixels. Reading PaddleOCR's YAML needs PyYAML (``edge-agent[ocr]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, MissingExtraError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.engines.onnx import OnnxEngine
from edge_agent.models.foundation import ocr_steps
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.ocr_steps import DetConfig, RecConfig
from edge_agent.models.maths.predictions import Prediction, TextDetections
from edge_agent.models.tasks.params import unit_interval

WEIGHTS_FILE = "inference.onnx"
CONFIG_FILE = "inference.yml"
DET_PACKAGE = "pp-ocrv6-det"
REC_PACKAGE = "pp-ocrv6-rec"

Region = tuple[float, float, float, float]


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise MissingExtraError("pp_ocr (reading inference.yml)", "ocr", "PyYAML") from None
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelArtifactsError(path, f"cannot be read as YAML ({exc})") from None
    if not isinstance(content, dict):
        raise ModelArtifactsError(path, "is not a YAML mapping")
    return content


def _ops(content: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ops = (content.get("PreProcess") or {}).get("transform_ops") or []
    out: dict[str, dict[str, Any]] = {}
    for op in ops if isinstance(ops, list) else []:
        if isinstance(op, dict) and len(op) == 1:
            name, value = next(iter(op.items()))
            out[str(name)] = value if isinstance(value, dict) else {}
    return out


def _number(value: Any, where: Path, key: str) -> float:
    if isinstance(value, str) and "/" in value:
        numerator, _, denominator = value.partition("/")
        try:
            return float(numerator) / float(denominator)
        except (ValueError, ZeroDivisionError):
            pass
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelArtifactsError(where, f"{key} {value!r} is not a number") from None


def det_config(path: Path) -> DetConfig:
    content = _load_yaml(path)
    ops = _ops(content)
    resize = ops.get("DetResizeForTest", {})
    norm = ops.get("NormalizeImage", {})
    post = content.get("PostProcess") or {}
    defaults = DetConfig()
    try:
        return DetConfig(
            limit_side_len=int(resize.get("limit_side_len", defaults.limit_side_len)),
            limit_type=str(resize.get("limit_type", defaults.limit_type)),
            mean=tuple(float(v) for v in norm.get("mean", defaults.mean)),  # type: ignore[arg-type]
            std=tuple(float(v) for v in norm.get("std", defaults.std)),  # type: ignore[arg-type]
            scale=_number(norm.get("scale", defaults.scale), path, "NormalizeImage.scale"),
            rgb=str(ops.get("DecodeImage", {}).get("img_mode", "BGR")).upper() == "RGB",
            thresh=float(post.get("thresh", defaults.thresh)),
            box_thresh=float(post.get("box_thresh", defaults.box_thresh)),
            unclip_ratio=float(post.get("unclip_ratio", defaults.unclip_ratio)),
            max_candidates=int(post.get("max_candidates", defaults.max_candidates)),
        )
    except (TypeError, ValueError) as exc:
        raise ModelArtifactsError(path, f"unusable detection settings ({exc})") from None


def rec_config(path: Path) -> RecConfig:
    content = _load_yaml(path)
    shape = _ops(content).get("RecResizeImg", {}).get("image_shape")
    characters = (content.get("PostProcess") or {}).get("character_dict")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ModelArtifactsError(path, "PreProcess RecResizeImg.image_shape [channels, height, width] is required")
    if not isinstance(characters, list) or not characters:
        raise ModelArtifactsError(path, "PostProcess.character_dict (the list of characters) is required")
    return RecConfig(characters=tuple(str(c) for c in characters), height=int(shape[1]), width=int(shape[2]))


def check_regions(value: Any) -> tuple[Region, ...]:
    try:
        regions = tuple(tuple(float(v) for v in r) for r in value)
    except (TypeError, ValueError):
        raise InvalidInputError("regions must be a list of [x1, y1, x2, y2] rectangles in pixels") from None
    for r in regions:
        if len(r) != 4 or not (r[0] < r[2] and r[1] < r[3]):
            raise InvalidInputError(f"region {list(r)} must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
    return regions  # type: ignore[return-value]


@dataclass(frozen=True)
class OCRParams:
    """The request options of every OCR family (PP-OCR, TrOCR, DocTR, EasyOCR)."""

    confidence: float | None
    regions: tuple[Region, ...] | None


def ocr_parameters(confidence: Any = None, regions: Any = None) -> OCRParams:
    """An OCR family's request options, checked (confidence in [0, 1], regions as rectangles)."""
    return OCRParams(
        None if confidence is None else unit_interval("confidence", confidence),
        None if regions is None else check_regions(regions),
    )


class PPOCRModel(FoundationModel):
    stream_options = ("regions",)

    def __init__(
        self,
        model_id: str,
        det_dir: Path | None,
        rec_dir: Path | None,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "ocr", "pp_ocr")
        self.settings = settings
        self.det = self.rec = None
        self.det_config = det_config(det_dir / CONFIG_FILE) if det_dir else None
        self.rec_config = rec_config(rec_dir / CONFIG_FILE) if rec_dir else None
        if det_dir is not None:
            self.det = OnnxEngine(det_dir / WEIGHTS_FILE, f"{model_id}/det", settings, status)
        if rec_dir is not None:
            self.rec = OnnxEngine(rec_dir / WEIGHTS_FILE, f"{model_id}/rec", settings, status)
        self.max_batch_size = settings.max_batch_size

    @property
    def providers(self) -> list[str]:
        return (self.det or self.rec).providers if (self.det or self.rec) else []  # type: ignore[union-attr]

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, regions: Sequence[Sequence[float]] | None = None
    ) -> OCRParams:
        return ocr_parameters(confidence, regions)

    # FoundationModel.predict_chunk is replaced: images of different sizes are read one by one.
    def predict_chunk(
        self, images: list[np.ndarray], options: list[dict[str, Any]], params: OCRParams
    ) -> list[Prediction]:
        out: list[Prediction] = []
        for image, option in zip(images, options, strict=True):
            regions = check_regions(option["regions"]) if "regions" in option else params.regions
            prediction = self.read(image, regions)
            out.append(prediction if params.confidence is None else prediction.filter_confidence(params.confidence))
        return out

    def _windows(self, image: np.ndarray, regions: tuple[Region, ...] | None) -> list[tuple[int, int, int, int]]:
        height, width = image.shape[:2]
        if not regions:
            return [(0, 0, width, height)]
        windows = []
        for x1, y1, x2, y2 in regions:
            box = (max(0, int(x1)), max(0, int(y1)), min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))
            if box[2] > box[0] and box[3] > box[1]:
                windows.append(box)
        return windows

    def read(self, image: np.ndarray, regions: tuple[Region, ...] | None = None) -> TextDetections:
        """Text boxes and strings of one BGR image (optionally only inside ``regions``)."""
        height, width = image.shape[:2]
        quads, scores = [], []
        for x0, y0, x1, y1 in self._windows(image, regions):
            window = image[y0:y1, x0:x1]
            if self.det is None:
                found = np.array([[[0, 0], [x1 - x0, 0], [x1 - x0, y1 - y0], [0, y1 - y0]]], np.float32)
                found_scores = np.ones(1, np.float32)
            else:
                assert self.det_config is not None
                (prob,) = self.det.run(ocr_steps.det_input(window, self.det_config))[:1]
                found, found_scores = ocr_steps.detect_boxes(prob[0, 0], window.shape[:2], self.det_config)
            if len(found):
                found = found + np.array([x0, y0], np.float32)
                quads.append(found)
                scores.append(found_scores)
        if not quads:
            empty = np.zeros(0, np.float32)
            return TextDetections(
                np.zeros((0, 4)),
                empty,
                (),
                empty,
                np.zeros(0, np.int64),
                (width, height),
                np.zeros((0, 4, 2), np.float32),
            )
        all_quads, all_scores = np.concatenate(quads), np.concatenate(scores)
        order, line_ids = ocr_steps.reading_order(all_quads)
        all_quads, all_scores = all_quads[order], all_scores[order]
        texts, text_scores = self._recognise(image, all_quads)
        boxes = np.stack(
            [
                all_quads[:, :, 0].min(1),
                all_quads[:, :, 1].min(1),
                all_quads[:, :, 0].max(1),
                all_quads[:, :, 1].max(1),
            ],
            axis=1,
        ).astype(np.float64)
        return TextDetections(
            boxes=boxes,
            confidences=all_scores,
            texts=texts,
            text_confidences=text_scores,
            line_ids=line_ids,
            image_size=(width, height),
            polygons=all_quads,
        )

    def _recognise(self, image: np.ndarray, quads: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
        if self.rec is None:
            return tuple("" for _ in quads), np.zeros(len(quads), np.float32)
        config = self.rec_config
        assert config is not None
        crops = [ocr_steps.crop_quad(image, q) for q in quads]
        # Similar widths share a batch, so little of it is padding.
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / max(crops[i].shape[0], 1))
        texts: list[str] = [""] * len(crops)
        scores = np.zeros(len(crops), np.float32)
        step = config.batch_size if self.rec.dynamic_batch else self.rec.max_batch_size
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            (probs,) = self.rec.run(ocr_steps.rec_batch([crops[i] for i in chunk], config))[:1]
            for i, (text, score) in zip(chunk, ocr_steps.ctc_decode(probs, config.characters), strict=True):
                texts[i], scores[i] = text, score
        return tuple(texts), scores

    # Model's abstract steps (predict_chunk above does the work)
    def preprocess(self, images: list[np.ndarray]) -> tuple[Any, list[Any]]:
        return images, [None] * len(images)

    def run(self, inputs: Any) -> Any:
        return inputs

    def postprocess(self, outputs: Any, metas: list[Any], params: Any) -> list[Prediction]:
        return [self.read(image) for image in outputs]

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import response_of

        return response_of(prediction)

    def close(self) -> None:
        for engine in (self.det, self.rec):
            if engine is not None:
                engine.close()
