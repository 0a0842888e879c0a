"""SAM v1: segment_anything's pre-processing (longest side 1024, padding), the masks' way back to
source pixels, Roboflow's ``encoder.pth`` (legacy) and ``model.pth`` + ``sam_configuration.json``
(current) loading through the real loader, and Roboflow's ``/sam/segment_image`` shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from edge_agent.models.foundation.sam import sam_input  # noqa: E402
from edge_agent.models.foundation.sam_weights import SAM_VARIANTS, sam_config, sam_state_to_hf  # noqa: E402
from tests.sam_factory import original_sam_state, sam_model, sam_state_bytes, tiny_sam_config  # noqa: E402
from tests.test_sam2 import _KnownMasks  # noqa: E402


@pytest.fixture(scope="module")
def tiny() -> tuple[object, bytes]:
    model = sam_model(tiny_sam_config())
    return model, sam_state_bytes(original_sam_state(model))


def test_preprocessing_resizes_the_longest_side_and_pads() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:] = (10, 20, 30)  # BGR
    pixels = sam_input(frame)
    assert pixels.shape == (3, 1024, 1024)
    expected = [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375]
    np.testing.assert_allclose(pixels[:, 767, 1023], expected, rtol=1e-5)  # last row of the picture
    assert not pixels[:, 768:].any()  # padding below: zeros after normalisation


def test_segment_anything_keys_convert_to_every_tensor(tiny) -> None:
    from transformers import SamModel

    model, _ = tiny
    state = original_sam_state(model)
    assert "image_encoder.blocks.11.attn.rel_pos_h" in state and "pixel_mean" in state
    config = sam_config(state, SAM_VARIANTS["vit_b"])
    assert config.vision_config.window_size == 14 and config.vision_config.num_hidden_layers == 12
    rebuilt = SamModel(config)
    rebuilt.load_state_dict(sam_state_to_hf(state), strict=True)
    expected = model.state_dict()
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_both_layouts_load_and_masks_map_back(tiny, model_server, model_env) -> None:
    from edge_agent.models import get_model

    model, weights = tiny
    model_server.add_core_model("sam", "vit_b", {"encoder.pth": weights, "decoder.onnx": b"\x08unused"})
    model_env.set(API_BASE_URL=model_server.base_url)
    legacy = get_model("sam/vit_b")
    assert (model_env.cache_dir / "sam" / "vit_b" / "encoder.pth").is_file()
    for key, value in legacy.network.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key

    legacy.network = _KnownMasks((64, 128, 128, 192))  # low-res rows 64..127, columns 128..191
    frame = np.zeros((480, 640, 3), np.uint8)
    (response,) = legacy.infer([frame], points=[[400, 200]])
    call = legacy.network.calls[0]
    np.testing.assert_allclose(call["input_points"].numpy(), [[[[640.0, 320.0]]]])  # x 1024/640, y 768/480
    assert call["multimask_output"] is False and call["input_boxes"] is None
    (polygon,) = response.model_dump()["masks"]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    # 256 -> 1024 (rows 256..511, columns 512..767), padding cut at 768 rows, then to 640x480
    assert abs(min(xs) - 320) <= 1 and abs(max(xs) - 479) <= 1
    assert abs(min(ys) - 160) <= 1 and abs(max(ys) - 319) <= 1


def test_current_stack_model_pth_loads(tiny, model_env) -> None:
    """The package's files (the package layout itself is the one SAM2's test reads offline)."""
    from edge_agent.models.common.settings import get_model_settings
    from edge_agent.models.foundation.sam import SamSegmenter

    _, weights = tiny
    directory = model_env.cache_dir / "pkg"
    directory.mkdir(parents=True)
    (directory / "model.pth").write_bytes(weights)
    (directory / "sam_configuration.json").write_text(json.dumps({"version": "vit_b"}))
    loaded = SamSegmenter("sam/vit_b", directory / "model.pth", "vit_b", get_model_settings())
    (response,) = loaded.infer([np.zeros((64, 96, 3), np.uint8)], points=[[10, 10]])
    masks = response.model_dump()["masks"]
    assert len(masks) == 1 and all(len(point) == 2 for point in masks[0])
