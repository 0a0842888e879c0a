"""YOLO-World: Ultralytics checkpoints read without Ultralytics into our own network; Roboflow's
pre- and post-processing; prompts and their cached text features; ``infer --prompt``.

Checkpoints come from tests/yolo_world_factory (a throwaway ``ultralytics`` package writes them in
Ultralytics' pickle layout, then is removed); CLIP is the tiny CLIP of tests/clip_factory,
projected to YOLO-World's 512 dimensions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("instant_clip_tokenizer")

from edge_agent.models.common.errors import InvalidInputError, ModelArtifactsError  # noqa: E402
from edge_agent.models.foundation.yolo_world_checkpoint import (  # noqa: E402
    UnsafeCheckpointError,
    read_checkpoint,
    stand_in,
)
from edge_agent.models.foundation.yolo_world_network import (  # noqa: E402
    DFL,
    YoloWorldNetwork,
    distances_to_boxes,
    make_anchors,
)
from edge_agent.models.foundation.yolo_world_steps import (  # noqa: E402
    Placement,
    letterbox,
    network_input,
    roboflow_nms,
    to_source,
    ultralytics_nms,
)
from tests.yolo_world_factory import reference_output, write_checkpoint, write_legacy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", "yolo_world/v2-s")
RIGGED = 1.0 / (1.0 + math.exp(-2.0))


# -- reading the checkpoint -----------------------------------------------------------------------


class _Planted:
    """Pickles as a call to os.system: what a hostile .pt file does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluated:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_the_reader_never_runs_pickled_code(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "yolo-world.pt"
    planted = _Planted(f"touch {marker}") if payload == "system" else _Evaluated()
    torch.save({"model": planted, "ema": None}, path)
    with pytest.raises(UnsafeCheckpointError) as caught:
        read_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(caught.value) and ("system" in str(caught.value) or "eval" in str(caught.value))


class _Removes:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        import shutil

        return (shutil.rmtree, (str(self.path),))


def test_a_call_to_any_other_function_is_recorded_not_run(tmp_path: Path) -> None:
    victim = tmp_path / "keep"
    victim.mkdir()
    path = tmp_path / "yolo-world.pt"
    torch.save({"model": _Removes(victim), "ema": None}, path)
    with pytest.raises(ModelArtifactsError, match="no Ultralytics model"):
        read_checkpoint(path)
    assert victim.is_dir()


def test_getattr_is_recorded_on_stand_ins_only() -> None:
    """``getattr(obj, name)`` (how a fused module's ``forward`` pickles) never reaches a real
    object's attributes: on anything but a stand-in it is refused."""
    import io
    import pickle

    from edge_agent.models.foundation.yolo_world_checkpoint import SafeUnpickler

    # protocol 2: getattr("x", "upper")
    hostile = b"\x80\x02c__builtin__\ngetattr\nX\x01\x00\x00\x00xX\x05\x00\x00\x00upper\x86R."
    assert pickle.loads(hostile)() == "X"  # what an ordinary unpickler would hand back: a bound method
    with pytest.raises(pickle.UnpicklingError, match="attribute 'upper' of a str"):
        SafeUnpickler(io.BytesIO(hostile)).load()


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "yolo-world.pt"
    path.write_bytes(b"not a zip, not a pickle")
    with pytest.raises(ModelArtifactsError, match="cannot be read as a torch checkpoint"):
        read_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ModelArtifactsError, match="no Ultralytics model"):
        read_checkpoint(path)


@pytest.mark.parametrize("version", [1, 2])
def test_the_network_reproduces_the_checkpoints_own_forward(tmp_path: Path, version: int) -> None:
    """v1 (ImagePoolingAttn, ContrastiveHead) and v2 (BNContrastiveHead): the factory's model,
    saved in half precision as Ultralytics does, and our network from that file agree."""
    path = tmp_path / "yolo-world.pt"
    made = write_checkpoint(path, version=version, seed=version)
    assert not any(name == "ultralytics" or name.startswith("ultralytics.") for name in sys.modules)
    checkpoint = read_checkpoint(path)
    assert checkpoint.yaml["head"][-1][2] == "WorldDetect"
    assert all(t.dtype == torch.float32 for t in checkpoint.state.values() if t.is_floating_point())
    network = YoloWorldNetwork(checkpoint)
    assert not any(name == "ultralytics" or name.startswith("ultralytics.") for name in sys.modules)
    assert network.embed_dim == 512 and network.stride == 32
    generator = torch.Generator().manual_seed(7)
    images = torch.rand((2, 3, 96, 128), generator=generator)
    text = torch.nn.functional.normalize(torch.randn((1, 3, 512), generator=generator), dim=-1)
    with torch.inference_mode():
        ours = network(images, text)
    expected = reference_output(made["model"], images, text.expand(2, -1, -1))
    assert ours.shape == (2, 4 + 3, 12 * 16 + 6 * 8 + 3 * 4)
    np.testing.assert_allclose(ours[:, 4:].numpy(), expected[:, 4:].numpy(), atol=2e-5)
    np.testing.assert_allclose(ours[:, :4].numpy(), expected[:, :4].numpy(), rtol=1e-4, atol=1e-3)
    assert 0.02 < float(ours[:, 4:].std())  # scores that vary: the comparison means something


def test_a_fused_checkpoint_loads_too(tmp_path: Path) -> None:
    """Saved after Ultralytics' fuse(): biased convolutions without BatchNorm, and each module's
    ``forward = forward_fuse`` pickled as a getattr call, which is recorded, not run."""
    path = tmp_path / "yolo-world.pt"
    made = write_checkpoint(path, version=2, seed=4, fused=True)
    checkpoint = read_checkpoint(path)
    assert not any(".bn." in key for key in checkpoint.state)
    first = checkpoint.model.child("model").children["0"]
    assert first.get("forward").name == "forward_fuse" and first.get("forward").owner is first
    network = YoloWorldNetwork(checkpoint)
    images = torch.rand((1, 3, 64, 96), generator=torch.Generator().manual_seed(2))
    text = torch.nn.functional.normalize(torch.randn((1, 2, 512), generator=torch.Generator().manual_seed(3)), dim=-1)
    with torch.inference_mode():
        ours = network(images, text)
    expected = reference_output(made["model"], images, text)
    np.testing.assert_allclose(ours[:, 4:].numpy(), expected[:, 4:].numpy(), atol=2e-5)
    np.testing.assert_allclose(ours[:, :4].numpy(), expected[:, :4].numpy(), rtol=1e-4, atol=1e-3)


# -- decoding by hand -----------------------------------------------------------------------------


def test_dfl_integral_anchors_and_box_decoding_by_hand() -> None:
    node = stand_in("ultralytics.nn.modules.block", "DFL")()
    node.__setstate__({"c1": 16, "_parameters": {}, "_modules": {}})
    dfl = DFL(node)
    with torch.no_grad():
        dfl.conv.weight.copy_(torch.arange(16.0).view(1, 16, 1, 1))
    logits = torch.full((1, 4, 16, 1), -1e4)
    logits[0, 0, 2] = logits[0, 0, 3] = 0.0  # half at bin 2, half at bin 3: 2.5
    logits[0, 1, 5] = 0.0  # 5
    logits[0, 2, 0] = 0.0  # 0
    logits[0, 3, 15] = math.log(3.0)
    logits[0, 3, 14] = 0.0  # 3/4 at 15, 1/4 at 14: 14.75
    np.testing.assert_allclose(dfl(logits.view(1, 64, 1)).view(4).numpy(), [2.5, 5.0, 0.0, 14.75], atol=1e-5)

    anchors, strides = make_anchors([(2, 3), (1, 1)], [8.0, 16.0])
    np.testing.assert_allclose(
        anchors.numpy(), [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5], [0.5, 0.5]]
    )
    assert strides.view(-1).tolist() == [8.0] * 6 + [16.0]
    # anchor (1.5, 0.5), distances left 1, top 0.5, right 3, bottom 2 (grid units):
    # x1 0.5, y1 0, x2 4.5, y2 2.5 -> centre (2.5, 1.25), size 4 x 2.5; times stride 8
    distances = torch.tensor([1.0, 0.5, 3.0, 2.0]).view(1, 4, 1)
    box = distances_to_boxes(distances, torch.tensor([[1.5, 0.5]])) * 8.0
    np.testing.assert_allclose(box.view(4).numpy(), [20.0, 10.0, 32.0, 20.0])


def test_letterbox_pads_to_the_stride_and_maps_boxes_back() -> None:
    image = np.full((46, 100, 3), 200, np.uint8)
    # ratio min(640/46, 640/100) = 6.4: 640 x round(294.4) = 294; 640 - 294 = 346 -> 346 % 32 = 26
    # rows of padding, 13 above and 13 below: a 320 x 640 input (Ultralytics' minimal rectangle)
    placed = letterbox(image)
    assert placed.shape == (320, 640, 3)
    assert (placed[:13] == 114).all() and (placed[-13:] == 114).all() and (placed[13:307] == 200).all()
    square = letterbox(image, auto=False)  # 346 rows of padding: 173 above, 173 below
    assert square.shape == (640, 640, 3) and (square[:173] == 114).all() and (square[173:467] == 200).all()
    # back: gain 6.4, pad round((320 - 294.4) / 2 - 0.1) = 13 rows, 0 columns
    boxes = np.array([[64.0, 13.0 + 32.0, 576.0, 13.0 + 64.0], [-10.0, 0.0, 700.0, 400.0]])
    source = to_source(boxes, Placement((320, 640), (46, 100)))
    np.testing.assert_allclose(source, [[10.0, 5.0, 90.0, 10.0], [0.0, 0.0, 100.0, 46.0]])


def test_the_network_gets_rgb_in_0_to_1() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:] = (255, 0, 51)  # BGR: blue 255, red 51
    pixels = network_input(frame)
    assert pixels.shape == (3, 640, 640) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[:, 320, 320], [0.2, 0.0, 1.0], rtol=1e-6)  # R, G, B


def test_ultralytics_then_roboflow_nms_by_hand() -> None:
    # five anchors, two prompts; boxes as cx, cy, w, h
    boxes = np.array(
        [
            [50, 50, 20, 20],  # A: prompt 0 at 0.9
            [51, 50, 20, 20],  # B: prompt 0 at 0.8, IoU with A 0.905 > 0.7: dropped by Ultralytics
            [50, 50, 20, 20],  # C: prompt 1 at 0.7, same box as A but another class: kept
            [56, 50, 20, 20],  # D: prompt 0 at 0.6, IoU with A 14/26 = 0.538: kept by Ultralytics,
            #                      dropped by Roboflow's 0.3
            [90, 90, 10, 10],  # E: best 0.3: under the confidence 0.4
        ],
        np.float32,
    )
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.6, 0.5], [0.3, 0.2]], np.float32)
    output = np.concatenate([boxes, scores], 1).T
    kept_boxes, kept_scores, kept_ids = ultralytics_nms(output, 0.4)
    np.testing.assert_allclose(kept_scores, [0.9, 0.7, 0.6])
    assert kept_ids.tolist() == [0, 1, 0]
    np.testing.assert_allclose(kept_boxes[0], [40, 40, 60, 60])
    final_boxes, final_scores, final_ids = roboflow_nms(kept_boxes, kept_scores, kept_ids, 0.4)
    np.testing.assert_allclose(final_scores, [0.9, 0.7])
    np.testing.assert_allclose(final_boxes, [[40, 40, 60, 60], [40, 40, 60, 60]])
    assert final_ids.tolist() == [0, 1]


# -- the model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rigged_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yolo-world-cache")
    write_legacy(root, "v2-s", rigged=2.0)
    return root


def _frame(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def test_prompts_become_the_classes_and_text_is_embedded_once_per_set(model_env, rigged_cache) -> None:
    from edge_agent.models import get_model

    model_env.set(MODEL_CACHE_DIR=rigged_cache, OFFLINE_MODE="true")
    model = get_model("yolo_world/v2-s")
    try:
        assert model.task_type == "object-detection" and model.stream_options == ("prompts",)
        (response,) = model.infer([_frame()], prompts=["person", "car"])
        body = response.model_dump()
        assert "inference_id" not in body and body["time"] > 0 and body["image"] == {"width": 128, "height": 96}
        rows = body["predictions"]
        assert rows and {r["class"] for r in rows} == {"person"} and {r["class_id"] for r in rows} == {0}
        assert all(r["confidence"] == pytest.approx(RIGGED, abs=1e-4) for r in rows)
        assert all(0 <= r["x"] <= 128 and 0 <= r["y"] <= 96 for r in rows)
        assert set(rows[0]) == {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}
        assert model.text_sets_computed == 1
        model.predict([_frame(2), _frame(3)], image_options=[{"prompts": ["person", "car"]}] * 2)
        assert model.text_sets_computed == 1  # the same set: not embedded again
        (other,) = model.predict([_frame()], prompts=["car", "person"])
        assert model.text_sets_computed == 2 and set(other.class_names) == {"car", "person"}
        assert {other.class_names[k] for k in other.class_ids.tolist()} == {"car"}
        (none,) = model.predict([_frame()], prompts=["person"], confidence=0.9)  # 0.88 < 0.9
        assert len(none) == 0
        with pytest.raises(InvalidInputError, match="prompts"):
            model.predict([_frame()])
        with pytest.raises(InvalidInputError, match="prompts"):
            model.predict([_frame()], prompts="person")
    finally:
        model.close()


def test_frames_of_several_streams_batch_by_prompts_and_size(model_env, rigged_cache) -> None:
    """One predict call with frames of three streams (two prompt sets, two sizes): each frame's
    detections are what it gets alone, with its own stream's classes."""
    from edge_agent.models import get_model

    model_env.set(MODEL_CACHE_DIR=rigged_cache, OFFLINE_MODE="true")
    model = get_model("yolo_world/v2-s")
    try:
        small = np.random.default_rng(8).integers(0, 255, (64, 80, 3), dtype=np.uint8)
        frames = [_frame(5), small, _frame(6), _frame(7)]
        sets = [["dog", "cat"], ["dog", "cat"], ["person"], ["dog", "cat"]]
        together = model.predict(frames, image_options=[{"prompts": p} for p in sets])
        for frame, prompts, found in zip(frames, sets, together, strict=True):
            (alone,) = model.predict([frame], prompts=prompts)
            assert found.class_names == tuple(prompts) and found.image_size == (frame.shape[1], frame.shape[0])
            np.testing.assert_allclose(found.boxes, alone.boxes, atol=1e-3)
            np.testing.assert_allclose(found.confidences, alone.confidences, atol=1e-5)
    finally:
        model.close()


def test_text_features_are_the_normalised_clip_embeddings(model_env, rigged_cache) -> None:
    from edge_agent.models import get_model

    model_env.set(MODEL_CACHE_DIR=rigged_cache, OFFLINE_MODE="true")
    model = get_model("yolo_world/v2-s")
    try:
        features = model.class_features(("red", "a blue car"))
        raw = model.text_model.embed_text(["red", "a blue car"])
        assert features.shape == (1, 2, 512)
        np.testing.assert_allclose(features[0].numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(features[0].numpy(), axis=1), [1.0, 1.0], rtol=1e-6)
    finally:
        model.close()


def test_the_flag_switches_the_family_off(model_env, rigged_cache) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    model_env.set(MODEL_CACHE_DIR=rigged_cache, OFFLINE_MODE="true", CORE_MODEL_YOLO_WORLD_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="CORE_MODEL_YOLO_WORLD_ENABLED"):
        get_model("yolo_world/v2-s")


def test_infer_command_with_prompts(rigged_cache, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), _frame(4))
    env = {**os.environ, "MODEL_CACHE_DIR": str(rigged_cache), "OFFLINE_MODE": "true"}
    run = subprocess.run(
        [*CLI, "--prompt", "person", "--prompt", "car", str(image), "--confidence", "0.5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["predictions"] and {p["class"] for p in body["predictions"]} == {"person"}
    assert "inference_id" not in body


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    """A plain YOLOv8 head (Detect: no text) where YOLO-World's WorldDetect belongs: a clear error."""
    path = tmp_path / "yolo-world.pt"
    write_checkpoint(path, version=2, seed=1)
    checkpoint = read_checkpoint(path)
    layers = checkpoint.model.child("model").state["_modules"]
    assert layers["22"].name == "WorldDetect"
    layers["22"] = stand_in("ultralytics.nn.modules.head", "Detect")()
    with pytest.raises(ModelArtifactsError, match=r"layer 22 is a ultralytics\.nn\.modules\.head\.Detect"):
        YoloWorldNetwork(checkpoint)


def test_the_module_tree_must_match_its_yaml(tmp_path: Path) -> None:
    path = tmp_path / "yolo-world.pt"
    write_checkpoint(path, version=2, seed=1)
    checkpoint = read_checkpoint(path)
    checkpoint.yaml["head"][5][0] = 12  # layer 15 said to read layer 12, the model reads layer 14
    with pytest.raises(ModelArtifactsError, match=r"layer 15 is a C2fAttn from -1 in the model but a C2fAttn from 12"):
        YoloWorldNetwork(checkpoint)
    del checkpoint.yaml["head"][-1]
    with pytest.raises(ModelArtifactsError, match="its yaml lists 22 layers and its model holds 23"):
        YoloWorldNetwork(checkpoint)


def test_download_from_core_model_into_roboflows_layout(model_server, model_env, tmp_path: Path) -> None:
    """Online: ``yolo-world.pt`` from /core_model/yolo_world/v2-s into MODEL_CACHE_DIR/yolo_world/v2-s/,
    CLIP ViT-B-32 beside it; then offline from the cache alone."""
    from edge_agent.models import get_model
    from edge_agent.models.artifacts.core_cache import core_model_dir
    from edge_agent.models.identity.ids import parse_model_id

    staging = tmp_path / "staging"
    write_legacy(staging, "v2-s", rigged=2.0)
    clip_files = core_model_dir(parse_model_id("clip/ViT-B-32"), staging)
    model_server.add_core_model(
        "yolo_world", "v2-s", {"yolo-world.pt": (staging / "yolo_world/v2-s/yolo-world.pt").read_bytes()}
    )
    model_server.add_core_model(
        "clip", "ViT-B-32", {name: (clip_files / name).read_bytes() for name in ("visual.onnx", "textual.onnx")}
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("yolo_world/v2-s")
    model.close()
    assert (model_env.cache_dir / "yolo_world" / "v2-s" / "yolo-world.pt").is_file()
    assert any(r.path == "/core_model/yolo_world/v2-s" for r in model_server.requests)
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    offline = get_model("yolo_world/v2-s")
    try:
        (found,) = offline.predict([_frame()], prompts=["person"])
        assert len(found) and set(found.class_ids.tolist()) == {0}
    finally:
        offline.close()
