"""Viola-Jones Haar cascades (OpenCV's XML format), evaluated in numpy: gaze's built-in face finder.

OpenCV 5 moved ``CascadeClassifier`` and its trained cascades out of the main package (the
opencv-python(-headless) 5 wheels ship an empty ``cv2/data``), so edge-agent ships two of OpenCV's
cascades (models/builtin/haar/, Intel License Agreement, BSD-style: their headers keep it) and
evaluates them here with OpenCV 4's ``detectMultiScale`` arithmetic:

- for each scale ``f = 1.1 ** k`` (windows from ``min_size`` to ``max_size``, default the window
  to the image), the grey image resized to ``round(W / f) x round(H / f)``; windows at every
  2nd pixel (every pixel from ``f >= 2``), the next column skipped after a window that fails
  the first stage;
- a window is normalised by its standard deviation over the inner ``(1, 1, w - 2, h - 2)`` rectangle
  (``nf = sqrt(area * sum(x^2) - sum(x)^2)``) and dropped when its standard deviation is <= 10
  grey levels; each stump compares ``sum(weight_i * rect_sum_i) / nf`` with its threshold and adds
  its left leaf (below) or right leaf; a stage passes when its sum >= its threshold - 1e-5;
- detections (``round(x f), round(y f)``, window ``round(w f)``) are grouped as OpenCV's
  ``groupRectangles``: clusters of mutually similar boxes (all four sides within
  ``0.2 * (min width + min height) / 2``), averaged, kept with more than ``min_neighbors``
  members, minus boxes lying inside a stronger one.

Only stump cascades with upright features (OpenCV's ``haarcascade_*.xml``; no tilted features) are read.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.models.common.errors import ModelArtifactsError

CASCADES = Path(__file__).resolve().parent.parent / "builtin" / "haar"
FRONTAL_FACE = CASCADES / "haarcascade_frontalface_default.xml"
EYE = CASCADES / "haarcascade_eye.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 3
GROUP_EPS = 0.2
THRESHOLD_EPS = 1e-5  # OpenCV lowers every stage threshold by this much when it reads a cascade
MIN_STD = 10.0  # windows flatter than this (grey levels) are never faces (OpenCV's area * nf < 0.1)


@dataclass(frozen=True)
class HaarCascade:
    """A stump cascade: ``rects`` (T, 3, 4) x, y, w, h and ``weights`` (T, 3) of each stump's
    feature (a third rectangle of weight 0 when it has two), ``thresholds`` (T,), ``leaves`` (T, 2),
    ``stage_ends`` (S,) one past each stage's last stump, ``stage_thresholds`` (S,)."""

    window: tuple[int, int]  # width, height
    rects: np.ndarray
    weights: np.ndarray
    thresholds: np.ndarray
    leaves: np.ndarray
    stage_ends: np.ndarray
    stage_thresholds: np.ndarray


def _numbers(node: ET.Element | None, path: Path, what: str) -> list[float]:
    if node is None or node.text is None:
        raise ModelArtifactsError(path, f"has a cascade without {what}")
    return [float(v) for v in node.text.split()]


def load_cascade(path: Path) -> HaarCascade:
    """An OpenCV ``opencv-cascade-classifier`` XML file of BOOST stumps over HAAR features."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ModelArtifactsError(path, f"is not an OpenCV cascade XML file ({exc})") from None
    cascade = root.find("cascade")
    if cascade is None or cascade.findtext("featureType", "").strip() != "HAAR":
        raise ModelArtifactsError(path, "is not an OpenCV Haar cascade (opencv-cascade-classifier, featureType HAAR)")
    if cascade.findtext("stageType", "").strip() != "BOOST":
        raise ModelArtifactsError(path, "is not a boosted cascade (stageType BOOST)")
    window = (int(cascade.findtext("width", "0")), int(cascade.findtext("height", "0")))
    features: list[tuple[list[list[int]], list[float]]] = []
    for feature in cascade.iterfind("features/_"):
        if feature.findtext("tilted", "0").strip() not in ("0", ""):
            raise ModelArtifactsError(path, "has tilted Haar features; edge-agent reads upright ones only")
        boxes, weights = [], []
        for rect in feature.iterfind("rects/_"):
            x, y, w, h, weight = _numbers(rect, path, "feature rectangles")
            boxes.append([int(x), int(y), int(w), int(h)])
            weights.append(weight)
        if not 1 <= len(boxes) <= 3:
            raise ModelArtifactsError(path, f"has a feature of {len(boxes)} rectangles; Haar features have 2 or 3")
        boxes += [[0, 0, 0, 0]] * (3 - len(boxes))
        weights += [0.0] * (3 - len(weights))
        features.append((boxes, weights))
    index, thresholds, leaves, ends, stage_thresholds = [], [], [], [], []
    for stage in cascade.iterfind("stages/_"):
        stage_thresholds.append(_numbers(stage.find("stageThreshold"), path, "stage thresholds")[0] - THRESHOLD_EPS)
        for weak in stage.iterfind("weakClassifiers/_"):
            nodes = _numbers(weak.find("internalNodes"), path, "internal nodes")
            values = _numbers(weak.find("leafValues"), path, "leaf values")
            if len(nodes) != 4 or len(values) != 2:
                raise ModelArtifactsError(path, "has trees deeper than one split; edge-agent reads stump cascades only")
            index.append(int(nodes[2]))
            thresholds.append(nodes[3])
            leaves.append(values)
        ends.append(len(index))
    if not ends or window[0] < 3 or window[1] < 3 or not features or max(index) >= len(features):
        raise ModelArtifactsError(path, "is an incomplete Haar cascade (window, stages or features missing)")
    rects = np.asarray([features[i][0] for i in index], np.int64)
    return HaarCascade(
        window=window,
        rects=rects,
        weights=np.asarray([features[i][1] for i in index], np.float64),
        thresholds=np.asarray(thresholds, np.float64),
        leaves=np.asarray(leaves, np.float64),
        stage_ends=np.asarray(ends, np.int64),
        stage_thresholds=np.asarray(stage_thresholds, np.float64),
    )


def _rect_sums(integral: np.ndarray, starts: np.ndarray, stride: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Sum of the pixels of rectangle (x, y, w, h) of each window whose top-left is at flat index ``starts``."""
    top, bottom = starts + y * stride + x, starts + (y + h) * stride + x
    return integral[bottom + w] - integral[bottom] - integral[top + w] + integral[top]


def stage_scores(cascade: HaarCascade, grey: np.ndarray, step: int = 1) -> np.ndarray:
    """For the grid of windows at every ``step`` pixels of a grey image ((rows, columns), top-left
    at (column * step, row * step)): the first stage each window fails, ``len(stages)`` where it
    passes them all, -1 where it is too flat to be read.

    Early stages see most windows: they are computed for the whole grid at once from strided views
    of the integral image; once few windows are left, only theirs are gathered."""
    win_w, win_h = cascade.window
    height, width = grey.shape
    rows, cols = len(range(0, height - win_h + 1, step)), len(range(0, width - win_w + 1, step))
    total, squares = cv2.integral2(grey, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)

    def corner(table: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return table[dy : dy + step * (rows - 1) + 1 : step, dx : dx + step * (cols - 1) + 1 : step]

    def rect(table: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
        return corner(table, y + h, x + w) - corner(table, y, x + w) - corner(table, y + h, x) + corner(table, y, x)

    area = float((win_w - 2) * (win_h - 2))
    values, squared = rect(total, 1, 1, win_w - 2, win_h - 2), rect(squares, 1, 1, win_w - 2, win_h - 2)
    nf = area * squared - values * values
    alive = nf > 0
    nf = np.sqrt(np.where(alive, nf, 1.0))
    alive &= area / nf < 1.0 / MIN_STD
    result = np.full((rows, cols), -1, np.int64)
    first, stage = 0, 0
    ends = cascade.stage_ends.tolist()
    while stage < len(ends) and alive.mean() > _DENSE:
        end = ends[stage]
        score = np.zeros((rows, cols))
        for t in range(first, end):
            feature = np.zeros((rows, cols))
            for r in range(3):
                weight = float(cascade.weights[t, r])
                if weight != 0.0:
                    feature += weight * rect(total, *cascade.rects[t, r].tolist())
            score += np.where(feature < cascade.thresholds[t] * nf, cascade.leaves[t, 0], cascade.leaves[t, 1])
        failed = alive & (score < cascade.stage_thresholds[stage])
        result[failed] = stage
        alive &= ~failed
        first, stage = end, stage + 1
    flat_total = total.reshape(-1)
    stride = width + 1
    where = np.flatnonzero(alive)
    starts = (where // cols) * step * stride + (where % cols) * step
    norms = nf.reshape(-1)[where]
    # each rectangle's four integral-image corners as offsets from a window's top-left, (T, 3, 4)
    x, y, w, h = (cascade.rects[..., i] for i in range(4))
    corners = np.stack([y * stride + x, y * stride + x + w, (y + h) * stride + x, (y + h) * stride + x + w], -1)
    signed = cascade.weights[..., None] * np.asarray([1.0, -1.0, -1.0, 1.0])  # (T, 3, 4)
    flat_result = result.reshape(-1)
    for index in range(stage, len(ends)):
        if where.size == 0:
            break
        end = ends[index]
        offsets, signs = corners[first:end].reshape(-1), signed[first:end].reshape(end - first, -1)
        sparse_score = np.empty(where.size)
        chunk = max(1, _GATHER // offsets.size)
        for lo in range(0, where.size, chunk):
            gathered = flat_total[starts[lo : lo + chunk, None] + offsets[None, :]].reshape(-1, end - first, 12)
            feature = np.einsum("ntk,tk->nt", gathered, signs)  # (windows, stumps) feature values
            below = feature < cascade.thresholds[first:end] * norms[lo : lo + chunk, None]
            leaves = np.where(below, cascade.leaves[first:end, 0], cascade.leaves[first:end, 1])
            sparse_score[lo : lo + chunk] = leaves.sum(1)
        failed = sparse_score < cascade.stage_thresholds[index]
        flat_result[where[failed]] = index
        where, starts, norms = where[~failed], starts[~failed], norms[~failed]
        first = end
    flat_result[where] = len(ends)
    return result


_DENSE = 0.25  # above this share of windows still alive, a stage is computed for the whole grid
_GATHER = 1 << 21  # integral-image reads per gather: bounds the memory of one (windows, stumps, 12) block


def scan_positions(first_stage_failed: np.ndarray) -> np.ndarray:
    """Which windows of a (rows, columns) grid OpenCV reads: after a window that fails stage 0, it
    skips the next column (the grid is already at OpenCV's step)."""
    rows, columns = first_stage_failed.shape
    read = np.ones((rows, columns), bool)
    for column in range(1, columns):
        read[:, column] = ~(read[:, column - 1] & first_stage_failed[:, column - 1])
    return read


def raw_detections(
    cascade: HaarCascade,
    grey: np.ndarray,
    min_size: tuple[int, int] = (0, 0),
    max_size: tuple[int, int] | None = None,
    scale_factor: float = SCALE_FACTOR,
) -> list[tuple[int, int, int, int]]:
    """Every window (x, y, w, h; image pixels) that passes all stages, over all scales."""
    height, width = grey.shape
    win_w, win_h = cascade.window
    max_w, max_h = max_size if max_size else (width, height)
    found: list[tuple[int, int, int, int]] = []
    factor = 1.0
    while True:
        size = (round(win_w * factor), round(win_h * factor))
        scaled_w, scaled_h = round(width / factor), round(height / factor)
        if size[0] > max_w or size[1] > max_h or scaled_w < win_w or scaled_h < win_h:
            break
        if size[0] >= min_size[0] and size[1] >= min_size[1]:
            if factor == 1.0:
                scaled = grey
            else:
                scaled = cv2.resize(grey, (scaled_w, scaled_h), interpolation=cv2.INTER_LINEAR_EXACT)
            step = 1 if factor >= 2 else 2
            stages = stage_scores(cascade, scaled, step)
            passed = (stages == len(cascade.stage_ends)) & scan_positions(stages == 0)
            for row, col in zip(*np.nonzero(passed), strict=True):
                x, y = int(col) * step, int(row) * step
                found.append((_round(x * factor), _round(y * factor), size[0], size[1]))
        factor *= scale_factor
    return found


def _round(value: float) -> int:
    """OpenCV's cvRound / saturate_cast<int> (the FPU's rounding: half to even)."""
    return int(np.rint(value))


def _similar(a: tuple[int, ...], b: tuple[int, ...], eps: float) -> bool:
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return (
        abs(a[0] - b[0]) <= delta
        and abs(a[1] - b[1]) <= delta
        and abs(a[0] + a[2] - b[0] - b[2]) <= delta
        and abs(a[1] + a[3] - b[1] - b[3]) <= delta
    )


def group_rectangles(
    rects: list[tuple[int, int, int, int]], min_neighbors: int = MIN_NEIGHBORS, eps: float = GROUP_EPS
) -> list[tuple[tuple[int, int, int, int], int]]:
    """OpenCV's groupRectangles: (averaged box, number of boxes merged into it) per kept cluster."""
    if not rects:
        return []
    parent = list(range(len(rects)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            if _similar(rects[i], rects[j], eps):
                parent[root(i)] = root(j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(rects)):
        clusters.setdefault(root(i), []).append(i)
    averaged = []
    for members in clusters.values():
        mean = np.asarray([rects[i] for i in members], np.float64).sum(axis=0) * np.float32(1.0 / len(members))
        x, y, w, h = (_round(v) for v in mean.tolist())
        averaged.append(((x, y, w, h), len(members)))
    kept = []
    for i, (r1, n1) in enumerate(averaged):
        if n1 <= min_neighbors:
            continue
        inside = False
        for j, (r2, n2) in enumerate(averaged):
            if j == i or n2 <= min_neighbors:
                continue
            dx, dy = _round(r2[2] * eps), _round(r2[3] * eps)
            if (
                r1[0] >= r2[0] - dx
                and r1[1] >= r2[1] - dy
                and r1[0] + r1[2] <= r2[0] + r2[2] + dx
                and r1[1] + r1[3] <= r2[1] + r2[3] + dy
                and (n2 > max(3, n1) or n1 < 3)
            ):
                inside = True
                break
        if not inside:
            kept.append((r1, n1))
    return kept


def detect(
    cascade: HaarCascade,
    grey: np.ndarray,
    min_size: tuple[int, int] = (0, 0),
    max_size: tuple[int, int] | None = None,
    min_neighbors: int = MIN_NEIGHBORS,
) -> list[tuple[tuple[int, int, int, int], int]]:
    """``detectMultiScale`` with OpenCV's defaults: (x, y, w, h) and its neighbour count per object."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError("a Haar cascade reads 8-bit grey images")
    return group_rectangles(raw_detections(cascade, grey, min_size, max_size), min_neighbors)


@dataclass(frozen=True)
class Faces:
    """One image's faces: ``boxes`` (K, 4) xyxy pixels, ``neighbours`` (K,) windows merged into
    each, ``eyes`` (K, 2, 2) the right then left eye's centre (the subject's: right is on the
    image's left), NaN where the eye cascade did not find one eye on each side."""

    boxes: np.ndarray
    neighbours: np.ndarray
    eyes: np.ndarray


def eye_centres(face: tuple[int, int, int, int], eyes: list[tuple[tuple[int, int, int, int], int]]) -> np.ndarray:
    """(2, 2) right, left eye centres (image pixels) from eye boxes found inside ``face`` (relative
    to the face's top-left): in each half of the face's upper half, the box with most neighbours
    (then the smallest); NaN unless both halves have one."""
    fx, fy, fw, fh = face
    best: dict[int, tuple[int, int, float, float]] = {}
    for (x, y, w, h), n in eyes:
        cx, cy = x + w / 2.0, y + h / 2.0
        if cy > fh / 2.0:  # eyes sit in the upper half; the rest are nostrils, mouth corners
            continue
        side = 0 if cx < fw / 2.0 else 1  # 0: image left = the subject's right eye
        key = (n, -w * h, cx, cy)
        if side not in best or key[:2] > best[side][:2]:
            best[side] = key
    out = np.full((2, 2), np.nan)
    if len(best) == 2:
        for side in (0, 1):
            out[side] = (fx + best[side][2], fy + best[side][3])
    return out


#: longest side of the picture the cascades read: larger frames are shrunk first (INTER_AREA), as
#: numpy evaluates a cascade ~100x slower than OpenCV's C++; faces under ~24 px in it are missed
#: (under ~48 px of a 1280-wide frame)
MAX_SIDE = 640


class HaarFaceFinder:
    """OpenCV's frontal-face cascade, then its eye cascade inside each face for two landmarks."""

    def __init__(self, face: Path = FRONTAL_FACE, eye: Path = EYE, max_side: int = MAX_SIDE) -> None:
        self.face = load_cascade(face)
        self.eye = load_cascade(eye)
        self.max_side = max_side

    def find(self, image: np.ndarray) -> Faces:
        """Faces of one BGR (or grey) image, in its pixels."""
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        grey = np.ascontiguousarray(grey, np.uint8)
        scale = min(1.0, self.max_side / max(grey.shape))
        if scale < 1.0:
            size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        found = detect(self.face, grey)
        boxes = np.asarray([[x, y, x + w, y + h] for (x, y, w, h), _ in found], np.float64).reshape(-1, 4)
        eyes = np.full((len(found), 2, 2), np.nan)
        for k, ((x, y, w, h), _) in enumerate(found):
            upper = grey[y : y + math.ceil(h * 0.6), x : x + w]
            eyes[k] = eye_centres((x, y, w, h), detect(self.eye, upper, (w // 10, w // 10), (w // 2, w // 2)))
        return Faces(boxes / scale, np.asarray([n for _, n in found], np.int64), eyes / scale)
