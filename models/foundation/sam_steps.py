"""The pure steps around a SAM-family network: prompt coordinates, mask outputs, RLE.

Coordinates: prompts come in source pixels; the network wants them in its 1024x1024 input. SAM2
squashes the frame to 1024x1024 (aspect not kept: ``x * 1024 / W``, ``y * 1024 / H``); SAM v1
scales the longest side to 1024 and pads bottom/right (``x * round(W * s) / W`` with
``s = 1024 / max(W, H)``, as ``ResizeLongestSide.apply_coords``). The half-pixel shift and the
padding point (a ``[0, 0]`` point labelled -1 when a prompt has no box, what the original predictors
append) are done inside transformers' prompt encoder; :func:`prompt_arrays` builds the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError

NETWORK_SIZE = 1024
#: the label transformers' prompt encoder turns into a zero embedding: pads prompts to one length
IGNORED_POINT = -10


@dataclass(frozen=True)
class SamPrompt:
    """One prompt, source pixels: a box (x1, y1, x2, y2) and/or points (x, y) with labels 1
    (object) / 0 (background). One mask comes out per prompt."""

    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.points) != len(self.labels):
            raise InvalidInputError("every point needs a label (1: object, 0: background)")
        if any(label not in (0, 1) for label in self.labels):
            raise InvalidInputError("point labels are 1 (object) or 0 (background)")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise InvalidInputError(f"box {list(self.box)} must be x1,y1,x2,y2 with x1 < x2 and y1 < y2")


def squash_scale(size: tuple[int, int]) -> tuple[float, float]:
    """SAM2: source px -> network px factors (x, y) for a frame of ``size`` (width, height)."""
    width, height = size
    return NETWORK_SIZE / width, NETWORK_SIZE / height


def longest_side_size(size: tuple[int, int]) -> tuple[int, int]:
    """SAM v1: the (width, height) the frame is resized to before bottom/right padding."""
    width, height = size
    scale = NETWORK_SIZE / max(width, height)
    return int(width * scale + 0.5), int(height * scale + 0.5)


def longest_side_scale(size: tuple[int, int]) -> tuple[float, float]:
    new_w, new_h = longest_side_size(size)
    return new_w / size[0], new_h / size[1]


def prompt_arrays(
    prompts: Sequence[SamPrompt], scale: tuple[float, float]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Network-pixel arrays for a batch of prompts: ``points`` (1, P, N, 2), ``labels`` (1, P, N),
    ``boxes`` (1, P, 4); None where no prompt has any. Prompts with fewer points than the longest are
    padded with ``IGNORED_POINT``-labelled points (zero embeddings); boxes must be on all or none."""
    sx, sy = scale
    with_box = [p.box is not None for p in prompts]
    if any(with_box) and not all(with_box):
        raise InvalidInputError("in one call either every prompt has a box or none has")
    most = max((len(p.points) for p in prompts), default=0)
    points = labels = boxes = None
    if most:
        points = np.zeros((1, len(prompts), most, 2), np.float32)
        labels = np.full((1, len(prompts), most), IGNORED_POINT, np.int64)
        for i, prompt in enumerate(prompts):
            for j, ((x, y), label) in enumerate(zip(prompt.points, prompt.labels, strict=True)):
                points[0, i, j] = (x * sx, y * sy)
                labels[0, i, j] = label
    if all(with_box) and prompts:
        boxes = np.array(
            [[p.box[0] * sx, p.box[1] * sy, p.box[2] * sx, p.box[3] * sy] for p in prompts if p.box], np.float32
        )[None]
    return points, labels, boxes


def mask_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """Every outer contour of a bool mask as integer ``[[x, y], ...]`` (Roboflow's ``masks2multipoly``)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[[int(x), int(y)] for x, y in c.reshape(-1, 2)] for c in contours]


def largest_polygon(mask: np.ndarray) -> list[list[int]]:
    """The largest outer contour (SAM v1's ``masks2poly``); ``[]`` for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    best = max(contours, key=cv2.contourArea)
    return [[int(x), int(y)] for x, y in best.reshape(-1, 2)]


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO run lengths of a bool (H, W) mask: column-major, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def rle_string(counts: Sequence[int]) -> str:
    """pycocotools' compressed ``counts`` string (``rleToString``): each count (minus the one two
    before it, from the fourth on) in 5-bit groups, low first, 0x20 = more follows, + 48."""
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out)


def mask_rle(mask: np.ndarray) -> dict[str, object]:
    """``{"size": [H, W], "counts": str}``, pycocotools' ``encode`` of a Fortran-order uint8 mask."""
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": rle_string(rle_counts(mask))}


def clip_to_box(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """``mask`` with everything outside the whole pixels the box touches cleared (in place)."""
    height, width = mask.shape
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    mask[:y0] = False
    mask[y1:] = False
    mask[:, :x0] = False
    mask[:, x1:] = False
    return mask


__all__ = [
    "IGNORED_POINT",
    "NETWORK_SIZE",
    "SamPrompt",
    "clip_to_box",
    "largest_polygon",
    "longest_side_scale",
    "longest_side_size",
    "mask_polygons",
    "mask_rle",
    "prompt_arrays",
    "rle_counts",
    "rle_string",
    "squash_scale",
]
