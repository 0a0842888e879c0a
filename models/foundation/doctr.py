"""DocTR (``doctr/default``; current stack ``doctr-dbnet-rn50/crnn-vgg16``): words, lines and blocks.

Roboflow's legacy class ignores the variant and loads two core models, ``doctr_det/db_resnet50_v2``
and ``doctr_rec/crnn_vgg16_bn_v2`` (a ``model.pt`` state dict each); its current stack's package
holds ``detection_weights.pt``, ``recognition_weights.pt`` and ``config.json``. Both load into
:mod:`.doctr_network`. The steps follow doctr's ``ocr_predictor`` on straight pages:

1. the page (RGB) is resized to fit 1024x1024 keeping its aspect ratio, padded symmetrically,
   normalised with DBNet's mean/std; probability > 0.3 is text;
2. each connected region's bounding box is kept when its mean probability is >= 0.1, grown by
   ``area * 1.5 / perimeter`` on every side (doctr's unclip of a rectangle) and mapped back to
   the page;
3. each word crop is resized to 32x128 keeping its aspect ratio (padded right/bottom), normalised
   with the CRNN's mean/std, read by greedy CTC (blank = last class; confidence = the smallest
   best-class probability over the steps);
4. words are grouped into lines (top to bottom, left to right) and one block, as doctr's document
   builder does without block resolution; ``result`` is the page rendered (words joined by spaces,
   lines by new lines).

Roboflow's current stack forces every confidence to 1.0; here a word's confidence is its
detection objectness and a line's or block's the mean of its words'.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import WholeImageModel
from edge_agent.models.foundation.ocr import OCRParams, check_regions, ocr_parameters
from edge_agent.models.foundation.ocr_steps import reading_order
from edge_agent.models.foundation.torch_support import run_on_numpy
from edge_agent.models.maths.predictions import Prediction, TextDetections

DET_SIZE = 1024
DET_MEAN = (0.798, 0.785, 0.772)
DET_STD = (0.264, 0.2749, 0.287)
BIN_THRESH = 0.3
BOX_THRESH = 0.1
UNCLIP_RATIO = 1.5
MIN_BOX = 2
REC_HEIGHT, REC_WIDTH = 32, 128
REC_MEAN = (0.694, 0.695, 0.693)
REC_STD = (0.299, 0.296, 0.301)
LEGACY_DET = ("doctr_det", "db_resnet50_v2")
LEGACY_REC = ("doctr_rec", "crnn_vgg16_bn_v2")
LEGACY_FILE = "model.pt"
PACKAGE_FILES = ("detection_weights.pt", "recognition_weights.pt")

_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_CURRENCY = "£€¥¢฿"
_LATIN = _DIGITS + _LETTERS + _PUNCTUATION
#: doctr's vocabularies by size: legacy_french (123, crnn_vgg16_bn v1) and french (126, Roboflow's
#: "doctr_vocab_127" = 126 characters + the CTC blank)
VOCABULARIES = {
    123: _LATIN + "°" + "àâéèêëîïôùûçÀÂÉÈËÎÏÔÙÛÇ" + _CURRENCY,
    126: _LATIN + "°" + _CURRENCY + "àâéèêëîïôùûüçÀÂÉÈÊËÎÏÔÙÛÜÇ",
}


def fit_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) of a page resized to fit a target x target square, aspect ratio kept (doctr's Resize)."""
    if height > width:
        return target, max(int(target * width / height), 1)
    return max(int(target * height / width), 1), target


def det_input(image: np.ndarray) -> tuple[np.ndarray, tuple[float, int, int]]:
    """(3, 1024, 1024) float32 and (scale, top pad, left pad) to map boxes back to the page."""
    height, width = image.shape[:2]
    new_h, new_w = fit_size(height, width, DET_SIZE)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32) / 255
    canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.float32)
    top, left = (DET_SIZE - new_h) // 2, (DET_SIZE - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    normalized = (canvas - np.asarray(DET_MEAN, np.float32)) / np.asarray(DET_STD, np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)), (new_w / width, top, left)


def prob_to_boxes(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text boxes (K, 4) xyxy in map pixels and their objectness, from a probability map."""
    bitmap = (prob > BIN_THRESH).astype(np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = prob.shape
    boxes, scores = [], []
    for contour in contours:
        span = contour[:, 0].max(axis=0) - contour[:, 0].min(axis=0)
        if np.any(span < MIN_BOX):
            continue
        x, y, w, h = cv2.boundingRect(contour)
        score = float(prob[y : y + h + 1, x : x + w + 1].mean())
        if score < BOX_THRESH:
            continue
        grow = w * h * UNCLIP_RATIO / (2 * (w + h))
        x0, y0 = round(x - grow), round(y - grow)
        x1, y1 = round(x + w + grow), round(y + h + grow)
        if x1 - x0 + 1 < MIN_BOX or y1 - y0 + 1 < MIN_BOX:
            continue
        boxes.append([max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)])
        scores.append(score)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float32)


def to_page(boxes: np.ndarray, mapping: tuple[float, int, int], width: int, height: int) -> np.ndarray:
    """Boxes of the padded 1024 canvas -> page pixels (padding removed, resize undone, clipped)."""
    scale, top, left = mapping
    out = (np.asarray(boxes, np.float64) - [left, top, left, top]) / scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def rec_input(crop: np.ndarray) -> np.ndarray:
    """One BGR word crop -> (3, 32, 128): fit keeping the aspect ratio, zero padding right/bottom, CRNN mean/std."""
    height, width = crop.shape[:2]
    if height / width > REC_HEIGHT / REC_WIDTH:
        new_h, new_w = REC_HEIGHT, max(int(REC_HEIGHT * width / height), 1)
    else:
        new_h, new_w = max(int(REC_WIDTH * height / width), 1), REC_WIDTH
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32) / 255
    canvas = np.zeros((REC_HEIGHT, REC_WIDTH, 3), np.float32)
    canvas[:new_h, :new_w] = resized
    normalized = (canvas - np.asarray(REC_MEAN, np.float32)) / np.asarray(REC_STD, np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def ctc_best_path(logits: np.ndarray, vocabulary: str) -> list[tuple[str, float]]:
    """(N, T, len(vocabulary) + 1) logits -> (word, confidence): repeats merged, blanks (last class) dropped."""
    values = np.asarray(logits, np.float64)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    best = probs.argmax(axis=-1)
    blank = len(vocabulary)
    out = []
    for row, path in enumerate(best):
        chars, previous = [], -1
        for k in path.tolist():
            if k != previous and k != blank:
                chars.append(vocabulary[k])
            previous = k
        out.append(("".join(chars), float(probs[row].max(axis=-1).min())))
    return out


@dataclass(frozen=True)
class DocumentText(TextDetections):
    """DocTR's reading of one image: words (boxes, text, objectness) with their line; one block."""

    seconds: float = 0.0

    def _row(self, box: np.ndarray, confidence: float, name: str, class_id: int) -> dict[str, Any]:
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        return {
            "x": x1 + (x2 - x1) // 2,
            "y": y1 + (y2 - y1) // 2,
            "width": x2 - x1,
            "height": y2 - y1,
            "confidence": confidence,
            "class": name,
            "class_confidence": None,
            "class_id": class_id,
            "tracker_id": None,
            "detection_id": str(uuid.uuid4()),
            "parent_id": None,
        }

    def roboflow_response(self) -> dict[str, Any]:
        """Roboflow's current ``/doctr/ocr`` body: ``result`` and words, lines and blocks (int px)."""
        width, height = self.image_size
        rows = [self._row(b, float(c), "word", 2) for b, c in zip(self.boxes, self.confidences.tolist(), strict=True)]
        for line in sorted(set(self.line_ids.tolist())):
            members = self.line_ids == line
            union = np.concatenate([self.boxes[members, :2].min(0), self.boxes[members, 2:].max(0)])
            rows.append(self._row(union, float(self.confidences[members].mean()), "line", 1))
        if len(self):
            union = np.concatenate([self.boxes[:, :2].min(0), self.boxes[:, 2:].max(0)])
            rows.append(self._row(union, float(self.confidences.mean()), "block", 0))
        return {
            "result": self.result,
            "image": {"width": width, "height": height},
            "predictions": rows,
            "time": self.seconds,
            "parent_id": None,
        }


class DocTRModel(WholeImageModel):
    stream_options = ("regions",)

    def __init__(
        self,
        model_id: str,
        det_weights: Path,
        rec_weights: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(model_id, "ocr", "doctr")
        from edge_agent.models.engines.torch_runtime import import_torch
        from edge_agent.models.foundation import doctr_network
        from edge_agent.models.foundation.torch_support import device_and_dtype

        what = f"{model_id} (DocTR)"
        torch = self.torch = import_torch(what)
        self.directory = det_weights.parent
        networks: list[Any] = []
        builders: tuple[tuple[Path, Callable[[Any], Any]], ...] = (
            (det_weights, doctr_network.build_dbnet),
            (rec_weights, doctr_network.build_crnn),
        )
        for path, build in builders:
            try:
                state = doctr_network._strip(torch.load(str(path), map_location="cpu", weights_only=True))
                network = build(state)
                network.load_state_dict(state, strict=True)
            except (OSError, RuntimeError, ValueError, KeyError, AttributeError) as exc:
                raise ModelArtifactsError(path, f"is not a loadable doctr state dict ({exc})") from None
            networks.append(network)
        classes = int(networks[1].linear.weight.shape[0]) - 1
        if classes not in VOCABULARIES:
            raise ModelArtifactsError(
                rec_weights, f"recognises {classes} characters; known doctr vocabularies have {sorted(VOCABULARIES)}"
            )
        self.vocabulary = VOCABULARIES[classes]
        self.device, self.dtype = device_and_dtype(settings, what)
        self.det, self.rec = (n.requires_grad_(False).to(self.device, self.dtype).eval() for n in networks)
        self.max_batch_size = settings.max_batch_size

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, regions: Any = None
    ) -> OCRParams:
        return ocr_parameters(confidence, regions)

    def _run(self, network: Any, batch: np.ndarray) -> np.ndarray:
        return run_on_numpy(self.torch, network, batch, self.device, self.dtype)

    def words(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]:
        """Word boxes (page px), objectness and (text, confidence) of one BGR page."""
        height, width = image.shape[:2]
        tensor, mapping = det_input(image)
        (prob,) = self._run(self.det, tensor[None])
        boxes, scores = prob_to_boxes(prob)
        boxes = to_page(boxes, mapping, width, height)
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, scores = boxes[keep], scores[keep]
        crops = []
        for x1, y1, x2, y2 in np.rint(boxes).astype(int):
            crops.append(rec_input(image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]))
        read: list[tuple[str, float]] = []
        for start in range(0, len(crops), 64):
            read += ctc_best_path(self._run(self.rec, np.stack(crops[start : start + 64])), self.vocabulary)
        return boxes, scores, read

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        out: list[Prediction] = []
        for image, option in zip(images, options, strict=True):
            started = time.perf_counter()
            height, width = image.shape[:2]
            regions = check_regions(option["regions"]) if "regions" in option else params.regions
            windows = (
                [(0, 0, width, height)]
                if not regions
                else [
                    (max(0, int(a)), max(0, int(b)), min(width, int(np.ceil(c))), min(height, int(np.ceil(d))))
                    for a, b, c, d in regions
                ]
            )
            all_boxes, all_scores, all_read = [], [], []
            for x0, y0, x1, y1 in windows:
                if x1 <= x0 or y1 <= y0:
                    continue
                boxes, scores, read = self.words(image[y0:y1, x0:x1])
                all_boxes.append(boxes + np.array([x0, y0, x0, y0], np.float64))
                all_scores.append(scores)
                all_read += read
            boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4))
            scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
            quads = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1)
            order, line_ids = reading_order(quads)
            prediction = DocumentText(
                boxes=boxes[order],
                confidences=scores[order].astype(np.float32),
                texts=tuple(all_read[i][0] for i in order.tolist()),
                text_confidences=np.asarray([all_read[i][1] for i in order.tolist()], np.float32),
                line_ids=line_ids,
                image_size=(width, height),
                seconds=time.perf_counter() - started,
            )
            out.append(prediction if params.confidence is None else prediction.filter_confidence(params.confidence))
        return out
