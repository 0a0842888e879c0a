"""Mask and polygon maths on hand-made grids, against values worked out by hand.

Geometry used throughout unless a test says otherwise: a 640x480 source stretched to a 320x320
input (x / 2, y / 1.5), a 80x80 grid over the input (4 input pixels per cell), so one grid cell is
8 x 6 source pixels. A grid that is 1 on cells [gx0, gx1) x [gy0, gy1) and 0 elsewhere, resampled
bilinearly, is fx(u) * fy(v) at grid position (u, v) with fx(u) = clip(min(u - gx0 + 1, gx1 - u),
0, 1) (cell centres at integers): along an edge the 0.5 crossing is the cell edge, so the mask
is the source pixels whose centres lie in [8 gx0, 8 gx1) x [6 gy0, 6 gy1), except at the corners,
which bilinear interpolation rounds off (fx * fy < 0.5 there).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.models.maths.masks import (
    PrototypeGrids,
    box_regions,
    grid_transform,
    masks_from_logits,
    masks_from_prototypes,
    prototype_masks,
    render_masks,
)
from edge_agent.models.maths.polygons import MaskOutput, mask_bounds, mask_to_polygon, polygon_area
from edge_agent.models.maths.preprocessing import ImageMeta, letterbox_geometry

STRETCH = ImageMeta(width=640, height=480, crop=(0, 0, 640, 480), scale_x=0.5, scale_y=320 / 480, pad_x=0, pad_y=0)
INPUT = (320, 320)


def _rect(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _expected(meta: ImageMeta, gx0: int, gy0: int, gx1: int, gy1: int, clip_box=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The bilinear mask of a 0/1 rectangle of cells, from the formula in the module docstring."""
    cx0, cy0 = meta.crop[:2]
    cols = np.arange(meta.width) + 0.5  # source pixel centres
    rows = np.arange(meta.height) + 0.5
    u = ((cols - cx0) * meta.scale_x + meta.pad_x) * 80 / 320 - 0.5
    v = ((rows - cy0) * meta.scale_y + meta.pad_y) * 80 / 320 - 0.5
    fx = np.clip(np.minimum(u - gx0 + 1, gx1 - u), 0, 1)
    fy = np.clip(np.minimum(v - gy0 + 1, gy1 - v), 0, 1)
    out = fy[:, None] * fx[None, :] > 0.5
    x0, y0, x1, y1 = meta.crop
    seen = np.zeros_like(out)
    seen[y0:y1, x0:x1] = True
    if clip_box is not None:
        bx0, by0, bx1, by1 = clip_box
        inside = ((cols >= bx0) & (cols < bx1))[None, :] & ((rows >= by0) & (rows < by1))[:, None]
        seen &= inside
    return out & seen


def _edges_match(mask: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """Along the middle row and column the mask spans exactly [x0, x1) and [y0, y1)."""
    mid_r, mid_c = (y0 + y1) // 2, (x0 + x1) // 2
    assert np.flatnonzero(mask[mid_r]).tolist() == list(range(x0, x1))
    assert np.flatnonzero(mask[:, mid_c]).tolist() == list(range(y0, y1))


def _grid(x0: int, y0: int, x1: int, y1: int, inside: float = 1.0, outside: float = 0.0) -> np.ndarray:
    g = np.full((80, 80), outside, np.float32)
    g[y0:y1, x0:x1] = inside
    return g


def test_prototype_masks_is_sigmoid_of_coefficients_times_prototypes() -> None:
    protos = np.zeros((32, 2, 2), np.float32)
    protos[0] = [[1, -1], [2, 0]]
    protos[5] = [[0, 3], [0, 0]]
    coef = np.zeros((1, 32), np.float32)
    coef[0, 0], coef[0, 5] = 2.0, -1.0
    logits = np.array([[2, -2 - 3], [4, 0]], np.float64)
    np.testing.assert_allclose(prototype_masks(coef, protos)[0], 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_prototype_grids_compute_just_the_cells_asked_for() -> None:
    rng = np.random.default_rng(0)
    coef, protos = rng.normal(size=(3, 32)).astype(np.float32), rng.normal(size=(32, 20, 30)).astype(np.float32)
    part = PrototypeGrids(coef, protos).part(2, slice(4, 9), slice(10, 25))
    np.testing.assert_allclose(part, prototype_masks(coef, protos)[2, 4:9, 10:25], rtol=1e-5)


def test_grid_cell_edges_land_on_source_pixel_edges_under_stretch() -> None:
    grids = _grid(10, 20, 30, 40)[None]
    t = grid_transform((80, 80), INPUT, STRETCH)
    masks = render_masks(grids, np.array([[0, 0, 640, 480]]), t, (640, 480))
    _edges_match(masks[0], 80, 120, 240, 240)
    np.testing.assert_array_equal(masks[0], _expected(STRETCH, 10, 20, 30, 40))
    assert not masks[0][120, 80] and masks[0][121, 82]  # a rounded corner


def test_letterbox_pads_are_removed() -> None:
    # 640x480 letterboxed into 320x320: 320x240 image at y = 40..280 of the input.
    new_w, new_h, left, top = letterbox_geometry(640, 480, 320, 320)
    meta = ImageMeta(640, 480, (0, 0, 640, 480), new_w / 640, new_h / 480, left, top)
    # Cells 20..30 in y are input y 80..120 -> source y (80 - 40) / 0.5 = 80 .. 160.
    grids = _grid(40, 20, 60, 30)[None]
    masks = render_masks(grids, np.array([[0, 0, 640, 480]]), grid_transform((80, 80), INPUT, meta), (640, 480))
    _edges_match(masks[0], 320, 80, 480, 160)
    np.testing.assert_array_equal(masks[0], _expected(meta, 40, 20, 60, 30))


def test_static_crop_offsets_the_mask() -> None:
    # Source 800x600 with a crop of x 100..740, y 50..530 (640x480 seen), stretched to 320x320.
    meta = ImageMeta(800, 600, (100, 50, 740, 530), 0.5, 320 / 480, 0, 0)
    grids = _grid(10, 20, 30, 40)[None]
    regions = box_regions(np.array([[0.0, 0.0, 800.0, 600.0]]), meta)
    assert regions.tolist() == [[100, 50, 740, 530]]  # nothing outside the crop can be set
    masks = render_masks(grids, regions, grid_transform((80, 80), INPUT, meta), (800, 600))
    _edges_match(masks[0], 180, 170, 340, 290)
    np.testing.assert_array_equal(masks[0], _expected(meta, 10, 20, 30, 40))


def test_box_regions_take_pixels_whose_centres_are_inside() -> None:
    boxes = np.array([[10.2, 5.5, 20.5, 9.6], [-3.0, -1.0, 700.0, 500.0]])
    # x: centres 10.5 .. 19.5 are >= 10.2 and < 20.5 -> cols 10..19; y: centres 5.5 .. 9.5 -> rows 5..9.
    assert box_regions(boxes, STRETCH).tolist() == [[10, 5, 20, 10], [0, 0, 640, 480]]


def test_prototype_masks_are_cropped_to_their_box_and_keep_their_own_coefficients() -> None:
    protos = np.full((32, 80, 80), -10.0, np.float32)
    protos[0] = _grid(10, 20, 30, 40, 10.0, -10.0)  # source x 80..240, y 120..240
    protos[1] = _grid(50, 50, 70, 70, 10.0, -10.0)  # source x 400..560, y 300..420
    coef = np.zeros((2, 32), np.float32)
    coef[0, 0] = coef[1, 1] = 1.0
    # The first box cuts the right part of its mask (x < 200); the second holds all of its own.
    boxes = np.array([[60.0, 100.0, 200.0, 260.0], [390.0, 290.0, 570.0, 430.0]])
    masks = masks_from_prototypes(coef, protos, boxes, STRETCH, INPUT)
    assert masks.shape == (2, 480, 640)
    _edges_match(masks[0], 80, 120, 200, 240)  # cut at the box's right edge x = 200
    np.testing.assert_array_equal(masks[0], _expected(STRETCH, 10, 20, 30, 40, clip_box=boxes[0]))
    _edges_match(masks[1], 400, 300, 560, 420)
    np.testing.assert_array_equal(masks[1], _expected(STRETCH, 50, 50, 70, 70))


def test_rfdetr_logit_masks_are_not_cropped_and_threshold_at_zero() -> None:
    logits = np.stack([_grid(10, 20, 30, 40, 5.0, -5.0), np.full((80, 80), -1.0, np.float32)])
    masks = masks_from_logits(logits, STRETCH, INPUT)
    # Logits +-5: the interpolated logit is 0 where the 0/1 interpolation is 0.5 along edges.
    _edges_match(masks[0], 80, 120, 240, 240)
    assert not masks[1].any()


def test_no_detections_give_an_empty_stack() -> None:
    empty = masks_from_prototypes(np.zeros((0, 32)), np.zeros((32, 80, 80)), np.zeros((0, 4)), STRETCH, INPUT)
    assert empty.shape == (0, 480, 640)


# --- polygons -------------------------------------------------------------------------------------


def test_rectangle_polygon_is_its_four_corner_pixel_centres() -> None:
    mask = _rect((480, 640), 80, 120, 240, 240)
    poly = mask_to_polygon(mask)
    corners = {(80.5, 120.5), (80.5, 239.5), (239.5, 239.5), (239.5, 120.5)}
    assert {tuple(p) for p in poly.tolist()} == corners
    assert polygon_area(poly) == pytest.approx(159 * 119)


def test_mask_touching_the_image_edge_gives_a_closed_polygon() -> None:
    poly = mask_to_polygon(_rect((100, 100), 0, 0, 10, 5))
    assert {tuple(p) for p in poly.tolist()} == {(0.5, 0.5), (0.5, 4.5), (9.5, 4.5), (9.5, 0.5)}


def test_the_largest_piece_is_kept() -> None:
    mask = _rect((100, 100), 10, 10, 20, 20) | _rect((100, 100), 50, 50, 90, 60)  # 100 px vs 400 px
    poly = mask_to_polygon(mask)
    assert poly[:, 0].min() == 50.5 and poly[:, 1].max() == 59.5


def test_simplification_respects_the_tolerance_and_shrinks_the_polygon() -> None:
    yy, xx = np.mgrid[0:400, 0:400]
    disc = (xx + 0.5 - 200) ** 2 + (yy + 0.5 - 200) ** 2 < 150**2
    full = mask_to_polygon(disc)
    simple = mask_to_polygon(disc, tolerance=2.0)
    assert 3 <= len(simple) < len(full) / 4
    # Every point of the full outline is within the tolerance of the simplified polygon.
    import cv2

    contour = simple.astype(np.float32).reshape(-1, 1, 2)
    dist = [abs(cv2.pointPolygonTest(contour, (float(x), float(y)), True)) for x, y in full]
    assert max(dist) <= 2.0 + 1e-6
    assert polygon_area(simple) == pytest.approx(np.pi * 150**2, rel=0.02)


def test_empty_mask_has_no_polygon_and_no_bounds() -> None:
    assert mask_to_polygon(np.zeros((10, 10), bool)).shape == (0, 2)
    assert mask_bounds(np.zeros((10, 10), bool)) is None


def test_mask_output_refuses_unknown_modes_and_bad_tolerances() -> None:
    with pytest.raises(ValueError, match="polygon, simplified, none"):
        MaskOutput("rle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="> 0"):
        MaskOutput("simplified", 0.0)
