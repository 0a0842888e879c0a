"""Synthetic world of solid shapes: still frames and H.264 clips with exact ground truth.

The built-in detector ``builtin/shapes-v1`` is trained on, and judged against, this world:

- frames 640x360 .. 1280x720; background a smooth random colour gradient or a blurred random
  texture, plus Gaussian noise (sigma 0..8 grey levels);
- 0..6 filled shapes of one solid colour each: 0 ``circle``, 1 ``square`` (axis-aligned or rotated
  up to 45 degrees), 2 ``triangle`` (equilateral, any rotation); "size across" is a circle's
  diameter, a square's side, a triangle's side, 24..220 px;
- the fill differs from every background pixel under it by >= 60 levels in at least one channel;
- two shapes overlap by at most 30 % of the smaller one's area; at most 30 % of a shape's area is
  cut off by the frame edge;
- ground truth: the tight axis-aligned box ``(x1, y1, x2, y2, class_id)`` of the shape's pixels
  still visible after later shapes are drawn over it, in pixel-edge coordinates (pixel ``i``
  covers ``[i, i + 1)``), so a box is ``(min_col, min_row, max_col + 1, max_row + 1)``;
- clips: shapes move on smooth paths at <= ``max_speed`` px/frame (8 by default), 30 fps.

Everything is seeded through ``np.random.Generator`` and uses only numpy and cv2 (PyAV for clips).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")
MIN_SIZE, MAX_SIZE = 24.0, 220.0
MIN_CONTRAST = 60
MAX_OVERLAP = 0.30
MAX_EDGE_CUT = 0.30
MAX_OBJECTS = 6
MAX_NOISE_SIGMA = 8.0

Gt = tuple[float, float, float, float, int]

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel shape positions
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Shape:
    """One shape: centre (continuous pixel-edge coordinates), size across, angle in degrees."""

    cls: int
    cx: float
    cy: float
    size: float
    angle: float
    color: tuple[int, int, int]  # BGR

    def vertices(self) -> np.ndarray:
        """Polygon vertices (k, 2) for square/triangle; a 64-gon outline for a circle."""
        if self.cls == 0:
            t = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
            r = self.size / 2
        elif self.cls == 1:
            t = np.deg2rad(self.angle) + np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
            r = self.size / math.sqrt(2)
        else:
            t = np.deg2rad(self.angle) + np.array([-0.5, 1 / 6, 5 / 6]) * math.pi
            r = self.size / math.sqrt(3)
        return np.stack([self.cx + r * np.cos(t), self.cy + r * np.sin(t)], axis=1)


@dataclass
class _Mask:
    x0: int
    y0: int
    m: np.ndarray  # uint8 0/1, full shape (not clipped by the frame)

    @property
    def area(self) -> int:
        return int(self.m.sum())


def shape_mask(s: Shape) -> _Mask:
    """Rasterise the whole shape (ignoring the frame) into a local 0/1 mask."""
    v = s.vertices()
    x0 = math.floor(v[:, 0].min()) - 1
    y0 = math.floor(v[:, 1].min()) - 1
    x1 = math.ceil(v[:, 0].max()) + 2
    y1 = math.ceil(v[:, 1].max()) + 2
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # cv2 puts pixel i's centre at i; our coordinates put it at i + 0.5.
    if s.cls == 0:
        c = (round((s.cx - 0.5 - x0) * _ONE), round((s.cy - 0.5 - y0) * _ONE))
        cv2.circle(m, c, round(s.size / 2 * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
    else:
        p = np.round((v - 0.5 - np.array([x0, y0])) * _ONE).astype(np.int32)
        cv2.fillPoly(m, [p], 1, cv2.LINE_8, shift=_SHIFT)
    return _Mask(x0, y0, m)


def _overlap(a: _Mask, b: _Mask) -> int:
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1 = min(a.x0 + a.m.shape[1], b.x0 + b.m.shape[1])
    y1 = min(a.y0 + a.m.shape[0], b.y0 + b.m.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0
    pa = a.m[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
    pb = b.m[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]
    return int(np.count_nonzero(pa & pb))


def _clip_roi(mk: _Mask, width: int, height: int) -> tuple[int, int, int, int, np.ndarray]:
    """Frame-clipped ROI (x0, y0, x1, y1) and the matching part of the mask."""
    x0, y0 = max(mk.x0, 0), max(mk.y0, 0)
    x1 = min(mk.x0 + mk.m.shape[1], width)
    y1 = min(mk.y0 + mk.m.shape[0], height)
    if x1 <= x0 or y1 <= y0:
        return x0, y0, x0, y0, mk.m[:0, :0]
    return x0, y0, x1, y1, mk.m[y0 - mk.y0 : y1 - mk.y0, x0 - mk.x0 : x1 - mk.x0]


def edge_cut_fraction(mk: _Mask, width: int, height: int) -> float:
    *_, inside = _clip_roi(mk, width, height)
    total = mk.area
    return 1.0 - int(inside.sum()) / total if total else 1.0


# --------------------------------------------------------------------------------------------
# Backgrounds and noise


def gradient_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random colour gradient (linear, 4-corner bilinear or radial), float32 BGR."""
    sw, sh = max(2, width // 16), max(2, height // 16)
    xs = (np.arange(sw, dtype=np.float32) + 0.5) / sw
    ys = (np.arange(sh, dtype=np.float32) + 0.5) / sh
    gx, gy = np.meshgrid(xs * width / max(width, height), ys * height / max(width, height))
    kind = rng.integers(3)
    if kind == 0:
        a = rng.uniform(0, 2 * math.pi)
        t = gx * math.cos(a) + gy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        small = c0 + t[..., None] * (c1 - c0)
    elif kind == 1:
        c = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
        small = cv2.resize(c, (sw, sh), interpolation=cv2.INTER_LINEAR)
    else:
        p = rng.uniform(0, 1, 2)
        d = np.sqrt((gx - p[0]) ** 2 + (gy - p[1]) ** 2)
        t = d / max(float(d.max()), 1e-6)
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        small = c0 + t[..., None] * (c1 - c0)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def texture_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Blurred random texture, float32 BGR: random cells upsampled and blurred."""
    cell = float(rng.uniform(4, 80))
    sw, sh = max(2, round(width / cell)), max(2, round(height / cell))
    if rng.random() < 0.5:  # two-colour texture driven by one scalar field
        f = rng.random((sh, sw), dtype=np.float32)[..., None]
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        small = c0 + f * (c1 - c0)
    else:  # full-colour texture around a base colour
        base = rng.uniform(0, 255, 3).astype(np.float32)
        amp = float(rng.uniform(20, 120))
        small = np.clip(base + rng.uniform(-amp, amp, (sh, sw, 3)).astype(np.float32), 0, 255)
    interp = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
    img = cv2.resize(small, (width, height), interpolation=interp)
    sigma = float(rng.uniform(0.5, 3.0)) * min(cell, 20.0) / 4
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img, 0, 255)


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    if rng.random() < 0.5:
        return gradient_background(rng, width, height)
    return texture_background(rng, width, height)


def noise_pattern(rng: np.random.Generator, width: int, height: int, sigma: float) -> np.ndarray:
    """Gaussian noise field (float32, HxWx3) of the given sigma."""
    n = rng.standard_normal((height, width, 3), dtype=np.float32)
    n *= sigma
    return n


# --------------------------------------------------------------------------------------------
# Placing shapes under the contract


def _min_contrast(fills: np.ndarray, bg_pixels: np.ndarray) -> np.ndarray:
    """For each candidate fill (k, 3): min over pixels of the max channel difference."""
    d = np.abs(bg_pixels[None, :, :] - fills[:, None, :]).max(axis=2)
    return d.min(axis=1)


def pick_fill(
    rng: np.random.Generator, bg_pixels: np.ndarray, min_contrast: float, tries: int = 4
) -> tuple[int, int, int] | None:
    """A random solid colour that differs from every background pixel given by >= min_contrast."""
    if bg_pixels.shape[0] > 4096:  # subsample for speed, then verify on all pixels
        sub = bg_pixels[rng.integers(0, bg_pixels.shape[0], 4096)]
    else:
        sub = bg_pixels
    for _ in range(tries):
        cand = rng.integers(0, 256, (24, 3)).astype(np.float32)
        ok = np.flatnonzero(_min_contrast(cand, sub) >= min_contrast)
        for i in ok:
            if sub is bg_pixels or _min_contrast(cand[i : i + 1], bg_pixels)[0] >= min_contrast:
                c = cand[i]
                return int(c[0]), int(c[1]), int(c[2])
    return None


def random_shape_geometry(
    rng: np.random.Generator,
    width: int,
    height: int,
    size_range: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
    cls: int | None = None,
) -> Shape:
    """Random class, log-uniform size, angle and centre (the centre may sit past the edge)."""
    c = int(rng.integers(3)) if cls is None else cls
    size = float(math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1]))))
    if c == 1:
        angle = 0.0 if rng.random() < 0.4 else float(rng.uniform(-45, 45))
    elif c == 2:
        angle = float(rng.uniform(0, 360))
    else:
        angle = 0.0
    m = size * 0.45
    cx = float(rng.uniform(-m, width + m))
    cy = float(rng.uniform(-m, height + m))
    return Shape(c, cx, cy, size, angle, (0, 0, 0))


def place_shapes(
    rng: np.random.Generator,
    bg: np.ndarray,
    n: int,
    *,
    size_range: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
    min_contrast: float = MIN_CONTRAST,
    max_overlap: float = MAX_OVERLAP,
    max_edge_cut: float = MAX_EDGE_CUT,
    max_tries: int = 60,
) -> tuple[list[Shape], list[_Mask]]:
    """Up to n shapes that satisfy the contract on this background (fewer if tries run out)."""
    height, width = bg.shape[:2]
    shapes: list[Shape] = []
    masks: list[_Mask] = []
    for _ in range(max_tries):
        if len(shapes) >= n:
            break
        s = random_shape_geometry(rng, width, height, size_range)
        mk = shape_mask(s)
        area = mk.area
        if area == 0 or edge_cut_fraction(mk, width, height) > max_edge_cut:
            continue
        if any(_overlap(mk, o) > max_overlap * min(area, o.area) for o in masks):
            continue
        x0, y0, x1, y1, inside = _clip_roi(mk, width, height)
        under = bg[y0:y1, x0:x1][inside.astype(bool)]
        color = pick_fill(rng, under, min_contrast)
        if color is None:
            continue
        shapes.append(replace(s, color=color))
        masks.append(mk)
    return shapes, masks


# --------------------------------------------------------------------------------------------
# Rendering


def draw_shapes(img: np.ndarray, shapes: Sequence[Shape], masks: Sequence[_Mask] | None = None) -> list[Gt]:
    """Paint shapes in order onto img (HxWx3, any dtype) and return the visible-part boxes."""
    height, width = img.shape[:2]
    if masks is None:
        masks = [shape_mask(s) for s in shapes]
    ids = np.zeros((height, width), np.uint8)
    rois = []
    for k, (s, mk) in enumerate(zip(shapes, masks, strict=True)):
        x0, y0, x1, y1, inside = _clip_roi(mk, width, height)
        rois.append((x0, y0, x1, y1))
        if x1 <= x0:
            continue
        sel = inside.astype(bool)
        img[y0:y1, x0:x1][sel] = s.color
        ids[y0:y1, x0:x1][sel] = k + 1
    gts: list[Gt] = []
    for k, (s, (x0, y0, x1, y1)) in enumerate(zip(shapes, rois, strict=True)):
        if x1 <= x0:
            continue
        vis = ids[y0:y1, x0:x1] == k + 1
        cols = np.flatnonzero(vis.any(axis=0))
        if cols.size == 0:
            continue
        rows = np.flatnonzero(vis.any(axis=1))
        gts.append(
            (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1), s.cls)
        )
    return gts


def instance_ids(shapes: Sequence[Shape], width: int, height: int) -> tuple[np.ndarray, list[int]]:
    """Which shape each pixel shows: an (H, W) uint8 map, 0 = background, k + 1 = ``shapes[k]``,
    and the indices of the shapes with visible pixels, in the order :func:`draw_shapes` lists their
    boxes (so ground truth box j and mask ``ids == order[j] + 1`` are the same object)."""
    ids = np.zeros((height, width), np.uint8)
    for k, s in enumerate(shapes):
        x0, y0, x1, y1, inside = _clip_roi(shape_mask(s), width, height)
        if x1 > x0:
            ids[y0:y1, x0:x1][inside.astype(bool)] = k + 1
    present = set(np.unique(ids).tolist())
    return ids, [k for k in range(len(shapes)) if k + 1 in present]


def render_frame(
    rng: np.random.Generator,
    width: int = 1280,
    height: int = 720,
    *,
    n_objects: int | None = None,
    noise_sigma: float | None = None,
    background: str | None = None,
    size_range: tuple[float, float] = (MIN_SIZE, MAX_SIZE),
    min_contrast: float = MIN_CONTRAST,
    max_overlap: float = MAX_OVERLAP,
    max_edge_cut: float = MAX_EDGE_CUT,
    noise_on_shapes: bool = True,
    return_shapes: bool = False,
):
    """One random frame: (bgr uint8 HxWx3, [(x1, y1, x2, y2, class_id), ...]).

    n_objects: None -> uniform 0..6; noise_sigma: None -> uniform 0..8; background: None,
    "gradient" or "texture". With return_shapes=True a third item, the list of Shape, is returned.
    """
    if n_objects is None:
        n_objects = int(rng.integers(0, MAX_OBJECTS + 1))
    if noise_sigma is None:
        noise_sigma = float(rng.uniform(0, MAX_NOISE_SIGMA))
    if background is None:
        bg = random_background(rng, width, height)
    elif background == "gradient":
        bg = gradient_background(rng, width, height)
    elif background == "texture":
        bg = texture_background(rng, width, height)
    else:
        raise ValueError(f"background must be None, 'gradient' or 'texture', not {background!r}")
    shapes, masks = place_shapes(
        rng,
        bg,
        n_objects,
        size_range=size_range,
        min_contrast=min_contrast,
        max_overlap=max_overlap,
        max_edge_cut=max_edge_cut,
    )
    img = bg
    if noise_sigma > 0 and not noise_on_shapes:
        img = img + noise_pattern(rng, width, height, noise_sigma)
    img = np.clip(img, 0, 255)
    gts = draw_shapes(img, shapes, masks)
    if noise_sigma > 0 and noise_on_shapes:
        img = img + noise_pattern(rng, width, height, noise_sigma)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if return_shapes:
        return out, gts, shapes
    return out, gts


def random_frame_size(rng: np.random.Generator) -> tuple[int, int]:
    """Width and height drawn independently across 640..1280 x 360..720 (odd aspects included)."""
    return int(rng.integers(640, 1281)), int(rng.integers(360, 721))


# --------------------------------------------------------------------------------------------
# Video


@dataclass
class _Mover:
    shape: Shape
    vx: float
    vy: float
    spin: float  # degrees per frame


class Scene:
    """Shapes moving on smooth paths over a fixed background at <= max_speed px/frame.

    Velocities drift smoothly (small random accelerations); a move that would break the overlap,
    edge-cut or contrast rules is refused and the velocity turned back instead, so every frame
    keeps the contract. max_speed=0 gives a static scene.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        width: int = 1280,
        height: int = 720,
        *,
        n_objects: int | None = None,
        max_speed: float = 8.0,
        noise_sigma: float | None = None,
        fixed_noise: bool = True,
        background: str | None = None,
        min_contrast: float = MIN_CONTRAST,
    ) -> None:
        self.rng, self.width, self.height = rng, width, height
        self.max_speed = float(max_speed)
        self.min_contrast = min_contrast
        if n_objects is None:
            n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
        if noise_sigma is None:
            noise_sigma = float(rng.uniform(0, MAX_NOISE_SIGMA))
        self.noise_sigma = noise_sigma
        self.fixed_noise = fixed_noise
        self.bg = self._scene_background(background)
        self._bg_u8 = np.clip(self.bg + 0.5, 0, 255).astype(np.uint8)
        self._noise = noise_pattern(rng, width, height, noise_sigma) if noise_sigma > 0 else None
        shapes, _ = place_shapes(rng, self.bg, n_objects, min_contrast=min_contrast)
        self.movers = []
        for s in shapes:
            speed = float(rng.uniform(0.3, 1.0)) * self.max_speed
            a = float(rng.uniform(0, 2 * math.pi))
            spin = 0.0 if s.cls == 0 else float(rng.uniform(-1.5, 1.5)) * min(self.max_speed / 8.0, 1.0)
            self.movers.append(_Mover(s, speed * math.cos(a), speed * math.sin(a), spin))
        self.masks = [shape_mask(m.shape) for m in self.movers]

    def _scene_background(self, kind: str | None) -> np.ndarray:
        r, w, h = self.rng, self.width, self.height
        if kind == "gradient" or (kind is None and r.random() < 0.5):
            return gradient_background(r, w, h)
        return texture_background(r, w, h)

    @property
    def shapes(self) -> list[Shape]:
        return [m.shape for m in self.movers]

    def _ok(self, k: int, s: Shape, mk: _Mask) -> bool:
        area = mk.area
        if area == 0 or edge_cut_fraction(mk, self.width, self.height) > MAX_EDGE_CUT:
            return False
        for j, o in enumerate(self.masks):
            if j != k and _overlap(mk, o) > MAX_OVERLAP * min(area, o.area):
                return False
        x0, y0, x1, y1, inside = _clip_roi(mk, self.width, self.height)
        under = self.bg[y0:y1, x0:x1][inside.astype(bool)]
        if under.size == 0:
            return False
        return float(_min_contrast(np.float32(s.color)[None], under)[0]) >= self.min_contrast

    def step(self) -> None:
        """Advance one frame."""
        if self.max_speed <= 0:
            return
        r = self.rng
        for k, mv in enumerate(self.movers):
            # Smooth drift: small acceleration, speed capped at max_speed.
            mv.vx += float(r.normal(0, 0.08 * self.max_speed))
            mv.vy += float(r.normal(0, 0.08 * self.max_speed))
            s = mv.shape
            # Cap so that no point of the shape (spin included) moves more than max_speed.
            cap = max(self.max_speed - abs(math.radians(mv.spin)) * s.size / math.sqrt(2), 0.0)
            sp = math.hypot(mv.vx, mv.vy)
            if sp > cap:
                mv.vx, mv.vy = mv.vx * cap / sp, mv.vy * cap / sp
            angle = s.angle + mv.spin
            if s.cls == 1 and abs(angle) > 45:
                mv.spin = -mv.spin
                angle = s.angle + mv.spin
            cand = replace(s, cx=s.cx + mv.vx, cy=s.cy + mv.vy, angle=angle)
            mk = shape_mask(cand)
            if self._ok(k, cand, mk):
                mv.shape, self.masks[k] = cand, mk
                continue
            # Blocked: turn back (and damp) so the path bends away; stay put this frame.
            mv.vx, mv.vy = -mv.vx * 0.8, -mv.vy * 0.8
            mv.spin = -mv.spin

    def render(self) -> tuple[np.ndarray, list[Gt]]:
        img = self.bg.copy()
        gts = draw_shapes(img, self.shapes, self.masks)
        if self._noise is not None:
            if self.fixed_noise:
                img += self._noise
            else:
                img += noise_pattern(self.rng, self.width, self.height, self.noise_sigma)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), gts


def write_clip(
    path: str | Path,
    seconds: float,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    seed: int = 0,
    max_speed: float = 8.0,
    noise_sigma: float | None = None,
    *,
    n_objects: int | None = None,
    fixed_noise: bool = True,
    crf: int = 23,
    preset: str = "medium",
    gt_path: str | Path | None = None,
) -> list[list[Gt]]:
    """Write an H.264 (libx264, yuv420p) MP4 of a moving scene; returns per-frame ground truth.

    fixed_noise keeps one noise pattern over time: per-frame fresh noise defeats compression.
    gt_path, if given, also writes {"width","height","fps","classes","frames": [[gt...], ...]}.
    """
    import av

    rng = np.random.default_rng(seed)
    scene = Scene(
        rng,
        width,
        height,
        n_objects=n_objects,
        max_speed=max_speed,
        noise_sigma=noise_sigma,
        fixed_noise=fixed_noise,
    )
    n_frames = round(seconds * fps)
    all_gts: list[list[Gt]] = []
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for i in range(n_frames):
            if i:
                scene.step()
            img, gts = scene.render()
            all_gts.append(gts)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if gt_path is not None:
        doc = {
            "width": width,
            "height": height,
            "fps": fps,
            "seed": seed,
            "classes": list(CLASS_NAMES),
            "box_format": "x1,y1,x2,y2,class_id (pixel edges)",
            "frames": [[list(g) for g in f] for f in all_gts],
        }
        Path(gt_path).write_text(json.dumps(doc, separators=(",", ":")))
    return all_gts


# --------------------------------------------------------------------------------------------
# Tracking world: identities, occluders, stops, objects entering and leaving


TrackGt = tuple[int, float, float, float, float, int, float]  # id, x1, y1, x2, y2, class_id, visible


@dataclass
class _Walker:
    ident: int
    shape: Shape
    vx: float  # px/frame, signed
    stop_x: float | None  # centre x where it stops (None: never)
    stop_frames: int
    stopped_for: int = 0


class TrackingWorld:
    """Objects crossing the frame in horizontal lanes, with identities, for tracking ground truth.

    - ``lanes`` horizontal lanes, at most one object each at a time, so objects never overlap;
      an object enters past one side edge, moves straight at ``speed_range`` px/frame (at 1280 px wide;
      scaled with the width) and leaves past the other; the lane then stays empty for 0..1.5 s;
    - ``stop_probability`` of them stop once for 1..2.5 s with their centre within ``stop_band``
      (fractions of the width), then go on;
    - ``pillars``: full-height bars (x ranges as fractions of the width) drawn over the objects,
      which pass behind them (occlusions with the identity kept);
    - each object's fill contrasts with the whole of its lane's background (MIN_CONTRAST).

    Ground truth per frame: ``(id, x1, y1, x2, y2, class_id, visible)``, the box of the visible
    pixels (after pillars and the frame edge) and the visible fraction of the shape's area; an
    object with no visible pixel is absent.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        width: int = 1280,
        height: int = 720,
        *,
        fps: int = 30,
        lanes: int = 5,
        size_range: tuple[float, float] = (40.0, 64.0),
        speed_range: tuple[float, float] = (4.0, 8.0),
        stop_probability: float = 0.3,
        stop_band: tuple[float, float] = (0.55, 0.65),
        pillars: Sequence[tuple[float, float]] = ((0.72, 0.77),),
        noise_sigma: float = 3.0,
    ) -> None:
        self.rng, self.width, self.height, self.fps = rng, width, height, fps
        self.scale = width / 1280.0
        self.size_range = (size_range[0] * self.scale, size_range[1] * self.scale)
        self.speed_range = speed_range
        self.stop_probability = stop_probability
        self.stop_band = stop_band
        self.pillars = [(round(a * width), round(b * width)) for a, b in pillars]
        self.bg = random_background(rng, width, height)
        noise = noise_pattern(rng, width, height, noise_sigma) if noise_sigma > 0 else None
        self._base = self.bg + noise if noise is not None else self.bg.copy()
        self.pillar_colors = [
            pick_fill(rng, self.bg[:, a:b].reshape(-1, 3), 40) or (128, 128, 128) for a, b in self.pillars
        ]
        band = height / lanes
        self.lane_y = [band * (k + 0.5) for k in range(lanes)]
        self.walkers: list[_Walker | None] = [None] * lanes
        self.wait = [int(rng.integers(0, fps)) for _ in range(lanes)]
        self.next_id = 1
        self.frame = 0

    def _spawn(self, lane: int) -> _Walker | None:
        r = self.rng
        size = float(r.uniform(*self.size_range))
        cls = int(r.integers(3))
        angle = 0.0 if cls != 2 else float(r.uniform(0, 360))
        speed = float(r.uniform(*self.speed_range)) * self.scale
        left_to_right = bool(r.random() < 0.5)
        cx = -size if left_to_right else self.width + size
        cy = self.lane_y[lane] + float(r.uniform(-0.1, 0.1)) * (self.height / len(self.lane_y))
        y0 = max(int(cy - size), 0)
        y1 = min(int(cy + size), self.height)
        color = pick_fill(r, self.bg[y0:y1].reshape(-1, 3), MIN_CONTRAST)
        if color is None:
            return None
        stop_x = None
        if r.random() < self.stop_probability:
            stop_x = float(r.uniform(*self.stop_band)) * self.width
        walker = _Walker(
            self.next_id,
            Shape(cls, cx, cy, size, angle, color),
            speed if left_to_right else -speed,
            stop_x,
            int(r.uniform(1.0, 2.5) * self.fps),
        )
        self.next_id += 1
        return walker

    def step(self) -> None:
        """Advance one frame (the first frame is rendered before any step)."""
        self.frame += 1
        for lane, w in enumerate(self.walkers):
            if w is None:
                self.wait[lane] -= 1
                if self.wait[lane] <= 0:
                    self.walkers[lane] = self._spawn(lane)
                continue
            s = w.shape
            if w.stop_x is not None and (s.cx - w.stop_x) * (s.cx + w.vx - w.stop_x) <= 0:
                if w.stopped_for < w.stop_frames:
                    w.stopped_for += 1
                    continue
                w.stop_x = None
            w.shape = replace(s, cx=s.cx + w.vx)
            if w.shape.cx < -2 * s.size or w.shape.cx > self.width + 2 * s.size:
                self.walkers[lane] = None
                self.wait[lane] = int(self.rng.integers(0, int(1.5 * self.fps) + 1))

    def render(self) -> tuple[np.ndarray, list[TrackGt]]:
        img = self._base.copy()
        live = [w for w in self.walkers if w is not None]
        masks = [shape_mask(w.shape) for w in live]
        covered = np.zeros(self.width, bool)
        for a, b in self.pillars:
            covered[a:b] = True
        gts: list[TrackGt] = []
        for w, mk in zip(live, masks, strict=True):
            x0, y0, x1, y1, inside = _clip_roi(mk, self.width, self.height)
            if x1 <= x0:
                continue
            sel = inside.astype(bool)
            img[y0:y1, x0:x1][sel] = w.shape.color
            vis = sel & ~covered[x0:x1][None, :]
            area = mk.area
            cols = np.flatnonzero(vis.any(axis=0))
            if cols.size == 0 or area == 0:
                continue
            rows = np.flatnonzero(vis.any(axis=1))
            box = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
            gts.append((w.ident, *box, w.shape.cls, round(int(vis.sum()) / area, 4)))
        for (a, b), color in zip(self.pillars, self.pillar_colors, strict=True):
            img[:, a:b] = color
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), gts


def write_tracking_clip(
    path: str | Path,
    seconds: float,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    seed: int = 0,
    *,
    gt_path: str | Path | None = None,
    crf: int = 23,
    preset: str = "veryfast",
    **world: object,
) -> list[list[TrackGt]]:
    """Write an H.264 MP4 of a :class:`TrackingWorld`; returns per-frame ground truth with ids.

    gt_path, if given, also writes {"width","height","fps","classes","frames": [[[id, x1, y1, x2,
    y2, class_id, visible], ...], ...]} (frame k is at time k / fps).
    """
    import av

    tw = TrackingWorld(np.random.default_rng(seed), width, height, fps=fps, **world)  # type: ignore[arg-type]
    frames: list[list[TrackGt]] = []
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for i in range(round(seconds * fps)):
            if i:
                tw.step()
            img, gts = tw.render()
            frames.append(gts)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if gt_path is not None:
        doc = {
            "width": width,
            "height": height,
            "fps": fps,
            "seed": seed,
            "classes": list(CLASS_NAMES),
            "box_format": "id,x1,y1,x2,y2,class_id,visible_fraction (pixel edges)",
            "frames": [[list(g) for g in f] for f in frames],
        }
        Path(gt_path).write_text(json.dumps(doc, separators=(",", ":")))
    return frames
