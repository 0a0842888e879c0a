"""Florence-2's task tokens and the parsing of its answers (``<loc_N>`` tokens) into pixels.

Florence-2 writes locations as tokens ``<loc_0>`` ... ``<loc_999>``: the image is cut into 1000
bins per axis and a coordinate is the bin's index. A bin's centre in pixels is
``(N + 0.5) * size / 1000`` (Microsoft's ``dequantize``). transformers' native post-processor casts
that to an integer; here coordinates stay floats (a truncation moves a box by up to a pixel for
nothing). The answer's shapes are Roboflow's (transformers'): a dict keyed by the task token, with
``bboxes``/``labels``, ``quad_boxes``/``labels``, ``polygons``/``labels``, or a string.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

BINS = 1000

# task token -> how its answer is parsed (transformers' Florence2Processor table)
TASK_PARSING: dict[str, str] = {
    "<OCR>": "pure_text",
    "<OCR_WITH_REGION>": "ocr",
    "<CAPTION>": "pure_text",
    "<DETAILED_CAPTION>": "pure_text",
    "<MORE_DETAILED_CAPTION>": "pure_text",
    "<OD>": "description_with_bboxes",
    "<DENSE_REGION_CAPTION>": "description_with_bboxes",
    "<CAPTION_TO_PHRASE_GROUNDING>": "phrase_grounding",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "polygons",
    "<REGION_TO_SEGMENTATION>": "polygons",
    "<OPEN_VOCABULARY_DETECTION>": "description_with_bboxes_or_polygons",
    "<REGION_TO_CATEGORY>": "pure_text",
    "<REGION_TO_DESCRIPTION>": "pure_text",
    "<REGION_TO_OCR>": "pure_text",
    "<REGION_PROPOSAL>": "bboxes",
}
# tasks whose answer is boxes, usable as detections
BOX_TASKS = ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>", "<CAPTION_TO_PHRASE_GROUNDING>")

_LOC = re.compile(r"<loc_(\d+)>")
_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_PHRASE_END = r"(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)"
_OCR = re.compile(r"(.+?)" + r"<loc_(\d+)>" * 8)


def task_of(prompt: str) -> str:
    """The task token a prompt starts with (Roboflow: everything up to the first ``>``)."""
    return prompt.split(">")[0] + ">"


def dequantize(bins: list[int], size: tuple[int, int]) -> list[float]:
    """Alternating x, y bin indices -> pixel coordinates of the bins' centres."""
    width, height = size
    return [(b + 0.5) * (width if i % 2 == 0 else height) / BINS for i, b in enumerate(bins)]


def quantize(value: float) -> int:
    """A normalised coordinate (0..1) -> its ``<loc_N>`` index, as Roboflow's region prompts do."""
    return int(min(max(round(value * BINS), 0), BINS - 1))


def region_prompt(task: str, box: tuple[float, float, float, float], size: tuple[int, int]) -> str:
    """``<REGION_TO_...>`` prompt for a pixel box (x1, y1, x2, y2)."""
    width, height = size
    x1, y1, x2, y2 = box
    locs = (quantize(x1 / width), quantize(y1 / height), quantize(x2 / width), quantize(y2 / height))
    return task + "".join(f"<loc_{n}>" for n in locs)


def _clean(text: str) -> str:
    return text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")


def _phrase(chunk: str) -> str | None:
    match = re.search(r"^\s*(.*?)" + _PHRASE_END, chunk)
    return None if match is None else match.group(1).strip().encode("ascii", "ignore").decode("ascii")


def _boxes(text: str, size: tuple[int, int], allow_empty: bool) -> tuple[list[list[float]], list[str]]:
    pattern = r"((?:<loc_\d+>){4,})" if allow_empty else r"([^<]+(?:<loc_\d+>){4,})"
    boxes: list[list[float]] = []
    labels: list[str] = []
    for chunk in re.findall(pattern, text):
        chunk = chunk.replace("<ground>", "", 1).replace("<obj>", "", 1)
        label = _phrase(chunk)
        if label is None:
            continue
        for match in _BOX.finditer(chunk):
            boxes.append(dequantize([int(g) for g in match.groups()], size))
            labels.append(label)
    return boxes, labels


def _grounding(text: str, size: tuple[int, int]) -> tuple[list[list[float]], list[str]]:
    return _boxes(text, size, allow_empty=False)


def _polygons(text: str, size: tuple[int, int], allow_empty: bool) -> tuple[list[list[list[float]]], list[str]]:
    tokens = r"(?:<loc_\d+>|<sep>|<poly>|</poly>)"
    pattern = rf"({tokens}{{4,}})" if allow_empty else rf"([^<]+{tokens}{{4,}})"
    polygons: list[list[list[float]]] = []
    labels: list[str] = []
    for chunk in re.findall(pattern, text):
        stripped = re.sub(r"^<loc_\d+>", "", chunk, count=1)
        match = re.search(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)", stripped)
        if match is None:
            continue
        label = match.group(1).strip()
        instances = re.findall(r"<poly>(.*?)</poly>", chunk) if "<poly>" in chunk and "</poly>" in chunk else [chunk]
        for instance in instances:
            rings = []
            for part in re.findall(r"((?:<loc_\d+>)+)(?:<sep>|$)", instance):
                bins = [int(n) for n in _LOC.findall(part)]
                if len(bins) % 2:
                    bins = bins[:-1]  # an odd count: the last x has no y
                rings.append(dequantize(bins, size))
            if rings:
                polygons.append(rings)
                labels.append(label)
    return polygons, labels


def parse_answer(text: str, task: str, size: tuple[int, int]) -> dict[str, Any]:
    """Florence-2's decoded answer (special tokens kept) -> ``{task: parsed}`` in pixels of ``size``."""
    kind = TASK_PARSING.get(task, "pure_text")
    text = _clean(text)
    answer: Any
    if kind == "pure_text":
        answer = text.strip()
    elif kind in ("description_with_bboxes", "bboxes"):
        boxes, labels = _boxes(text, size, allow_empty=kind == "bboxes")
        answer = {"bboxes": boxes, "labels": labels}
    elif kind == "phrase_grounding":
        boxes, labels = _grounding(text, size)
        answer = {"bboxes": boxes, "labels": labels}
    elif kind == "ocr":
        quads, texts = [], []
        for content, *bins in _OCR.findall(text):
            quads.append(dequantize([int(b) for b in bins], size))
            texts.append(content.strip())
        answer = {"quad_boxes": quads, "labels": texts}
    elif kind == "polygons":
        polygons, labels = _polygons(text, size, allow_empty=True)
        answer = {"polygons": polygons, "labels": labels}
    else:  # description_with_bboxes_or_polygons
        if "<poly>" in text:
            polygons, labels = _polygons(text, size, allow_empty=False)
            answer = {"bboxes": [], "bboxes_labels": [], "polygons": polygons, "polygons_labels": labels}
        else:
            boxes, labels = _boxes(text, size, allow_empty=False)
            answer = {"bboxes": boxes, "bboxes_labels": labels, "polygons": [], "polygons_labels": []}
    return {task: answer}


def class_id_of(label: str) -> int:
    """Roboflow's ``vlm_as_detector`` class id of a free-text label: 4 digits of its md5."""
    return int(hashlib.md5(label.encode("utf-8"), usedforsecurity=False).hexdigest(), 16) % 10_000


def answer_predictions(response: Any) -> list[dict[str, Any]] | None:
    """A box-shaped answer (``<OD>``, grounding, region proposals, open-vocabulary detection) as
    Roboflow object-detection predictions with confidence 1.0 (its ``vlm_as_detector``), else None."""
    if not isinstance(response, dict) or len(response) != 1:
        return None
    ((task, body),) = response.items()
    if (task not in BOX_TASKS and task != "<OPEN_VOCABULARY_DETECTION>") or not isinstance(body, dict):
        return None
    boxes = body.get("bboxes") or []
    labels: list[str] = list(body.get("labels") or body.get("bboxes_labels") or [])
    names = list(dict.fromkeys(labels))
    rows = []
    for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
        rows.append(
            {
                "x": (x1 + x2) / 2,
                "y": (y1 + y2) / 2,
                "width": x2 - x1,
                "height": y2 - y1,
                "confidence": 1.0,
                "class": label,
                # OVD: the label's index among the answer's classes; else 4 digits of its md5
                "class_id": names.index(label) if task == "<OPEN_VOCABULARY_DETECTION>" else class_id_of(label),
                "detection_id": str(uuid.uuid4()),
            }
        )
    return rows
