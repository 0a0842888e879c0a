"""Instance masks: prototypes x coefficients, sigmoid, crop to the box, resample into source pixels.

A segmentation network gives each detection a mask on a coarse grid that covers the model input
(YOLO: ``sigmoid(coefficients . prototypes)`` on the stride-4 prototype grid; RF-DETR: one logit
map per query). :func:`render_masks` resamples each grid straight into source pixels with the same
geometry as boxes (:mod:`models.coordinates`: undo letterbox/stretch and static crop), bilinearly,
and only over the pixels that can be set (the box for YOLO, where the grid is positive otherwise),
so the cost follows the objects' area, not the frame's.

Pixel ``(row, col)`` of the source image covers ``[col, col + 1) x [row, row + 1)``; a pixel belongs
to a box when its centre lies inside it. Grid cell ``i`` likewise covers ``[i, i + 1)`` grid units
and the grid spans the whole model input, so a grid sample at source pixel centre ``x`` is taken at
grid coordinate ``(x_in * grid_w / input_w) - 0.5`` in OpenCV's centre-at-integer convention.
"""

from __future__ import annotations

import numpy as np

from models.decoders.rfdetr import stable_sigmoid
from models.preprocessing import ImageMeta

#: YOLO masks: a pixel is in the mask when the interpolated probability exceeds this
MASK_THRESHOLD = 0.5


def prototype_masks(coefficients: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """``(K, M)`` coefficients and ``(M, h, w)`` prototypes -> ``(K, h, w)`` probabilities."""
    m, h, w = prototypes.shape
    if coefficients.shape[1] != m:
        raise ValueError(f"{coefficients.shape[1]} coefficients per detection but {m} prototypes")
    logits = coefficients.astype(np.float32) @ prototypes.reshape(m, h * w).astype(np.float32)
    return stable_sigmoid(logits).reshape(-1, h, w)


def grid_transform(grid_hw: tuple[int, int], input_size: tuple[int, int], meta: ImageMeta) -> np.ndarray:
    """``(2, 2)`` rows ``(a, b)`` per axis (x, then y): grid coordinate = a * source_index + b,
    for the centre of source pixel ``source_index`` (OpenCV's convention on the grid side)."""
    grid_h, grid_w = grid_hw
    input_w, input_h = input_size
    x0, y0 = meta.crop[0], meta.crop[1]
    gx, gy = grid_w / input_w, grid_h / input_h
    return np.array(
        [
            [meta.scale_x * gx, ((0.5 - x0) * meta.scale_x + meta.pad_x) * gx - 0.5],
            [meta.scale_y * gy, ((0.5 - y0) * meta.scale_y + meta.pad_y) * gy - 0.5],
        ]
    )


def box_regions(boxes: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """``(K, 4)`` xyxy source boxes -> integer pixel ranges ``[c0, c1) x [r0, r1)`` of the pixels
    whose centres lie inside, within the region the model saw (the static crop)."""
    cx0, cy0, cx1, cy1 = meta.crop
    lo = np.ceil(boxes[:, :2] - 0.5)
    hi = np.ceil(boxes[:, 2:] - 0.5)
    out = np.concatenate([lo, hi], axis=1).astype(np.int64)
    out[:, 0] = np.clip(out[:, 0], cx0, cx1)
    out[:, 2] = np.clip(out[:, 2], cx0, cx1)
    out[:, 1] = np.clip(out[:, 1], cy0, cy1)
    out[:, 3] = np.clip(out[:, 3], cy0, cy1)
    return out


def positive_regions(grids: np.ndarray, threshold: float, transform: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Source pixel ranges that can hold a mask pixel: around grid cells above ``threshold``.

    Bilinear interpolation between cells that are all at or below the threshold stays at or below
    it, so only pixels within one cell of a positive cell can come out positive.
    """
    out = np.zeros((len(grids), 4), np.int64)
    cx0, cy0, cx1, cy1 = meta.crop
    (ax, bx), (ay, by) = transform
    for k, grid in enumerate(grids):
        hot = grid > threshold
        cols = np.flatnonzero(hot.any(axis=0))
        if cols.size == 0:
            continue
        rows = np.flatnonzero(hot.any(axis=1))
        c0 = int(np.floor((cols[0] - 1 - bx) / ax))
        c1 = int(np.ceil((cols[-1] + 1 - bx) / ax)) + 1
        r0 = int(np.floor((rows[0] - 1 - by) / ay))
        r1 = int(np.ceil((rows[-1] + 1 - by) / ay)) + 1
        out[k] = (max(c0, cx0), max(r0, cy0), min(c1, cx1), min(r1, cy1))
    return out


def intersect_regions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.concatenate([np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])], axis=1)
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2])
    return out


def render_masks(
    grids: np.ndarray,
    regions: np.ndarray,
    transform: np.ndarray,
    image_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Bilinearly resample each ``(h, w)`` grid over its source ``region`` and threshold it.

    Returns ``(K, H, W)`` bool masks of the source image; pixels outside a detection's region are
    False (that is the crop to the box when regions are boxes).
    """
    width, height = image_size
    masks = np.zeros((len(grids), height, width), dtype=bool)
    (ax, bx), (ay, by) = transform
    for k, (grid, (c0, r0, c1, r1)) in enumerate(zip(grids, regions.tolist(), strict=True)):
        if c1 <= c0 or r1 <= r0:
            continue
        patch = bilinear_patch(grid, ax * np.arange(c0, c1) + bx, ay * np.arange(r0, r1) + by)
        masks[k, r0:r1, c0:c1] = patch > threshold
    return masks


def _taps(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper grid indices and the upper weight of each sample (edges replicated)."""
    lo = np.floor(coords)
    frac = (coords - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, size - 1), np.clip(lo + 1, 0, size - 1), frac


def bilinear_patch(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``grid`` sampled bilinearly at every (x, y) of ``xs`` x ``ys`` (grid coordinates, cell centres
    at integers; outside the grid the edge values continue). Separable and in float32, so values
    are exact where OpenCV's warps round positions to 1/32 of a cell."""
    gh, gw = grid.shape
    x_lo, x_hi, fx = _taps(xs, gw)
    y_lo, y_hi, fy = _taps(ys, gh)
    rows = np.unique(np.concatenate([y_lo, y_hi]))
    sub = grid[rows].astype(np.float32, copy=False)  # only the rows the patch touches
    cols = sub[:, x_lo] * (1 - fx) + sub[:, x_hi] * fx  # (len(rows), len(xs))
    where = np.searchsorted(rows, y_lo), np.searchsorted(rows, y_hi)
    return cols[where[0]] * (1 - fy)[:, None] + cols[where[1]] * fy[:, None]


def masks_from_prototypes(
    coefficients: np.ndarray,
    prototypes: np.ndarray,
    boxes: np.ndarray,
    meta: ImageMeta,
    input_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """YOLO-style masks in source pixels: ``sigmoid(coefficients . prototypes)`` resampled
    bilinearly and cropped to each (source-pixel) box, then ``> threshold``. ``(K, H, W)`` bool."""
    if len(boxes) == 0:
        return np.zeros((0, meta.height, meta.width), dtype=bool)
    grids = prototype_masks(coefficients, prototypes)
    transform = grid_transform(grids.shape[1:], input_size, meta)
    regions = intersect_regions(box_regions(boxes, meta), positive_regions(grids, threshold, transform, meta))
    return render_masks(grids, regions, transform, (meta.width, meta.height), threshold)


def masks_from_logits(logits: np.ndarray, meta: ImageMeta, input_size: tuple[int, int]) -> np.ndarray:
    """RF-DETR masks in source pixels: each query's ``(h, w)`` logit map resampled bilinearly over
    the whole image (not cropped to the box, as Roboflow does), positive where the logit is > 0."""
    if len(logits) == 0:
        return np.zeros((0, meta.height, meta.width), dtype=bool)
    transform = grid_transform(logits.shape[1:], input_size, meta)
    regions = positive_regions(logits, 0.0, transform, meta)
    return render_masks(logits, regions, transform, (meta.width, meta.height), 0.0)
