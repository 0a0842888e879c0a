"""EasyOCR (``easy_ocr/<network>``: english_g2, latin_g2, zh_sim_g2, japanese_g2, korean_g2,
telugu_g2, kannada_g2; current stack ``easy-ocr-<language>/craft``): CRAFT text boxes, read by
EasyOCR's generation-2 recogniser (one architecture, one character list per network).

Roboflow's legacy artifacts are ``craft_mlt_25k.pth`` (detector) and ``weights.pt`` (recogniser)
in ``MODEL_CACHE_DIR/easy_ocr/<variant>/``; the current stack's package holds
``easy-ocr-config.json`` naming its files. Both load into :mod:`.easyocr_network`. The steps are
``easyocr.Reader.readtext``'s with its defaults:

1. the image (RGB; EasyOCR feeds a BGR array unflipped) is scaled so its longer side is at most
   2560, padded to multiples of 32, normalised with ImageNet's mean/std; CRAFT gives region and
   affinity scores at half resolution;
2. regions: region > 0.4 or affinity > 0.4, 4-connected components of >= 10 pixels whose region
   score peaks >= 0.7, the link-only pixels removed, dilated by ``2 sqrt(size min(w, h) / (w h))``,
   their minimum-area rectangles (axis-aligned when nearly square) scaled back to the image;
3. boxes with sides within slope 0.1 of horizontal are merged into lines (centres within half a
   box height, heights within half, gaps under half the height) with a 10 % margin, and kept when
   longer than 20 px; tilted boxes are not read (EasyOCR reads them through a perspective warp);
4. each box (grey) is resized to 64 px high and padded to the batch width by repeating its last
   column, values (x / 255 - 0.5) / 0.5; greedy CTC over blank + the model's characters, confidence
   ``prod(p) ** (2 / sqrt(n))`` of the best probabilities on non-blank steps; a box read with
   confidence < 0.1 is read again with its contrast stretched, the better reading kept. As
   EasyOCR, the network's characters outside its languages' alphabets (and its symbols) get
   probability 0 before the decoding (the others renormalised): a network's languages are the
   package's ``lang_list``, or for the legacy ids Roboflow's workflow map (latin_g2: en la es fr
   it pt de pl nl; japanese_g2: en ja; ...).

The character lists (easyocr 1.7.2's ``config.py`` and ``character/*_char.txt``, Apache-2.0,
JaidedAI) ship in models/builtin/easyocr/.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
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

CANVAS = 2560
TEXT_THRESHOLD, LOW_TEXT, LINK_THRESHOLD = 0.7, 0.4, 0.4
SLOPE_THS, YCENTER_THS, HEIGHT_THS, WIDTH_THS, ADD_MARGIN = 0.1, 0.5, 0.5, 0.5, 0.1
MIN_SIZE = 20
REC_HEIGHT = 64
CONTRAST_THS, ADJUST_CONTRAST = 0.1, 0.5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LEGACY_DETECTOR = "craft_mlt_25k.pth"
LEGACY_RECOGNIZER = "weights.pt"
PACKAGE_CONFIG = "easy-ocr-config.json"
DATA = Path(__file__).resolve().parent.parent / "builtin" / "easyocr"


@dataclass(frozen=True)
class Network:
    """A generation-2 recogniser's outputs: blank + ``characters``; ``symbols`` are always read,
    ``languages`` are the default language codes (their alphabets are read)."""

    characters: str
    symbols: str
    languages: tuple[str, ...]


def _networks() -> dict[str, Network]:
    table = json.loads((DATA / "generation2.json").read_text(encoding="utf-8"))
    return {
        name: Network(entry["characters"], entry["symbols"], tuple(entry["languages"])) for name, entry in table.items()
    }


#: EasyOCR's generation-2 networks (easyocr/config.py), by recognition network name
NETWORKS = _networks()
CHARACTERS = {name: network.characters for name, network in NETWORKS.items()}


@cache
def alphabet(language: str) -> frozenset[str]:
    """The characters of one EasyOCR language code (easyocr's character/<code>_char.txt)."""
    path = DATA / f"{language}_char.txt"
    if "/" in language or not path.is_file():
        known = sorted(p.name[: -len("_char.txt")] for p in DATA.glob("*_char.txt"))
        raise ValueError(f"EasyOCR language {language!r} is not known here; known: {', '.join(known)}")
    return frozenset("".join(path.read_text(encoding="utf-8-sig").splitlines()))


def ignored_classes(network: Network, languages: Iterable[str]) -> np.ndarray:
    """Class indices (1 + character index) of the network's characters outside ``languages``'
    alphabets and its symbols: EasyOCR zeroes their probabilities before decoding."""
    allowed = set(network.symbols).union(*(alphabet(code) for code in languages))
    return np.asarray([1 + i for i, c in enumerate(network.characters) if c not in allowed], np.int64)


def craft_input(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(3, H32, W32) float32 of a BGR image, and the resize ratio (EasyOCR's resize_aspect_ratio)."""
    height, width = image.shape[:2]
    target = min(float(max(height, width)), float(CANVAS))
    ratio = target / max(height, width)
    new_h, new_w = int(height * ratio), int(width * ratio)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    canvas = np.zeros((new_h + (-new_h) % 32, new_w + (-new_w) % 32, 3), np.float32)
    canvas[:new_h, :new_w] = resized
    canvas = (canvas - np.asarray(IMAGENET_MEAN, np.float32) * 255) / (np.asarray(IMAGENET_STD, np.float32) * 255)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), ratio


def craft_boxes(text: np.ndarray, link: np.ndarray) -> list[np.ndarray]:
    """(4, 2) corner boxes (score-map pixels, clockwise from top-left) of CRAFT's two maps."""
    height, width = text.shape
    text_on = (text > LOW_TEXT).astype(np.uint8)
    link_on = (link > LINK_THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(np.clip(text_on + link_on, 0, 1), connectivity=4)
    boxes = []
    for k in range(1, count):
        size = int(stats[k, cv2.CC_STAT_AREA])
        if size < 10 or text[labels == k].max() < TEXT_THRESHOLD:
            continue
        segmap = np.zeros(text.shape, np.uint8)
        segmap[labels == k] = 255
        segmap[(link_on == 1) & (text_on == 0)] = 0
        x, y = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP])
        w, h = int(stats[k, cv2.CC_STAT_WIDTH]), int(stats[k, cv2.CC_STAT_HEIGHT])
        grow = int(math.sqrt(size * min(w, h) / (w * h)) * 2)
        sx, sy = max(x - grow, 0), max(y - grow, 0)
        ex, ey = min(x + w + grow + 1, width), min(y + h + grow + 1, height)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1 + grow, 1 + grow))
        segmap[sy:ey, sx:ex] = cv2.dilate(segmap[sy:ey, sx:ex], kernel)
        points = np.roll(np.array(np.where(segmap != 0)), 1, axis=0).transpose().reshape(-1, 2)
        box = cv2.boxPoints(cv2.minAreaRect(points))
        side_a, side_b = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
        if abs(1 - max(side_a, side_b) / (min(side_a, side_b) + 1e-5)) <= 0.1:  # nearly square: axis-aligned
            left, right = points[:, 0].min(), points[:, 0].max()
            top, bottom = points[:, 1].min(), points[:, 1].max()
            box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float32)
        start = int(box.sum(axis=1).argmin())
        boxes.append(np.roll(box, 4 - start, 0))
    return boxes


def group_lines(polys: list[np.ndarray]) -> list[list[int]]:
    """EasyOCR's group_text_box for horizontal boxes: [x_min, x_max, y_min, y_max] line boxes, margins added."""
    horizontal = []
    for poly in polys:
        p = np.asarray(poly, np.float64).reshape(-1)
        slope_up = (p[3] - p[1]) / max(10.0, p[2] - p[0])
        slope_down = (p[5] - p[7]) / max(10.0, p[4] - p[6])
        if max(abs(slope_up), abs(slope_down)) < SLOPE_THS:
            xs, ys = p[0::2], p[1::2]
            horizontal.append(
                [xs.min(), xs.max(), ys.min(), ys.max(), 0.5 * (ys.min() + ys.max()), ys.max() - ys.min()]
            )
    horizontal.sort(key=lambda b: b[4])
    rows: list[list[list[float]]] = []
    heights: list[float] = []
    centres: list[float] = []
    for box in horizontal:
        if rows and abs(np.mean(centres) - box[4]) < YCENTER_THS * np.mean(heights):
            rows[-1].append(box)
            heights.append(box[5])
            centres.append(box[4])
        else:
            rows.append([box])
            heights, centres = [box[5]], [box[4]]
    merged: list[list[int]] = []
    for row in rows:
        if len(row) == 1:
            b = row[0]
            margin = int(ADD_MARGIN * min(b[1] - b[0], b[5]))
            merged.append([int(b[0] - margin), int(b[1] + margin), int(b[2] - margin), int(b[3] + margin)])
            continue
        groups: list[list[list[float]]] = []
        x_max = 0.0
        for b in sorted(row, key=lambda item: item[0]):
            if (
                groups
                and abs(np.mean(heights) - b[5]) < HEIGHT_THS * np.mean(heights)
                and (b[0] - x_max) < WIDTH_THS * (b[3] - b[2])
            ):
                groups[-1].append(b)
                heights.append(b[5])
            else:
                groups.append([b])
                heights = [b[5]]
            x_max = b[1]
        for group in groups:
            x0, x1 = min(b[0] for b in group), max(b[1] for b in group)
            y0, y1 = min(b[2] for b in group), max(b[3] for b in group)
            margin = int(ADD_MARGIN * min(x1 - x0, y1 - y0))
            merged.append([int(x0 - margin), int(x1 + margin), int(y0 - margin), int(y1 + margin)])
    return [b for b in merged if max(b[1] - b[0], b[3] - b[2]) > MIN_SIZE]


def adjust_contrast(grey: np.ndarray, target: float = ADJUST_CONTRAST) -> np.ndarray:
    high, low = np.percentile(grey, 90), np.percentile(grey, 10)
    if (high - low) / max(10.0, high + low) >= target:
        return grey
    ratio = 200.0 / max(10.0, high - low)
    return np.clip((grey.astype(np.int64) - low + 25) * ratio, 0, 255).astype(np.uint8)


def rec_input(grey: np.ndarray, width: int) -> np.ndarray:
    """One grey crop -> (1, 64, width): 64 high keeping its ratio (at most ``width``), padded with its last column."""
    h, w = grey.shape
    resized_w = min(width, math.ceil(REC_HEIGHT * w / h))
    resized = cv2.resize(grey, (resized_w, REC_HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    scaled = (resized / 255.0 - 0.5) / 0.5
    out = np.empty((1, REC_HEIGHT, width), np.float32)
    out[0, :, :resized_w] = scaled
    out[0, :, resized_w:] = scaled[:, -1:]
    return out


def ctc_greedy(logits: np.ndarray, characters: str, ignored: np.ndarray | None = None) -> list[tuple[str, float]]:
    """(N, T, 1 + len(characters)) logits -> (text, confidence): blank = 0, repeats merged;
    confidence = prod(best p over non-blank steps) ** (2 / sqrt(n)). ``ignored`` classes get
    probability 0 after the softmax and the rest are renormalised (EasyOCR's language filter)."""
    values = np.asarray(logits, np.float64)
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    probs = exp / exp.sum(axis=-1, keepdims=True)
    if ignored is not None and ignored.size:
        probs[..., ignored] = 0.0
        probs /= probs.sum(axis=-1, keepdims=True)
    out = []
    for row in probs:
        best = row.argmax(axis=-1)
        chars = [characters[k - 1] for i, k in enumerate(best.tolist()) if k != 0 and (i == 0 or k != best[i - 1])]
        kept = row.max(axis=-1)[best != 0]
        if kept.size == 0:
            kept = np.zeros(1)
        out.append(("".join(chars), float(kept.prod() ** (2.0 / math.sqrt(len(kept))))))
    return out


@dataclass(frozen=True)
class EasyOCRText(TextDetections):
    seconds: float = 0.0

    def roboflow_response(self) -> dict[str, Any]:
        """``/easy_ocr/ocr``: ``result`` (texts joined by spaces) and one prediction per text box."""
        width, height = self.image_size
        body = self.to_response()
        return {
            "result": " ".join(t for t in self.texts if t),
            "image": {"width": width, "height": height},
            "predictions": body["predictions"],
            "time": self.seconds,
            "parent_id": None,
        }


class EasyOCRModel(WholeImageModel):
    stream_options = ("regions",)

    def __init__(
        self,
        model_id: str,
        detector: Path,
        recognizer: Path,
        network: str,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
        languages: Iterable[str] | None = None,
    ) -> None:
        """``languages``: EasyOCR language codes whose alphabets are read (default: the network's)."""
        super().__init__(model_id, "ocr", "easy_ocr")
        from edge_agent.models.engines.torch_runtime import import_torch
        from edge_agent.models.foundation import easyocr_network as nets
        from edge_agent.models.foundation.torch_support import device_and_dtype

        what = f"{model_id} (EasyOCR)"
        torch = self.torch = import_torch(what)
        self.directory = detector.parent
        if network not in NETWORKS:
            raise ModelArtifactsError(
                recognizer, f"is EasyOCR's {network!r}; edge-agent knows the characters of {', '.join(NETWORKS)} only"
            )
        self.characters = NETWORKS[network].characters
        self.languages = tuple(NETWORKS[network].languages if languages is None else languages)
        try:
            self.ignored = ignored_classes(NETWORKS[network], self.languages)
        except ValueError as exc:
            raise ModelArtifactsError(recognizer.parent / PACKAGE_CONFIG, str(exc)) from None
        loaded: list[Any] = []
        builders: tuple[tuple[Path, Callable[[Any], Any]], ...] = (
            (detector, nets.build_craft),
            (recognizer, nets.build_recognizer),
        )
        for path, build in builders:
            try:
                state = nets.strip_module(torch.load(str(path), map_location="cpu", weights_only=True))
                net = build(state)
                net.load_state_dict(state, strict=True)
            except (OSError, RuntimeError, ValueError, KeyError, AttributeError) as exc:
                raise ModelArtifactsError(path, f"is not a loadable EasyOCR state dict ({exc})") from None
            loaded.append(net)
        classes = int(loaded[1].Prediction.weight.shape[0])
        if classes != len(self.characters) + 1:
            raise ModelArtifactsError(
                recognizer, f"predicts {classes} classes; {network} has {len(self.characters)} characters + blank"
            )
        self.device, self.dtype = device_and_dtype(settings, what)
        self.craft, self.recognizer = (n.requires_grad_(False).to(self.device, self.dtype).eval() for n in loaded)
        self.max_batch_size = settings.max_batch_size

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, regions: Any = None
    ) -> OCRParams:
        return ocr_parameters(confidence, regions)

    def _run(self, network: Any, batch: np.ndarray) -> np.ndarray:
        return run_on_numpy(self.torch, network, batch, self.device, self.dtype)

    def lines(self, image: np.ndarray) -> list[list[int]]:
        """[x_min, x_max, y_min, y_max] text line boxes of one BGR image (pixels)."""
        tensor, ratio = craft_input(image)
        (scores,) = self._run(self.craft, tensor[None])
        polys = [box * (2.0 / ratio) for box in craft_boxes(scores[:, :, 0], scores[:, :, 1])]
        return group_lines([np.asarray(p, np.float64).astype(np.int32) for p in polys])

    def read(self, grey: np.ndarray, box: list[int]) -> tuple[list[int], str, float] | None:
        height, width = grey.shape
        x0, x1, y0, y1 = max(0, box[0]), min(box[1], width), max(0, box[2]), min(box[3], height)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        crop = grey[y0:y1, x0:x1]
        ratio = max((x1 - x0) / (y1 - y0), (y1 - y0) / (x1 - x0))
        if (x1 - x0) >= (y1 - y0):
            crop = cv2.resize(crop, (int(REC_HEIGHT * ratio), REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
        else:
            crop = cv2.resize(crop, (REC_HEIGHT, int(REC_HEIGHT * ratio)), interpolation=cv2.INTER_LINEAR)
        batch_width = math.ceil(max(1.0, ratio)) * REC_HEIGHT
        (first,) = ctc_greedy(
            self._run(self.recognizer, rec_input(crop, batch_width)[None]), self.characters, self.ignored
        )
        text, score = first
        if score < CONTRAST_THS:
            (second,) = ctc_greedy(
                self._run(self.recognizer, rec_input(adjust_contrast(crop), batch_width)[None]),
                self.characters,
                self.ignored,
            )
            if second[1] >= score:
                text, score = second
        return [x0, y0, x1, y1], text, score

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
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            found: list[tuple[list[int], str, float]] = []
            for x0, y0, x1, y1 in windows:
                if x1 <= x0 or y1 <= y0:
                    continue
                for line in self.lines(image[y0:y1, x0:x1]):
                    # read inside the region, as EasyOCR would read the region cut out as an image
                    reading = self.read(grey[y0:y1, x0:x1], line)
                    if reading is not None:
                        (bx0, by0, bx1, by1), text, score = reading
                        found.append(([bx0 + x0, by0 + y0, bx1 + x0, by1 + y0], text, score))
            boxes = np.asarray([f[0] for f in found], np.float64).reshape(-1, 4)
            scores = np.asarray([f[2] for f in found], np.float32)
            quads = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1)
            order, line_ids = reading_order(quads)
            prediction = EasyOCRText(
                boxes=boxes[order],
                confidences=scores[order],
                texts=tuple(found[i][1] for i in order.tolist()),
                text_confidences=scores[order],
                line_ids=line_ids,
                image_size=(width, height),
                seconds=time.perf_counter() - started,
            )
            out.append(prediction if params.confidence is None else prediction.filter_confidence(params.confidence))
        return out


def package_files(directory: Path) -> tuple[Path, Path, str, list[str] | None]:
    """(detector, recogniser, recognition network, lang_list) named by a current-stack package's
    easy-ocr-config.json."""
    path = directory / PACKAGE_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        detector = directory / str(config["detector_model_file_name"])
        recognizer = directory / str(config["recognition_model_file_name"])
        network = str(config["recognition_network"])
        detect_network = str(config.get("detect_network", "craft"))
        languages = config.get("lang_list")
        if languages is not None and not (
            isinstance(languages, list) and languages and all(isinstance(c, str) for c in languages)
        ):
            raise ValueError("lang_list must be a non-empty list of language codes")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactsError(path, f"is not EasyOCR's package config ({exc})") from None
    if detect_network != "craft":
        raise ModelArtifactsError(path, f"names detector {detect_network!r}; edge-agent runs EasyOCR's craft only")
    for file in (detector, recognizer):
        if file.parent != directory or not file.is_file():
            raise ModelArtifactsError(path, f"names {file.name}, which the package does not hold")
    return detector, recognizer, network, languages
