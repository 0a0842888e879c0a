"""The arithmetic of depth estimation: normalisation, Roboflow's PNG encodings, the picture, depth per box.

Pure functions on numpy arrays. Depth Anything predicts relative inverse depth (larger = nearer);
Roboflow normalises each map to [0, 1] by its own minimum and maximum, so 1 is the nearest point
of the picture and 0 the farthest.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

DEPTH_MAP_FORMATS = ("json", "png16", "png8")


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """(d - min) / (max - min) as float32, 1 = nearest.

    Roboflow raises on a flat map (max = min); a camera's black frame is such a map, and one dark
    frame must not count as a failure of the stream, so a flat map normalises to all zeros.
    """
    values = np.asarray(depth, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("the depth map holds NaN or infinite values")
    if high <= low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def quantize_depth(normalized: np.ndarray, bits: int) -> np.ndarray:
    """round(clip(d, 0, 1) * (2**bits - 1)) as uint16 (bits=16) or uint8 (bits=8), Roboflow's PNG values."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    top = (1 << bits) - 1
    scaled = np.rint(np.clip(np.asarray(normalized, np.float64), 0.0, 1.0) * top)
    return scaled.astype(np.uint16 if bits == 16 else np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {image.shape} and dtype {image.dtype}")
    return buffer.tobytes()


def depth_map_payload(normalized: np.ndarray, depth_map_format: str) -> list[list[float]] | str:
    """``normalized_depth`` of Roboflow's response: nested lists (json) or a base64 grayscale PNG."""
    if depth_map_format == "json":
        return np.asarray(normalized, np.float32).tolist()
    if depth_map_format == "png16":
        return base64.b64encode(encode_png(quantize_depth(normalized, 16))).decode("ascii")
    if depth_map_format == "png8":
        return base64.b64encode(encode_png(quantize_depth(normalized, 8))).decode("ascii")
    raise ValueError(f"depth_map_format must be one of {', '.join(DEPTH_MAP_FORMATS)}, not {depth_map_format!r}")


def colorize(normalized: np.ndarray) -> np.ndarray:
    """An 8-bit viridis picture (BGR) of a normalised map, as Roboflow's visualisation."""
    return cv2.applyColorMap(quantize_depth(normalized, 8), cv2.COLORMAP_VIRIDIS)


def box_depths(normalized: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Median normalised depth inside each xyxy box (source pixels), NaN for a box off the map.

    A pixel belongs to a box when its centre lies inside it; a box thinner than a pixel takes the
    pixel it falls in, so a tiny detection still gets a depth.
    """
    height, width = normalized.shape[:2]
    out = np.full(len(boxes), np.nan, np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        if not np.isfinite([x1, y1, x2, y2]).all():
            continue
        c0, c1 = int(np.ceil(x1 - 0.5)), int(np.ceil(x2 - 0.5))
        r0, r1 = int(np.ceil(y1 - 0.5)), int(np.ceil(y2 - 0.5))
        if c1 <= c0:
            c0, c1 = int(np.floor(x1)), int(np.floor(x1)) + 1
        if r1 <= r0:
            r0, r1 = int(np.floor(y1)), int(np.floor(y1)) + 1
        c0, c1, r0, r1 = max(c0, 0), min(c1, width), max(r0, 0), min(r1, height)
        if c1 > c0 and r1 > r0:
            out[i] = float(np.median(normalized[r0:r1, c0:c1]))
    return out


def downscale(normalized: np.ndarray, max_side: int) -> np.ndarray:
    """The map shrunk (area averaging) so its longer side is at most ``max_side``."""
    height, width = normalized.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return np.asarray(normalized, np.float32)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.asarray(normalized, np.float32), size, interpolation=cv2.INTER_AREA)
