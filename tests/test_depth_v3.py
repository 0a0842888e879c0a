"""Depth Anything 3: the flip, resize, rotary and position-embedding maths by hand, then tiny random
checkpoints in DA3's layout (tests/depth3_factory.py) through the real loading path."""

from __future__ import annotations

import base64
import json
import math

import cv2
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_flip_is_per_image_and_resize_is_bilinear():
    from edge_agent.models.foundation.depth_v3 import flip_and_resize

    depth = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 10.0], [10.0, 30.0]]])
    # each image: max + min - d (1..4 -> 4..1; 10/30 -> 30/10), same size: unchanged by the resize
    out = flip_and_resize(depth, 2, 2)
    assert out.tolist() == [[[4.0, 3.0], [2.0, 1.0]], [[30.0, 30.0], [30.0, 10.0]]]
    # bilinear, align_corners=False: 2 -> 4 columns samples at -0.25, 0.25, 0.75, 1.25 (clamped)
    row = flip_and_resize(torch.tensor([[[4.0, 0.0]]]), 1, 4)  # flipped: 0, 4
    assert row[0, 0].tolist() == pytest.approx([0.0, 1.0, 3.0, 4.0])


def test_rope_2d_turns_the_row_half_and_the_column_half():
    from edge_agent.models.foundation.depth_v3_network import rope_2d

    # d = 4: features 0-1 turn by the row, 2-3 by the column; one frequency (1.0) per half
    tokens = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    positions = torch.tensor([[[1, 2]]])
    out = rope_2d(tokens, positions)[0, 0, 0].tolist()
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(2), math.sin(2)
    assert out == pytest.approx([1 * c1 - 2 * s1, 2 * c1 + 1 * s1, 3 * c2 - 4 * s2, 4 * c2 + 3 * s2], abs=1e-6)


def test_head_position_embedding_by_hand():
    from edge_agent.models.foundation.depth_v3_network import uv_embedding

    # 4 channels, 1 x 2 grid, aspect 2: x = -+1/sqrt(5) (span 2/sqrt(5), (w - 1) / w = 1/2), y = 0;
    # one frequency per axis (omega = 1): (sin x, cos x, sin y, cos y)
    out = uv_embedding(4, 1, 2, 2.0, torch.float32)
    x = 1 / math.sqrt(5)
    assert out[:, 0, 0].tolist() == pytest.approx([math.sin(-x), math.cos(-x), 0.0, 1.0], abs=1e-6)
    assert out[:, 0, 1].tolist() == pytest.approx([math.sin(x), math.cos(x), 0.0, 1.0], abs=1e-6)


def test_config_and_key_names():
    from edge_agent.models.foundation.depth_v3_network import convert_state_dict, parse_config

    arch = parse_config({"config": {"net": {"name": "vits", "alt_start": -1}, "head": {"dim_in": 768}}})
    assert arch.alt_start == -1 and arch.head_dim_in == 768 and arch.out_layers == (5, 7, 9, 11)
    with pytest.raises(ValueError, match="vits and vitb"):
        parse_config({"net": {"name": "vitl"}})
    state = {
        "model.net.pretrained.cls_token": 1,
        "model.head.norm.weight": 2,
        "model.cam_enc.x": 3,
        "model.gs_adapter.y": 4,
        "model.head.scratch.refinenet2_aux.out_conv.weight": 5,
        "head.projects.0.weight": 6,
    }
    assert convert_state_dict(state) == {  # type: ignore[arg-type]
        "backbone.pretrained.cls_token": 1,
        "head.norm.weight": 2,
        "head.projects.0.weight": 6,
    }


def _scene(width: int = 160, height: int = 120) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image[: height // 2, :, 2] = 255
    return image


def _reference(net, directory, image: np.ndarray) -> np.ndarray:
    """The factory's own network (never saved or loaded) on the processor's RGB pixels, flipped,
    upsampled and min-max normalised here."""
    import torch.nn.functional as F

    processor = transformers.AutoImageProcessor.from_pretrained(str(directory))
    pixels = processor(images=image[:, :, ::-1].copy(), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        raw = net(pixels)[0]
    flipped = raw.max() + raw.min() - raw
    up = F.interpolate(flipped[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    up = up.numpy()
    return (up - up.min()) / (up.max() - up.min())


def test_package_layout_offline_the_cli_and_bad_weights(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelArtifactsError
    from tests.agent_cli import run_cli
    from tests.depth3_factory import checkpoint_files, network
    from tests.fixtures.model_server import torch_package

    net = network("tiny", seed=1)
    files = checkpoint_files("tiny", net=net)
    model_server.add_package_model(
        "depth-anything-v3/small", [torch_package("da3", files)], "depth-anything-v3", "depth-estimation"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("depth-anything-v3/small")
    image = _scene()
    (prediction,) = model.predict(image)
    reference = _reference(net, model.directory, image)
    assert prediction.normalized.shape == (120, 160)
    assert np.allclose(prediction.normalized, reference, atol=1e-4)
    assert prediction.normalized.min() == 0.0 and prediction.normalized.max() == 1.0
    assert np.ptp(reference) > 0 and not np.allclose(
        _reference(net, model.directory, image[:, :, ::-1].copy()), reference, atol=1e-3
    )
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "depth-anything-v3/small", "--depth-map-format", "png16", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    grey = cv2.imdecode(np.frombuffer(base64.b64decode(body["normalized_depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint16 and np.abs(grey.astype(np.int64) - np.rint(reference * 65535)).max() <= 7
    # a checkpoint missing a weight the depth head needs is refused, naming the file
    from safetensors.torch import load_file, save_file

    from edge_agent.models.common.settings import ModelSettings
    from edge_agent.models.foundation.depth_v3 import DepthAnythingV3Model

    broken = tmp_path / "broken"
    broken.mkdir()
    for name, data in files.items():
        (broken / name).write_bytes(data)
    state = load_file(str(broken / "model.safetensors"))
    del state["model.head.scratch.output_conv2.2.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelArtifactsError, match=r"model.safetensors.*output_conv2\.2\.weight"):
        DepthAnythingV3Model("depth-anything-v3/small", broken, ModelSettings())
