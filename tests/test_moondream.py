"""Moondream2 (revision 2025-06-21) detect: edge-agent's own network on a tiny random-weight
checkpoint with the real parameter names and file layout, served as Roboflow's core model;
the crop tiling, stitching, rotary positions and box decoding checked against values worked out
by hand from Moondream's formulas; ``edge-agent infer`` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
pytest.importorskip("PIL")

MODEL_ID = "moondream2/moondream2_2b_jul24"


# -- the maths, by hand ----------------------------------------------------------------------------


def test_select_tiling_by_hand():
    from edge_agent.models.foundation.moondream_network import select_tiling

    # a 640x480 frame less 2 x 56 px margins: 528 x 368 over 266 px windows (19 patches of 14 px)
    # needs 2 x 2; sqrt(12 * 368 / 528) = 2.89 -> 2 rows, sqrt(12 * 528 / 368) = 4.15 -> 4 columns
    assert select_tiling(368, 528, 266, 12) == (2, 4)
    assert select_tiling(200, 900, 266, 12) == (1, 1)  # one side fits a window
    # 5 x 5 windows at least (25 > 12 crops): scaled by sqrt(12 / 25) = 0.69 -> 3 x 3
    assert select_tiling(1330, 1330, 266, 12) == (3, 3)
    # 2 x 2 needed; sqrt(12) = 3.46 -> 3 x 3 = 9 <= 12
    assert select_tiling(300, 300, 266, 12) == (3, 3)


def test_stitch_crops_keeps_inner_parts_and_outer_margins():
    from edge_agent.models.foundation.moondream_network import stitch_crops

    # 2 x 2 crops of 4 x 4 cells, margin 1: each crop is filled with its index
    crops = torch.stack([torch.full((4, 4, 1), float(i)) for i in range(4)])
    out = stitch_crops(crops, (2, 2), 1)[..., 0]
    expected = torch.tensor([[0, 0, 0, 1, 1, 1]] * 3 + [[2, 2, 2, 3, 3, 3]] * 3, dtype=torch.float32)
    assert torch.equal(out, expected)


def test_bins_to_boxes_by_hand():
    from edge_agent.models.foundation.moondream import boxes_in_pixels
    from edge_agent.models.foundation.moondream_network import box_of, coordinate_from_bin, size_from_bin

    assert coordinate_from_bin(512, 1024) == 0.5
    assert coordinate_from_bin(0, 1024) == 0.0
    assert size_from_bin(1023) == 1.0  # the last bin: the whole picture
    assert size_from_bin(0) == 2.0**-10
    assert size_from_bin(921) == pytest.approx(0.501017, abs=1e-6)  # 2^(921/1023*10-10) = 0.5 * 2^0.002933
    assert box_of(0.5, 0.25, 0.5, 0.25) == {"x_min": 0.25, "y_min": 0.125, "x_max": 0.75, "y_max": 0.375}
    # times (W, H); a box over the left edge is cut at 0 (Roboflow's abs() would mirror it to 0.375)
    boxes = boxes_in_pixels([{"x_min": -0.375, "y_min": 0.125, "x_max": 0.625, "y_max": 1.2}], (200, 100))
    assert boxes.tolist() == [[0.0, 12.5, 125.0, 100.0]]


def test_rotary_positions_by_hand():
    from edge_agent.models.foundation.moondream_network import apply_rotary, rotary_tables

    cos, sin = rotary_tables(8, 4)  # head 8: the first 4 dims rotate, as pairs (0, 2) and (1, 3)
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8)
    # position 0: no rotation; the pairs are written back interleaved
    assert apply_rotary(x, cos[:1], sin[:1]).flatten().tolist() == [0, 2, 1, 3, 4, 5, 6, 7]
    cos, sin = rotary_tables(4, 3)  # head 4: one pair (0, 1) at frequency 1, angle = position
    y = apply_rotary(torch.tensor([[[[1.0, 0.0, 7.0, 9.0]]]]), cos[2:3], sin[2:3]).flatten().tolist()
    assert y == pytest.approx([math.cos(2), math.sin(2), 7.0, 9.0], abs=1e-6)


def test_config_defaults_are_the_revision_and_bad_ones_are_named(tmp_path):
    from edge_agent.models.common.errors import CacheIntegrityError
    from edge_agent.models.foundation.moondream_network import read_config

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["HfMoondream"], "config": {}}))
    config = read_config(tmp_path)
    assert (config.text.dim, config.text.n_layers, config.text.vocab_size, config.text.n_kv_heads) == (
        2048,
        24,
        51200,
        32,
    )
    assert (config.vision.enc_dim, config.vision.enc_n_layers, config.vision.crop_size) == (1152, 27, 378)
    assert config.prefix_len == 730 and config.grid == 27
    assert config.tokenizer.templates["detect"] == {"prefix": [1, 7235, 476, 2], "suffix": [3]}
    (tmp_path / "config.json").write_text(json.dumps({"config": {"text": {"moe": {"num_experts": 64}}}}))
    with pytest.raises(CacheIntegrityError, match="moe"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"text": {"group_size": 128}}}))
    with pytest.raises(CacheIntegrityError, match="quantised"):
        read_config(tmp_path)


# -- the checkpoint through get_model ------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from tests.moondream_factory import Force, moondream_checkpoint

    root = tmp_path_factory.mktemp("moondream")
    return {
        "random": moondream_checkpoint(root / "random"),
        # the head always goes on: centre bin 384 (x = y = 0.375), width bin 921, height bin 1023
        "boxes": moondream_checkpoint(root / "boxes", force=Force(token=7, coord_bin=384, size_bins=(921, 1023))),
        "none": moondream_checkpoint(root / "none", force=Force(token=0, coord_bin=384, size_bins=(921, 1023))),
    }


def _serve(model_server, model_env, directory, archive: bool = False):
    from tests.vlm_factory import files_of, tar_gz

    files = {"moondream2.tar.gz": tar_gz(directory)} if archive else files_of(directory)
    model_server.add_core_model("moondream2", "moondream2_2b_jul24", files)
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")


def _frame(width: int = 200, height: int = 100) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_detect_decodes_the_forced_boxes(model_server, model_env, checkpoints):
    from edge_agent.models import get_model

    _serve(model_server, model_env, checkpoints["boxes"], archive=True)
    model = get_model(MODEL_ID)
    root = model_env.cache_dir / "moondream2" / "moondream2_2b_jul24"
    assert (root / "config.json").is_file() and (root / "hf_moondream.py").is_file()
    detections = model.detect(_frame(), "person", max_objects=3)
    response = model.make_response(detections).model_dump(by_alias=True)
    # x = y = 384 / 1024 = 0.375; w = 2^(921/1023*10-10) = 0.501017; h = 2^0 = 1
    w = 2 ** (921 / 1023 * 10 - 10)
    x_min, x_max = 0.375 - w / 2, 0.375 + w / 2  # 0.124492 .. 0.625508, inside the picture
    y_min, y_max = 0.0, 0.875  # 0.375 -/+ 0.5: the top is cut at the picture's edge
    assert response["image"] == {"width": 200, "height": 100}
    assert len(response["predictions"]) == 3  # the head never says end-of-text: max_objects
    for row in response["predictions"]:
        assert row["x"] == pytest.approx((x_min + x_max) / 2 * 200, abs=1e-4)
        assert row["y"] == pytest.approx((y_min + y_max) / 2 * 100, abs=1e-4)
        assert row["width"] == pytest.approx((x_max - x_min) * 200, abs=1e-4)
        assert row["height"] == pytest.approx((y_max - y_min) * 100, abs=1e-4)
        assert (row["confidence"], row["class"], row["class_id"]) == (1.0, "person", 0)
    assert not list(model_env.cache_dir.rglob("EXECUTED")), "a .py file of the checkpoint was run"
    model.close()


def test_end_of_text_first_means_no_objects(model_server, model_env, checkpoints):
    from edge_agent.models import get_model

    _serve(model_server, model_env, checkpoints["none"])
    model = get_model(MODEL_ID)
    (answer,) = model.predict([_frame()], prompt="dog")
    assert answer.to_response()["predictions"] == []


def test_prompt_tokens_and_random_weights_stay_in_the_picture(model_server, model_env, checkpoints):
    from edge_agent.models import get_model

    _serve(model_server, model_env, checkpoints["random"])
    model = get_model(MODEL_ID)
    tokenizer = model.runner.tokenizer
    # the detect template (the checkpoint's config) around " person"
    assert model.runner.prompt_tokens("person") == [1, 10, 11, 2, *tokenizer.encode(" person").ids, 3]
    (answer,) = model.predict([_frame(120, 90)], prompt="person")
    rows = answer.to_response()["predictions"]
    assert 0 < len(rows) <= 50
    for row in rows:
        assert 0 <= row["x"] - row["width"] / 2 and row["x"] + row["width"] / 2 <= 120 + 1e-6
        assert 0 <= row["y"] - row["height"] / 2 and row["y"] + row["height"] / 2 <= 90 + 1e-6
    # the same picture, the same greedy answer
    (again,) = model.predict([_frame(120, 90)], prompt="person")
    assert [(r["x"], r["y"]) for r in again.to_response()["predictions"]] == [(r["x"], r["y"]) for r in rows]


def test_weights_that_do_not_fit_are_named(tmp_path, model_server, model_env, checkpoints):
    import shutil

    from safetensors.torch import load_file, save_file

    from edge_agent.models import get_model
    from edge_agent.models.common.errors import CacheIntegrityError

    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["random"], broken)
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["model.region.size_features"]
    save_file(tensors, str(broken / "model.safetensors"))
    _serve(model_server, model_env, broken)
    with pytest.raises(CacheIntegrityError, match=r"missing region\.size_features"):
        get_model(MODEL_ID)


def test_cancel_stops_a_detection(model_server, model_env, checkpoints):
    from edge_agent.models import get_model
    from edge_agent.models.engines.transformers import GenerationCancelled

    _serve(model_server, model_env, checkpoints["random"])
    model = get_model(MODEL_ID)
    model.engine.cancel.set()  # what the VLM asker does when the agent stops
    with pytest.raises(GenerationCancelled):
        model.detect(_frame(), "person")


def test_disabled_by_its_flag(model_env):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    model_env.set(LMM_ENABLED="true", MOONDREAM2_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="MOONDREAM2_ENABLED"):
        get_model(MODEL_ID)


def test_infer_cli_end_to_end(tmp_path, model_server, model_env, checkpoints):
    import cv2

    _serve(model_server, model_env, checkpoints["boxes"])
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), _frame(200, 100))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", MODEL_ID, "--prompt", "person"]
    result = subprocess.run(
        [*command, str(image)], cwd=root, env=dict(os.environ), capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    response = json.loads(line)
    assert response["image"] == {"width": 200, "height": 100}
    rows = response["predictions"]
    assert len(rows) == 50  # Moondream's limit of objects: the forced head never stops
    w = 2 ** (921 / 1023 * 10 - 10)
    assert rows[0]["x"] == pytest.approx(0.375 * 200, abs=1e-3)  # the box lies inside: its centre is kept
    assert rows[0]["width"] == pytest.approx(w * 200, abs=1e-3)
    assert rows[0]["height"] == pytest.approx(87.5, abs=1e-3) and rows[0]["y"] == pytest.approx(43.75, abs=1e-3)
    assert {(r["class"], r["class_id"], r["confidence"]) for r in rows} == {("person", 0, 1.0)}
    assert not list(model_env.cache_dir.rglob("EXECUTED"))


def test_asked_on_a_stream_its_answer_carries_detections(model_server, model_env, checkpoints):
    """The stream path: the VLM asker (as STREAM_<NAME>_VLM_PROMPT drives it) gets Roboflow detections."""
    import asyncio
    from types import SimpleNamespace

    from edge_agent.models import get_model
    from edge_agent.pipelines.vlm_answers import StreamPrompt, VLMAsker, answer_summary

    _serve(model_server, model_env, checkpoints["none"])
    model = get_model(MODEL_ID)
    published: list[dict] = []

    async def scenario() -> None:
        asker = VLMAsker(
            model,
            MODEL_ID,
            {"cam": StreamPrompt("car", 10.0)},
            agent_id="a",
            queue_size=2,
            publish=lambda s, m: published.append(m),
            cpu_share=0.5,
        )
        asker.start(asyncio.get_running_loop())
        frame = SimpleNamespace(stream="cam", frame_id=7, monotonic=1.0, capture_time=100.0, image=_frame())
        asker.on_frame(frame)
        for _ in range(600):
            if published:
                break
            await asyncio.sleep(0.05)
        await asker.stop()

    asyncio.run(scenario())
    (message,) = published
    assert model.engine.cpu_share == 0.5  # paced like the other VLMs
    assert (message["kind"], message["prompt"], message["frame_id"]) == ("interval", "car", 7)
    assert message["predictions"] == [] and message["image"] == {"width": 200, "height": 100}
    assert answer_summary(message) == "0 x car"


def test_runtime_buffers_saved_in_a_checkpoint_are_ignored(tmp_path, model_server, model_env, checkpoints):
    import shutil

    from safetensors.torch import load_file, save_file

    from edge_agent.models import get_model

    with_caches = tmp_path / "with-caches"
    shutil.copytree(checkpoints["none"], with_caches)
    tensors = load_file(str(with_caches / "model.safetensors"))
    tensors["model.text.blocks.0.kv_cache.k_cache"] = torch.zeros(1, 2, 256, 8)
    tensors["model.attn_mask"] = torch.ones(4, 4, dtype=torch.bool)
    save_file(tensors, str(with_caches / "model.safetensors"))
    _serve(model_server, model_env, with_caches)
    (answer,) = get_model(MODEL_ID).predict([_frame()], prompt="dog")
    assert answer.to_response()["predictions"] == []
