"""Drawing typed predictions onto a frame: boxes and labels, masks (polygons) and keypoints.

Pure functions: a BGR image and a prediction in, a new annotated BGR image out; the input is
never written to (the frame may still be in use elsewhere). Colours come from the model
(``ModelArtifacts.colors``, Roboflow's ``COLORS``: class name -> ``#rrggbb``); a class without one
gets a colour of :data:`DEFAULT_PALETTE` by class id, so the same class keeps its colour from
frame to frame. Anything a prediction type does not carry (no polygons, no keypoints, no track
ids) is simply not drawn, so new task types show up as soon as they fill those fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from edge_agent.models.maths.predictions import class_label
from edge_agent.pipelines.events.overlay import Overlay

BGR = tuple[int, int, int]

# supervision's default palette (what Roboflow's annotators use when a model has no colours).
DEFAULT_PALETTE: tuple[str, ...] = (
    "#A351FB", "#FF4040", "#FFA1A0", "#FF7633", "#FFB633", "#D1D435", "#4CFB12", "#94CF1A",
    "#40DE8A", "#1B9640", "#00D6C1", "#2E9FFF", "#00C4FF", "#364797", "#6675FF", "#0019EF",
    "#863AFF", "#530087", "#CD3AFF", "#FF97CA", "#FF39C9",
)  # fmt: skip

MASK_ALPHA = 0.4
KEYPOINT_MIN_CONFIDENCE = 0.3
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def hex_to_bgr(value: str) -> BGR | None:
    """``"#rrggbb"`` (or ``"rrggbb"``) -> (b, g, r); ``None`` for anything else."""
    text = value.strip().lstrip("#") if isinstance(value, str) else ""
    if len(text) != 6:
        return None
    try:
        r, g, b = (int(text[i : i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        return None
    return b, g, r


def class_color(class_name: str, class_id: int, colors: Mapping[str, str] | None = None) -> BGR:
    """The model's colour of a class, else the palette's colour of its id."""
    if colors:
        chosen = colors.get(class_name)
        bgr = hex_to_bgr(chosen) if chosen is not None else None
        if bgr is not None:
            return bgr
    fallback = hex_to_bgr(DEFAULT_PALETTE[class_id % len(DEFAULT_PALETTE)])
    assert fallback is not None
    return fallback


def text_color(background: BGR) -> BGR:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def line_width(width: int, height: int) -> int:
    """Box outline thickness: 2 px at VGA, growing with the picture so it survives scaling down."""
    return max(2, round(max(width, height) / 480))


def annotate(image: np.ndarray, prediction: Any, colors: Mapping[str, str] | None = None) -> np.ndarray:
    """A copy of ``image`` (BGR uint8, HxWx3) with ``prediction`` drawn on it.

    ``prediction`` is any typed prediction; those with ``boxes`` (``Detections`` and its kin) get
    masks, boxes, keypoints and labels, others come back undrawn.
    """
    out = np.ascontiguousarray(image).copy()
    family_drawing = getattr(prediction, "draw_overlay", None)
    if callable(family_drawing):  # what a family draws besides boxes (a depth picture, gaze arrows)
        family_drawing(out)
    boxes = getattr(prediction, "boxes", None)
    if boxes is None or len(boxes) == 0:
        return out
    height, width = out.shape[:2]
    names: tuple[str, ...] = tuple(getattr(prediction, "class_names", ()))
    class_ids = np.asarray(prediction.class_ids, dtype=np.int64)
    labels = [class_label(names, int(k)) for k in class_ids]
    palette = [class_color(label, int(k), colors) for label, k in zip(labels, class_ids, strict=True)]
    thickness = line_width(width, height)

    polygons = getattr(prediction, "polygons", None)
    if polygons:
        draw_masks(out, polygons, palette)
    corners = _pixel_boxes(np.asarray(boxes, dtype=np.float64), width, height)
    for corner, color in zip(corners, palette, strict=True):
        if corner is not None:
            cv2.rectangle(out, corner[:2], corner[2:], color, thickness, cv2.LINE_AA)
    keypoints = getattr(prediction, "keypoints", None)
    if keypoints is not None and len(keypoints):
        draw_keypoints(out, np.asarray(keypoints, dtype=np.float64), palette, thickness)
    confidences = np.asarray(prediction.confidences, dtype=np.float64)
    track_ids = getattr(prediction, "track_ids", None)
    for i, (corner, color) in enumerate(zip(corners, palette, strict=True)):
        if corner is None:
            continue
        text = f"{labels[i]} {confidences[i]:.2f}"
        if track_ids is not None:
            text += f" #{int(track_ids[i])}"
        draw_label(out, text, corner, color, thickness)
    return out


def _pixel_boxes(boxes: np.ndarray, width: int, height: int) -> list[tuple[int, int, int, int] | None]:
    """xyxy floats -> integer corners clipped to the picture; ``None`` for a box that is NaN or
    empty after clipping (nothing sensible to draw)."""
    clipped = np.stack(
        [np.clip(boxes[:, [0, 2]], 0, width - 1), np.clip(boxes[:, [1, 3]], 0, height - 1)], axis=1
    )  # (K, 2, 2): [[x1, x2], [y1, y2]]
    out: list[tuple[int, int, int, int] | None] = []
    for (x1, x2), (y1, y2) in clipped:
        if not np.isfinite([x1, x2, y1, y2]).all() or x2 <= x1 or y2 <= y1:
            out.append(None)
            continue
        out.append((round(x1), round(y1), round(x2), round(y2)))
    return out


def draw_masks(image: np.ndarray, polygons: tuple[np.ndarray, ...] | list[np.ndarray], palette: list[BGR]) -> None:
    """Translucent filled polygons with a solid outline, in place."""
    overlay = image.copy()
    outlines = []
    for polygon, color in zip(polygons, palette, strict=False):
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) < 3:
            continue
        contour = np.rint(points).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(overlay, [contour], color, cv2.LINE_AA)
        outlines.append((contour, color))
    cv2.addWeighted(overlay, MASK_ALPHA, image, 1.0 - MASK_ALPHA, 0.0, dst=image)
    for contour, color in outlines:
        cv2.polylines(image, [contour], True, color, 1, cv2.LINE_AA)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, palette: list[BGR], thickness: int) -> None:
    """(K, P, 3) x, y, confidence: a dot per confident point, ringed so it shows on any colour."""
    radius = thickness + 2
    for points, color in zip(keypoints, palette, strict=False):
        for x, y, confidence in points:
            if not (np.isfinite(x) and np.isfinite(y)) or confidence < KEYPOINT_MIN_CONFIDENCE:
                continue
            centre = (round(x), round(y))
            cv2.circle(image, centre, radius, color, -1, cv2.LINE_AA)
            cv2.circle(image, centre, radius, text_color(color), 1, cv2.LINE_AA)


def draw_label(image: np.ndarray, text: str, box: tuple[int, int, int, int], color: BGR, thickness: int) -> None:
    """The label on a filled tab above the box (inside it when the box touches the top edge)."""
    width = image.shape[1]
    scale = 0.4 + thickness * 0.1
    weight = max(1, thickness // 2)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, weight)
    pad = 2 + thickness // 2
    x1, y1 = box[0], box[1]
    tab_h = text_h + baseline + 2 * pad
    top = y1 - tab_h if y1 - tab_h >= 0 else y1
    left = min(x1, max(width - text_w - 2 * pad, 0))
    cv2.rectangle(image, (left, top), (left + text_w + 2 * pad, top + tab_h), color, -1)
    origin = (left + pad, top + pad + text_h)
    cv2.putText(image, text, origin, _FONT, scale, text_color(color), weight, cv2.LINE_AA)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """BGR image -> JPEG bytes (OpenCV's libjpeg-turbo; releases the GIL while it works)."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buffer.tobytes()


def render_jpeg(
    image: np.ndarray, prediction: Any, colors: Mapping[str, str] | None, quality: int, overlay: Overlay | None = None
) -> bytes:
    """Annotate and encode in one call: what the live view runs in its executor."""
    out = annotate(image, prediction, colors)
    if overlay is not None:
        draw_overlay(out, overlay)
    return encode_jpeg(out, quality)


_ZONE_BGR = (255, 191, 0)
_LINE_BGR = (0, 215, 255)
_TRAIL_BGR = (255, 255, 255)


def draw_overlay(image: np.ndarray, overlay: Overlay) -> None:
    """Zones (outline, name and count), lines (with an arrow to the ``in`` side and the counts),
    and short trails of the tracks with their speeds, drawn in place."""
    height, width = image.shape[:2]
    thickness = line_width(width, height)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.4, thickness * 0.25)
    for name, polygon, count in overlay.zones:
        pts = np.round(polygon).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], True, _ZONE_BGR, thickness, cv2.LINE_AA)
        x, y = (int(v) for v in polygon.min(axis=0))
        cv2.putText(image, f"{name}: {count}", (x + 4, y + int(18 * scale) + 4), font, scale, _ZONE_BGR, 1, cv2.LINE_AA)
    for name, a, b, n_in, n_out in overlay.lines:
        pa, pb = (int(a[0]), int(a[1])), (int(b[0]), int(b[1]))
        cv2.line(image, pa, pb, _LINE_BGR, thickness + 1, cv2.LINE_AA)
        mid = (a + b) / 2
        d = b - a
        # side < 0 is where "in" goes: the normal (dy, -dx) of a->b in image coordinates
        normal = np.array([d[1], -d[0]]) / max(float(np.hypot(*d)), 1e-9)
        tip = mid + normal * 6 * thickness
        cv2.arrowedLine(
            image, (int(mid[0]), int(mid[1])), (int(tip[0]), int(tip[1])), _LINE_BGR, thickness, cv2.LINE_AA
        )
        label = f"{name} in {n_in} out {n_out}"
        cv2.putText(image, label, (int(mid[0]) + 6, int(mid[1]) - 6), font, scale, _LINE_BGR, 1, cv2.LINE_AA)
    for track_id, points in overlay.trails:
        if len(points) >= 2:
            pts = np.round(points).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], False, _TRAIL_BGR, max(thickness - 1, 1), cv2.LINE_AA)
        speed = overlay.speeds.get(track_id)
        if speed and len(points):
            x, y = (int(v) for v in points[-1])
            cv2.putText(image, speed, (x + 4, y + int(14 * scale)), font, scale, _TRAIL_BGR, 1, cv2.LINE_AA)
