"""The built-in instance-segmentation model builtin/shapes-seg-v1, its training targets, and the
agent running it on the bundled clip with no network."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tools import synthworld as sw

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "models" / "builtin" / "shapes-seg-v1"
SCHEMA = json.loads((ROOT / "pipelines" / "schemas" / "instance-segmentation.schema.json").read_text())


def test_instance_ids_match_the_ground_truth_boxes() -> None:
    rng = np.random.default_rng(21)
    for _ in range(10):
        img, gts, shapes = sw.render_frame(rng, 800, 450, noise_sigma=0.0, return_shapes=True)
        ids, order = sw.instance_ids(shapes, 800, 450)
        assert len(order) == len(gts)
        for (x1, y1, x2, y2, c), k in zip(gts, order, strict=True):
            rows, cols = np.nonzero(ids == k + 1)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
            assert shapes[k].cls == c
            assert (img[rows, cols] == shapes[k].color).all()  # the pixels are that shape's


def test_training_mask_targets_line_up_with_the_boxes() -> None:
    from tools.train_shapes import training_sample

    rng = np.random.default_rng(3)
    seen = 0
    for _ in range(12):
        _, boxes, masks = training_sample(rng, mask_stride=4)
        assert masks.shape == (len(boxes), 384 // 4, 640 // 4) and masks.dtype == np.uint8
        for box, mask in zip(boxes, masks, strict=True):
            rows, cols = np.nonzero(mask)
            # The cells a mask touches are the cells its box touches (both from the same pixels).
            assert abs(cols.min() - box[0] / 4) < 1 and abs(cols.max() + 1 - box[2] / 4) < 1
            assert abs(rows.min() - box[1] / 4) < 1 and abs(rows.max() + 1 - box[3] / 4) < 1
            seen += 1
    assert seen >= 10


def test_package_files_and_onnx_layout() -> None:
    import onnxruntime as ort

    assert (PKG / "weights.onnx").stat().st_size <= 15 * 1024 * 1024
    assert (PKG / "class_names.txt").read_text().split() == ["circle", "square", "triangle"]
    mt = json.loads((PKG / "model_type.json").read_text())
    assert mt == {
        "project_task_type": "instance-segmentation",
        "model_type": "yolov8n-seg",
        "model_id": "builtin/shapes-seg-v1",
    }
    sess = ort.InferenceSession(str(PKG / "weights.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 384, 640), dtype=np.float32)
    out0, out1 = sess.run(None, {"images": x})
    assert out0.shape == (2, 4 + 3 + 32, 5040) and out1.shape == (2, 32, 96, 160)
    assert out0[:, 4:7].min() >= 0 and out0[:, 4:7].max() <= 1


@pytest.fixture
def offline_seg_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFLINE_MODE", "true")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    from edge_agent.models import get_model

    return get_model("builtin/shapes-seg-v1")


@pytest.mark.parametrize(("seed", "size"), [(201, (1280, 720)), (202, (640, 360)), (203, (900, 700))])
def test_builtin_seg_model_masks_match_the_exact_shapes(offline_seg_model, seed: int, size: tuple[int, int]) -> None:
    from edge_agent.models.maths.polygons import polygon_area

    img, _, shapes = sw.render_frame(
        np.random.default_rng(seed), *size, n_objects=5, noise_sigma=4.0, size_range=(40.0, 220.0), return_shapes=True
    )
    ids, order = sw.instance_ids(shapes, *size)
    assert order
    (seg,) = offline_seg_model.predict(img)
    assert seg.masks.shape == (len(seg), size[1], size[0])
    for k in order:
        truth = ids == k + 1
        ious = [
            (truth & m).sum() / (truth | m).sum()
            for m, c in zip(seg.masks, seg.class_ids, strict=True)
            if c == shapes[k].cls
        ]
        assert max(ious, default=0.0) >= 0.8, f"shape {shapes[k]} best mask IoU {max(ious, default=0.0):.2f}"
    polygons = seg.to_response()["predictions"]
    for row, mask in zip(polygons, seg.masks, strict=True):
        area = polygon_area(np.array([(p["x"], p["y"]) for p in row["points"]]))
        assert area == pytest.approx(mask.sum(), rel=0.2)  # the outline goes through the edge pixels' centres


@pytest.mark.slow
def test_agent_runs_the_builtin_seg_model_on_the_sample_clip_offline(tmp_path: Path) -> None:
    env = {"MODEL_ID": "builtin/shapes-seg-v1", "OFFLINE_MODE": "true", "MODEL_CACHE_DIR": str(tmp_path / "cache")}
    with AgentProcess(env, tmp_path) as agent:
        ok = agent.wait_for(lambda preds: sum(1 for p in preds if p["predictions"]) >= 5, timeout=120)
        agent.terminate()
        assert ok, agent.stderr()
    messages = agent.predictions()
    for m in messages:
        jsonschema.validate(m, SCHEMA)
        assert m["model_id"] == "builtin/shapes-seg-v1" and m["stream"] == "sample"
    with_shapes = [m for m in messages if m["predictions"]]
    assert all(len(p["points"]) >= 3 and p["mask_format"] == "polygon" for m in with_shapes for p in m["predictions"])
