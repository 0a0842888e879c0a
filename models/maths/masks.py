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

from edge_agent.models.maths.activations import stable_sigmoid
from edge_agent.models.maths.preprocessing import ImageMeta

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


def render_masks(
    grids: np.ndarray | GridSource,
    regions: np.ndarray,
    transform: np.ndarray,
    image_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """Bilinearly resample each detection's grid over its source ``region`` and threshold it.

    ``grids`` is a ``(K, h, w)`` stack, or a :class:`GridSource` that makes only the part of
    detection k's grid a region needs. Returns ``(K, H, W)`` bool masks of the source image;
    pixels outside a detection's region are False (that is the crop to the box when regions are
    boxes).
    """
    source = grids if isinstance(grids, GridSource) else StackedGrids(grids)
    width, height = image_size
    masks = np.zeros((len(regions), height, width), dtype=bool)
    (ax, bx), (ay, by) = transform
    gh, gw = source.shape
    for k, (c0, r0, c1, r1) in enumerate(regions.tolist()):
        if c1 <= c0 or r1 <= r0:
            continue
        x_lo, x_hi, fx = _taps(ax * np.arange(c0, c1) + bx, gw)
        y_lo, y_hi, fy = _taps(ay * np.arange(r0, r1) + by, gh)
        gx0, gy0 = int(x_lo[0]), int(y_lo[0])  # coordinates grow with the index: the first is the least
        sub = source.part(k, slice(gy0, int(y_hi[-1]) + 1), slice(gx0, int(x_hi[-1]) + 1))
        patch = _interpolate(sub, x_lo - gx0, x_hi - gx0, fx, y_lo - gy0, y_hi - gy0, fy)
        masks[k, r0:r1, c0:c1] = patch > threshold
    return masks


class GridSource:
    """Detection k's mask grid, or a part of it, on demand (``shape`` is one grid's (h, w))."""

    shape: tuple[int, int]

    def part(self, k: int, rows: slice, cols: slice) -> np.ndarray:
        raise NotImplementedError


class StackedGrids(GridSource):
    def __init__(self, grids: np.ndarray) -> None:
        self.grids = grids
        self.shape = (int(grids.shape[1]), int(grids.shape[2]))

    def part(self, k: int, rows: slice, cols: slice) -> np.ndarray:
        return self.grids[k, rows, cols].astype(np.float32, copy=False)


class PrototypeGrids(GridSource):
    """``sigmoid(coefficients[k] . prototypes)``, computed only over the cells asked for: a box
    covers a small part of the prototype grid, so this is most of the saving over whole grids."""

    def __init__(self, coefficients: np.ndarray, prototypes: np.ndarray) -> None:
        if coefficients.shape[1] != prototypes.shape[0]:
            raise ValueError(f"{coefficients.shape[1]} coefficients per detection but {prototypes.shape[0]} prototypes")
        self.coefficients = coefficients.astype(np.float32, copy=False)
        self.prototypes = prototypes.astype(np.float32, copy=False)
        self.shape = (int(prototypes.shape[1]), int(prototypes.shape[2]))

    def part(self, k: int, rows: slice, cols: slice) -> np.ndarray:
        block = self.prototypes[:, rows, cols]
        m, h, w = block.shape
        logits = self.coefficients[k] @ block.reshape(m, h * w)
        return stable_sigmoid(logits).reshape(h, w)


def _taps(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper grid indices and the upper weight of each sample (edges replicated)."""
    lo = np.floor(coords)
    frac = (coords - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, size - 1), np.clip(lo + 1, 0, size - 1), frac


def _interpolate(
    grid: np.ndarray,
    x_lo: np.ndarray,
    x_hi: np.ndarray,
    fx: np.ndarray,
    y_lo: np.ndarray,
    y_hi: np.ndarray,
    fy: np.ndarray,
) -> np.ndarray:
    """Separable bilinear interpolation: columns first (on the grid's rows), then rows."""
    cols = grid[:, x_lo] * (1 - fx) + grid[:, x_hi] * fx  # (grid rows, len(xs))
    return cols[y_lo] * (1 - fy)[:, None] + cols[y_hi] * fy[:, None]


def bilinear_patch(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``grid`` sampled bilinearly at every (x, y) of ``xs`` x ``ys`` (grid coordinates, cell centres
    at integers; outside the grid the edge values continue). Separable and in float32, so values
    are exact where OpenCV's warps round positions to 1/32 of a cell."""
    gh, gw = grid.shape
    x_lo, x_hi, fx = _taps(xs, gw)
    y_lo, y_hi, fy = _taps(ys, gh)
    return _interpolate(grid.astype(np.float32, copy=False), x_lo, x_hi, fx, y_lo, y_hi, fy)


def masks_from_prototypes(
    coefficients: np.ndarray,
    prototypes: np.ndarray,
    boxes: np.ndarray,
    meta: ImageMeta,
    input_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> np.ndarray:
    """YOLO-style masks in source pixels: ``sigmoid(coefficients . prototypes)`` resampled
    bilinearly and cropped to each (source-pixel) box, then ``> threshold``. ``(K, H, W)`` bool.

    Only the prototype cells under each box are combined, so the cost follows the boxes' area."""
    if len(boxes) == 0:
        return np.zeros((0, meta.height, meta.width), dtype=bool)
    transform = grid_transform(prototypes.shape[1:], input_size, meta)
    grids = PrototypeGrids(coefficients, prototypes)
    return render_masks(grids, box_regions(boxes, meta), transform, (meta.width, meta.height), threshold)


def masks_from_logits(logits: np.ndarray, meta: ImageMeta, input_size: tuple[int, int]) -> np.ndarray:
    """RF-DETR masks in source pixels: each query's ``(h, w)`` logit map resampled bilinearly over
    the whole image (not cropped to the box, as Roboflow does), positive where the logit is > 0."""
    if len(logits) == 0:
        return np.zeros((0, meta.height, meta.width), dtype=bool)
    transform = grid_transform(logits.shape[1:], input_size, meta)
    regions = positive_regions(logits, 0.0, transform, meta)
    return render_masks(logits, regions, transform, (meta.width, meta.height), 0.0)
