"""The built-in shapes model and the synthetic world it is trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tools import synthworld as sw

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "models" / "builtin" / "shapes-v1"
SAMPLE = ROOT / "models" / "builtin" / "sample.mp4"


# ------------------------------------------------------------------------------------------------
# Generator contract


def _frames(n: int, seed: int = 11):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        w, h = sw.random_frame_size(rng)
        yield (w, h, *sw.render_frame(rng, w, h, return_shapes=True))


def test_frame_sizes_and_counts() -> None:
    counts = []
    for w, h, img, gts, shapes in _frames(30):
        assert 640 <= w <= 1280 and 360 <= h <= 720
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert 0 <= len(gts) <= len(shapes) <= sw.MAX_OBJECTS
        for x1, y1, x2, y2, c in gts:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert c in (0, 1, 2)
        for s in shapes:
            assert sw.MIN_SIZE <= s.size <= sw.MAX_SIZE
            if s.cls == 1:
                assert -45 <= s.angle <= 45
        counts.append(len(gts))
    assert max(counts) >= 4  # the full range is exercised, not just sparse frames


def test_rules_on_placed_shapes() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        w, h = sw.random_frame_size(rng)
        bg = sw.random_background(rng, w, h)
        shapes, masks = sw.place_shapes(rng, bg, 6)
        for s, mk in zip(shapes, masks, strict=True):
            assert sw.edge_cut_fraction(mk, w, h) <= sw.MAX_EDGE_CUT + 1e-9
            x0, y0, x1, y1, inside = sw._clip_roi(mk, w, h)
            under = bg[y0:y1, x0:x1][inside.astype(bool)]
            diff = np.abs(under - np.float32(s.color)).max(axis=1)
            assert diff.min() >= sw.MIN_CONTRAST
        for i in range(len(masks)):
            for j in range(i):
                small = min(masks[i].area, masks[j].area)
                assert sw._overlap(masks[i], masks[j]) <= sw.MAX_OVERLAP * small


def test_ground_truth_is_tight() -> None:
    rng = np.random.default_rng(3)
    for _ in range(15):
        img, gts, shapes = sw.render_frame(rng, 960, 540, noise_sigma=0.0, return_shapes=True)
        colors = {s.cls: [] for s in shapes}
        for s in shapes:
            colors[s.cls].append(s.color)
        for x1, y1, x2, y2, c in gts:
            x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
            patch = img[y1:y2, x1:x2].astype(int)
            hit = np.zeros(patch.shape[:2], bool)
            for col in colors[c]:
                hit |= np.abs(patch - np.array(col)).max(axis=2) == 0
            # The shape's own pixels touch all four sides of its box.
            assert hit[0].any() and hit[-1].any() and hit[:, 0].any() and hit[:, -1].any()


def test_circle_box_matches_geometry() -> None:
    s = sw.Shape(0, 100.0, 80.0, 40.0, 0.0, (255, 255, 255))
    img = np.zeros((200, 200, 3), np.uint8)
    ((x1, y1, x2, y2, c),) = sw.draw_shapes(img, [s])
    assert c == 0
    assert abs(x1 - 80) <= 1 and abs(x2 - 120) <= 1 and abs(y1 - 60) <= 1 and abs(y2 - 100) <= 1


def test_scene_speed_and_static() -> None:
    scene = sw.Scene(np.random.default_rng(1), 800, 450, n_objects=6, max_speed=0)
    a, ga = scene.render()
    scene.step()
    b, gb = scene.render()
    assert np.array_equal(a, b) and ga == gb

    scene = sw.Scene(np.random.default_rng(2), 800, 450, n_objects=6, max_speed=8.0)
    prev = [(s.cx, s.cy) for s in scene.shapes]
    for _ in range(60):
        scene.step()
        cur = [(s.cx, s.cy) for s in scene.shapes]
        assert all(math.hypot(x - px, y - py) <= 8.0 + 1e-6 for (x, y), (px, py) in zip(cur, prev, strict=True))
        prev = cur
        masks = scene.masks
        for i in range(len(masks)):
            assert sw.edge_cut_fraction(masks[i], 800, 450) <= sw.MAX_EDGE_CUT + 1e-9
            for j in range(i):
                assert sw._overlap(masks[i], masks[j]) <= sw.MAX_OVERLAP * min(masks[i].area, masks[j].area)


def test_write_clip_is_h264(tmp_path: Path) -> None:
    import av

    path = tmp_path / "c.mp4"
    gts = sw.write_clip(path, 0.5, width=320, height=240, fps=30, seed=4, preset="ultrafast")
    assert len(gts) == 15
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264" and st.codec_context.pix_fmt == "yuv420p"
        assert (st.width, st.height) == (320, 240)
        assert sum(1 for _ in c.decode(video=0)) == 15


def test_sample_clip() -> None:
    import av

    assert SAMPLE.stat().st_size <= 10 * 1024 * 1024
    with av.open(str(SAMPLE)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264" and st.codec_context.pix_fmt == "yuv420p"
        assert (st.width, st.height) == (1280, 720) and st.average_rate == 30
        assert 20 <= c.duration / 1e6 <= 60
        n = st.frames
    doc = json.loads((SAMPLE.parent / "sample_gt.json").read_text())
    assert len(doc["frames"]) == n


# ------------------------------------------------------------------------------------------------
# Package and ONNX contract


def test_package_files() -> None:
    assert (PKG / "weights.onnx").stat().st_size <= 15 * 1024 * 1024
    assert (PKG / "class_names.txt").read_text().split() == ["circle", "square", "triangle"]
    mt = json.loads((PKG / "model_type.json").read_text())
    assert mt == {"project_task_type": "object-detection", "model_type": "yolov8n", "model_id": "builtin/shapes-v1"}
    env = json.loads((PKG / "environment.json").read_text())
    rs = env["PREPROCESSING"]["resize"]
    assert rs["enabled"] and rs["format"] == "Fit (grey edges) in"
    assert env["CLASS_MAP"] == {"0": "circle", "1": "square", "2": "triangle"}


def test_onnx_layout_and_batches() -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(PKG / "weights.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "images" and inp.type == "tensor(float)"
    assert not isinstance(inp.shape[0], int) and isinstance(inp.shape[2], int) and isinstance(inp.shape[3], int)
    env = json.loads((PKG / "environment.json").read_text())["PREPROCESSING"]["resize"]
    assert (inp.shape[3], inp.shape[2]) == (env["width"], env["height"])
    for b in (1, 4):
        x = np.random.default_rng(0).random((b, 3, inp.shape[2], inp.shape[3]), dtype=np.float32)
        (out,) = sess.run(None, {"images": x})
        assert out.shape[0] == b and out.shape[1] == 4 + 3
        assert out[:, 4:].min() >= 0 and out[:, 4:].max() <= 1


# ------------------------------------------------------------------------------------------------
# Through models.get_model


@pytest.fixture
def offline_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("OFFLINE_MODE", "true")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("MODEL_CACHE_DIR", str(cache))
    from edge_agent.models import get_model

    return get_model("builtin/shapes-v1")


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(("seed", "size"), [(101, (1280, 720)), (104, (640, 360)), (103, (900, 700))])
def test_builtin_model_finds_shapes(offline_model, seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    img, gts = sw.render_frame(rng, *size, n_objects=5, noise_sigma=4.0)
    assert gts
    (resp,) = offline_model.infer(img)
    assert resp.image.width == size[0] and resp.image.height == size[1]
    dets = [
        (p.x - p.width / 2, p.y - p.height / 2, p.x + p.width / 2, p.y + p.height / 2, p.class_id)
        for p in resp.predictions
    ]
    for g in gts:
        best = max((_iou(g, d) for d in dets if d[4] == g[4]), default=0.0)
        assert best >= 0.7, f"ground truth {g} not found (best IoU {best:.2f}) among {dets}"


def test_builtin_model_empty_image(offline_model) -> None:
    rng = np.random.default_rng(7)
    blank, gts = sw.render_frame(rng, 1280, 720, n_objects=0, noise_sigma=5.0)
    assert not gts
    grey = np.full((720, 1280, 3), 114, np.uint8)
    for resp in offline_model.infer([blank, grey]):
        assert resp.predictions == []
