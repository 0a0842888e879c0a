"""Depth Anything v2: the maths by hand, then tiny random checkpoints through the real loading path.

The checkpoints come from transformers' own config classes (tests/depth_factory.py), served by the
fake Roboflow API in both stacks' layouts: ``/core_model`` into the legacy cache directory, and a
Hugging Face package from the package registry into ``models-cache/``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models.foundation.depth_maths import (
    box_depths,
    depth_map_payload,
    downscale,
    normalize_depth,
    quantize_depth,
)

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def _decode_png(text: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


def test_normalisation_is_min_max_with_one_nearest_and_flat_maps_are_zero():
    depth = np.array([[2.0, 4.0], [6.0, 10.0]], np.float32)
    assert normalize_depth(depth).tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert normalize_depth(np.full((3, 2), 7.0)).tolist() == [[0.0, 0.0]] * 3
    with pytest.raises(ValueError, match="NaN"):
        normalize_depth(np.array([[np.nan, 1.0]]))


def test_png_encodings_are_roboflows_rounded_grey_levels():
    normalized = np.array([[0.0, 0.25, 0.5], [1.0, 1.2, -0.1]], np.float32)
    # round(clip(d) * 65535): 0.25 -> 16383.75 -> 16384, 0.5 -> 32767.5 -> 32768 (half to even)
    assert quantize_depth(normalized, 16).tolist() == [[0, 16384, 32768], [65535, 65535, 0]]
    assert quantize_depth(normalized, 8).tolist() == [[0, 64, 128], [255, 255, 0]]  # 63.75, 127.5
    png16 = _decode_png(depth_map_payload(normalized, "png16"))  # type: ignore[arg-type]
    assert png16.dtype == np.uint16 and png16.tolist() == [[0, 16384, 32768], [65535, 65535, 0]]
    png8 = _decode_png(depth_map_payload(normalized, "png8"))  # type: ignore[arg-type]
    assert png8.dtype == np.uint8 and png8.ndim == 2 and png8.tolist() == [[0, 64, 128], [255, 255, 0]]
    assert np.array_equal(depth_map_payload(normalized, "json"), normalized)
    with pytest.raises(ValueError, match="json, png16, png8"):
        depth_map_payload(normalized, "tiff")


def test_box_depth_is_the_median_of_the_pixels_whose_centres_are_inside():
    depth = np.arange(20, dtype=np.float32).reshape(4, 5) / 19  # value = (5 * row + col) / 19
    boxes = np.array(
        [
            [0, 0, 2, 2],  # pixels (0,0) (0,1) (1,0) (1,1): values 0 1 5 6 -> median 3
            [2.6, 0.4, 5, 1.4],  # centres 3.5, 4.5 in x, 0.5 in y: values 3 4 -> 3.5
            [1.2, 2.2, 1.3, 2.3],  # thinner than a pixel: the pixel it falls in (row 2, col 1) = 11
            [-10, -10, 100, 100],  # clipped to the whole map: median of 0..19 = 9.5
            [50, 50, 60, 60],  # off the map
        ]
    )
    got = box_depths(depth, boxes) * 19
    assert got[:4] == pytest.approx([3.0, 3.5, 11.0, 9.5]) and np.isnan(got[4])


def test_downscale_keeps_the_aspect_ratio_and_averages():
    depth = np.zeros((40, 80), np.float32)
    depth[:, 40:] = 1.0
    small = downscale(depth, 8)
    assert small.shape == (4, 8) and small[:, :4].max() == 0 and small[:, 4:].min() == 1
    assert downscale(depth, 100).shape == (40, 80)


def _reference(directory: Path, image: np.ndarray) -> np.ndarray:
    """The normalised map straight from transformers (RGB in), for comparison with the agent's."""
    processor = transformers.AutoImageProcessor.from_pretrained(str(directory))
    network = transformers.AutoModelForDepthEstimation.from_pretrained(str(directory)).eval()
    inputs = processor(images=image[:, :, ::-1].copy(), return_tensors="pt")
    with torch.inference_mode():
        out = network(**inputs)
    (post,) = processor.post_process_depth_estimation(out, target_sizes=[image.shape[:2]])
    raw = post["predicted_depth"].numpy()
    return (raw - raw.min()) / (raw.max() - raw.min())


def _scene(width: int = 160, height: int = 120) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image[: height // 2, :, 2] = 255  # asymmetric in colour: a BGR/RGB mix-up changes the output
    return image


@pytest.fixture
def depth_files():
    from tests.depth_factory import checkpoint_files

    return checkpoint_files()


def test_legacy_core_model_layout_offline_and_formats(model_server, model_env, depth_files):
    from edge_agent.models import get_model

    model_server.add_core_model("depth-anything-v2", "small", depth_files)
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("depth-anything-v2")  # the bare family is small, as in Roboflow
    assert model.model_id == "depth-anything-v2/small"
    directory = model_env.cache_dir / "depth-anything-v2" / "small"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "model_type.json"} <= {
        p.name for p in directory.iterdir()
    }
    image = _scene()
    (prediction,) = model.predict(image)
    reference = _reference(directory, image)
    assert prediction.normalized.shape == (120, 160)
    assert np.allclose(prediction.normalized, reference, atol=1e-4)
    assert prediction.normalized.min() == 0.0 and prediction.normalized.max() == 1.0
    # BGR fed as RGB (Roboflow's current stack) would give another map
    assert not np.allclose(_reference(directory, image[:, :, ::-1].copy()), reference, atol=1e-3)
    (body,) = model.infer(image, depth_map_format="png16")
    dumped = body.model_dump()
    assert dumped["depth_map_format"] == "png16" and set(dumped) == {"normalized_depth", "depth_map_format", "image"}
    grey = _decode_png(dumped["normalized_depth"])
    assert grey.dtype == np.uint16 and np.abs(grey.astype(np.int64) - np.rint(reference * 65535)).max() <= 7
    picture = _decode_png(dumped["image"])
    assert picture.shape == (120, 160, 3)
    # offline: from the cache, no network
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    (again,) = get_model("depth-anything-v2/small").predict(image)
    assert np.allclose(again.normalized, prediction.normalized)


def test_package_registry_layout_and_the_infer_cli(model_server, model_env, depth_files, tmp_path):
    from edge_agent.models import get_model
    from tests.agent_cli import run_cli
    from tests.fixtures.model_server import hf_package

    model_server.add_package_model(
        "depth-anything-v2/base", [hf_package("hf1", depth_files)], "depth-anything-v2", "depth-estimation"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("depth-anything-v2/base")
    assert "models-cache" in str(model.directory)
    image = _scene(90, 70)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "depth-anything-v2/base", "--depth-map-format", "png8", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    grey = _decode_png(body["normalized_depth"])
    reference = _reference(model.directory, image)
    assert grey.dtype == np.uint8 and np.abs(grey.astype(int) - np.rint(reference * 255)).max() <= 1
    (response,) = model.infer(str(path))
    body = response.model_dump()
    assert body["depth_map_format"] == "json" and np.allclose(body["normalized_depth"], reference, atol=1e-4)
    bad = run_cli("infer", "--model", "depth-anything-v2/base", "--depth-map-format", "tiff", str(path), env=env)
    assert bad.returncode == 2 and "--depth-map-format" in bad.stderr


def test_disabled_flag_and_missing_extra(model_env):
    import subprocess
    import sys

    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    model_env.set(DEPTH_ESTIMATION_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="DEPTH_ESTIMATION_ENABLED=false"):
        get_model("depth-anything-v2/small")
    model_env.set(DEPTH_ESTIMATION_ENABLED=None)
    code = (
        "import sys; sys.modules['transformers'] = None; "
        "from models import get_model; get_model('depth-anything-v2/small')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "pip install 'edge-agent[transformers]'" in result.stderr


def test_depth_detector_pairing_gives_each_box_its_median(model_server, model_env, depth_files, tmp_path):
    """DEPTH_DETECTOR_MODEL_ID (the pairing without the stream's second-model mechanism), and the
    same medians through predict_on_boxes (what STREAM_<NAME>_SECOND_MODEL_ID calls)."""
    from edge_agent.models import get_model
    from tests.live_agent import known_objects_model

    model_server.add_core_model("depth-anything-v2", "small", depth_files)
    # boxes (55, 45, 145, 120) and (190, 142.5, 270, 187.5): pixel rows 142..186 have their centres in the second
    detector = known_objects_model(tmp_path / "detector")
    model_env.set(API_BASE_URL=model_server.base_url, DEPTH_DETECTOR_MODEL_ID=str(detector))
    model = get_model("depth-anything-v2/small")
    image = _scene(320, 240)
    (prediction,) = model.predict(image)
    depth = prediction.normalized
    expected = [float(np.median(depth[45:120, 55:145])), float(np.median(depth[142:187, 190:270]))]
    assert prediction.box_depth.tolist() == pytest.approx(expected)
    rows = prediction.to_response()["predictions"]
    assert [r["class"] for r in rows] == ["widget", "gadget"] and [r["depth"] for r in rows] == pytest.approx(expected)
    on_boxes = model.predict_on_boxes(image, prediction.detections, np.array([False, True]))
    assert np.isnan(on_boxes.box_depth[0]) and on_boxes.box_depth[1] == pytest.approx(expected[1])
    assert on_boxes.to_response()["predictions"][0]["depth"] is None
