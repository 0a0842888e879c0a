"""SAM2: what is ours, checked against hand-computed values (prompt coordinates and padding, the
mapping of masks back to source pixels, polygons, COCO RLE, the pre-processing), and Roboflow's
checkpoints loading through the real loader from both cache layouts (legacy ``/core_model`` and the
current stack's package), tensors equal to the network they were written from, and ``infer``.

Checkpoints: tests/sam_factory.py (random weights from transformers' own config classes, written
under Meta's key names as Roboflow serves them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from edge_agent.models.common.errors import InvalidInputError  # noqa: E402
from edge_agent.models.foundation.sam2 import prompts_from, sam2_input  # noqa: E402
from edge_agent.models.foundation.sam_steps import (  # noqa: E402
    IGNORED_POINT,
    SamPrompt,
    clip_to_box,
    largest_polygon,
    longest_side_scale,
    longest_side_size,
    mask_polygons,
    mask_rle,
    prompt_arrays,
    rle_counts,
    rle_string,
    squash_scale,
)
from edge_agent.models.foundation.sam_weights import SAM2_VARIANTS, sam2_config, sam2_state_to_hf  # noqa: E402
from tests.sam_factory import (  # noqa: E402
    checkpoint_bytes,
    original_sam2_state,
    sam2_model,
    sam2_package,
    tiny_sam2_config,
)

ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", "sam2/hiera_tiny")


@pytest.fixture(scope="module")
def tiny() -> tuple[object, bytes]:
    model = sam2_model(tiny_sam2_config())
    return model, checkpoint_bytes(original_sam2_state(model))


# -- prompts -------------------------------------------------------------------------------------


def test_sam2_squashes_coordinates_to_1024_square() -> None:
    scale = squash_scale((640, 480))
    assert scale == (1.6, 1024 / 480)
    points, labels, boxes = prompt_arrays([SamPrompt(box=(64, 48, 320, 240))], scale)
    assert points is None and labels is None
    np.testing.assert_allclose(boxes, [[[102.4, 102.4, 512.0, 512.0]]], rtol=1e-6)
    points, labels, boxes = prompt_arrays(
        [SamPrompt(points=((320, 240), (0, 480)), labels=(1, 0)), SamPrompt(points=((10, 10),), labels=(1,))], scale
    )
    assert boxes is None
    np.testing.assert_allclose(points[0, 0], [[512.0, 512.0], [0.0, 1024.0]], rtol=1e-6)
    np.testing.assert_allclose(points[0, 1, 0], [16.0, 10 * 1024 / 480], rtol=1e-6)
    # the shorter prompt is padded with a point the prompt encoder zeroes out
    assert labels.tolist() == [[[1, 0], [1, IGNORED_POINT]]] and points[0, 1, 1].tolist() == [0.0, 0.0]


def test_sam_v1_scales_the_longest_side() -> None:
    assert longest_side_size((640, 480)) == (1024, 768)
    assert longest_side_size((500, 333)) == (1024, 682)  # 333 * 2.048 = 681.98 -> 682
    assert longest_side_scale((500, 333)) == (1024 / 500, 682 / 333)


def test_request_fields_become_prompts() -> None:
    (one,) = prompts_from(points=[[5, 6], [7, 8, 0]])
    assert one.box is None and one.points == ((5.0, 6.0), (7.0, 8.0)) and one.labels == (1, 0)
    (boxed,) = prompts_from(boxes=[[1, 2, 3, 4]], points=[[2, 3, 1]])
    assert boxed.box == (1.0, 2.0, 3.0, 4.0) and boxed.labels == (1,)
    assert [p.box for p in prompts_from(boxes=[[0, 0, 5, 5], [1, 1, 9, 9]])] == [(0, 0, 5, 5), (1, 1, 9, 9)]
    assert prompts_from() == ()
    with pytest.raises(InvalidInputError, match="several boxes"):
        prompts_from(boxes=[[0, 0, 5, 5], [1, 1, 9, 9]], points=[[1, 1]])
    with pytest.raises(InvalidInputError, match="x1 < x2"):
        prompts_from(boxes=[[5, 0, 1, 5]])
    with pytest.raises(InvalidInputError, match="labels"):
        prompts_from(points=[[1, 1, 2]])


def test_preprocessing_is_rgb_imagenet_normalised() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:] = (10, 20, 30)  # BGR
    pixels = sam2_input(frame)
    assert pixels.shape == (3, 1024, 1024)
    expected = [(30 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (10 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(pixels[:, 500, 700], expected, rtol=1e-5)


# -- masks out -----------------------------------------------------------------------------------


def test_rle_matches_hand_computed_coco_counts() -> None:
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0 1 | 1 1
    assert rle_counts(mask) == [1, 3]
    assert mask_rle(mask) == {"size": [2, 2], "counts": "13"}
    assert rle_counts(np.ones((2, 3), bool)) == [0, 6]  # starts with an empty run of zeros
    assert rle_string([100]) == "T3"  # 100 = 4 + 3 * 32: low group 4 | 0x20 -> 'T', then 3 -> '3'
    assert rle_string([0, 5, 2, 3]) == "052N"  # from the fourth on: 3 - 5 = -2 -> 30 -> 'N'


def test_polygons_are_every_outer_contour_in_pixels() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:6, 3:8] = True  # rows 2..5, columns 3..7
    mask[8:10, 10:12] = True
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    square = next(p for p in polygons if [3, 2] in p)
    assert sorted(square) == sorted([[3, 2], [3, 5], [7, 5], [7, 2]])
    assert sorted(largest_polygon(mask)) == sorted(square)
    assert largest_polygon(np.zeros((3, 3), bool)) == []


def test_clip_to_box_keeps_the_touched_pixels() -> None:
    mask = clip_to_box(np.ones((10, 10), bool), (2.5, 3.0, 6.2, 7.0))
    assert np.argwhere(mask).min(0).tolist() == [3, 2] and np.argwhere(mask).max(0).tolist() == [6, 6]


# -- weights and the loader -----------------------------------------------------------------------


def test_original_keys_convert_to_every_tensor_of_the_network(tiny) -> None:
    model, _ = tiny
    state = original_sam2_state(model)
    assert "image_encoder.trunk.blocks.1.proj.weight" in state and "maskmem_tpos_enc" in state
    config = sam2_config(state, SAM2_VARIANTS["t"])
    assert config.vision_config.backbone_config.blocks_per_stage == [1, 2, 7, 2]
    assert config.vision_config.backbone_config.embed_dim_per_stage == [8, 16, 32, 64]
    from transformers import Sam2Model

    rebuilt = Sam2Model(config)
    rebuilt.load_state_dict(sam2_state_to_hf(state), strict=True)
    expected = model.state_dict()
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, expected[key]), key


def _same_network(loaded, model) -> None:
    expected = model.state_dict()
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_legacy_core_model_layout_downloads_and_loads_offline(tiny, model_server, model_env) -> None:
    from edge_agent.models import get_model

    model, weights = tiny
    model_server.add_core_model("sam2", "hiera_tiny", {"weights.pt": weights})
    model_env.set(API_BASE_URL=model_server.base_url)
    loaded = get_model("sam2/hiera_tiny")
    assert (model_env.cache_dir / "sam2" / "hiera_tiny" / "weights.pt").read_bytes() == weights
    _same_network(loaded, model)
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9", SAM2_VERSION_ID="hiera_tiny")
    again = get_model("sam2")  # the bare id takes SAM2_VERSION_ID, from the cache alone
    assert again.model_id == "sam2/hiera_tiny"


def test_current_stack_package_layout_loads_offline(tiny, model_server, model_env) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.artifacts.packages.client import PackageRegistry
    from edge_agent.models.artifacts.packages.store import PackageStore
    from edge_agent.models.common.settings import get_model_settings

    model, weights = tiny
    model_server.add_package_model(
        "sam2/hiera_small",
        [sam2_package("sam2t", weights, "sam2.1_hiera_t")],
        "sam2",
        "interactive-instance-segmentation",
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    # the registry's answer, stored by the package store exactly as for every other package
    settings = get_model_settings()
    metadata = PackageRegistry(settings).weights("sam2/hiera_small", None)
    directory = PackageStore(settings).materialize(metadata, metadata.packages[0])
    assert "models-cache" in directory.parts
    assert (directory / "model.pt").read_bytes() == weights
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    loaded = get_model("sam2/hiera_small")  # sam_configuration.json says which variant's settings
    _same_network(loaded, model)
    assert not (model_env.cache_dir / "sam2" / "hiera_small").exists()


def test_a_damaged_checkpoint_is_a_clear_error(model_env) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelArtifactsError

    directory = model_env.cache_dir / "sam2" / "hiera_tiny"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(b"not a checkpoint")
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(ModelArtifactsError, match=r"weights\.pt"):
        get_model("sam2/hiera_tiny")


# -- the network's masks back in source pixels -----------------------------------------------------


class _KnownMasks:
    """Stands in for the network: low-res logits with a known square, so the mapping is checkable."""

    def __init__(self, square: tuple[int, int, int, int]) -> None:
        self.square = square
        self.calls: list[dict] = []

    def get_image_embeddings(self, pixels):
        return [torch.zeros(1)]

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        prompts = (kwargs["input_boxes"] if kwargs["input_boxes"] is not None else kwargs["input_points"]).shape[1]
        low = torch.full((1, prompts, 3, 256, 256), -5.0)
        r0, c0, r1, c1 = self.square
        low[:, :, 1, r0:r1, c0:c1] = 5.0  # only mask 1 has the square...
        iou = torch.tensor([[[0.1, 0.9, 0.2]]]).expand(1, prompts, 3)  # ...and the best score

        class Out:
            pred_masks = low
            iou_scores = iou

        return Out()


def test_masks_map_back_to_source_pixels(tiny, model_env) -> None:
    from edge_agent.models import get_model

    _, weights = tiny
    directory = model_env.cache_dir / "sam2" / "hiera_tiny"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(weights)
    model_env.set(OFFLINE_MODE="true")
    model = get_model("sam2/hiera_tiny")
    model.network = _KnownMasks((64, 128, 128, 192))  # rows 64..127, columns 128..191 of 256
    frame = np.zeros((480, 640, 3), np.uint8)
    (response,) = model.infer([frame], boxes=[[320, 120, 480, 240]])
    call = model.network.calls[0]
    np.testing.assert_allclose(call["input_boxes"].numpy(), [[[512, 256, 768, 512]]])
    assert call["multimask_output"] is True
    (row,) = response.model_dump()["predictions"]
    assert row["confidence"] == pytest.approx(0.9) and row["format"] == "json"
    (polygon,) = row["masks"]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    # low-res cells 128..191 of 256 are source x 320..479 of 640; rows 64..127 are y 120..239 of 480
    assert (min(xs), max(xs), min(ys), max(ys)) == (320, 479, 120, 239)

    from edge_agent.models.maths.predictions import Detections

    detections = Detections(
        boxes=np.array([[330.0, 100.0, 400.0, 200.0], [0.0, 0.0, 50.0, 50.0]]),
        confidences=np.array([0.9, 0.8], np.float32),
        class_ids=np.array([1, 0]),
        class_names=("car", "plate"),
        image_size=(640, 480),
    )
    seg = model.predict_on_boxes(frame, detections, np.array([True, False]))
    assert model.network.calls[-1]["multimask_output"] is False
    ys_, xs_ = np.nonzero(seg.masks[0])
    assert (xs_.min(), xs_.max(), ys_.min(), ys_.max()) == (330, 399, 120, 199)  # the square, cut to the box
    assert seg.masks[1].sum() == 0 and seg.class_names == ("car", "plate") and seg.confidences[0] == np.float32(0.9)


def test_infer_cli_with_box_and_point(tiny, model_env, tmp_path) -> None:
    _, weights = tiny
    directory = model_env.cache_dir / "sam2" / "hiera_tiny"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(weights)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    env = dict(os.environ, OFFLINE_MODE="true")
    run = subprocess.run(
        [*CLI, str(image), "--box", "10,20,100,90", "--point", "50,60,1", "--mask-format", "rle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    (row,) = json.loads(run.stdout)["predictions"]
    assert row["format"] == "rle" and row["masks"]["size"] == [120, 160] and isinstance(row["masks"]["counts"], str)
    bad = subprocess.run(
        [*CLI, str(image), "--box", "10,20,100"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert bad.returncode == 2 and "--box '10,20,100'" in bad.stderr
