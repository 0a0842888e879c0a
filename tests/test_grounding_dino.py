"""Grounding DINO: the caption, resizing, phrase -> class, thresholds, NMS and box scaling against
hand-computed values; the original checkpoint read into transformers' network (outputs equal to
transformers' own model on the same weights); the loader's layouts (legacy directory of either
variant, a /core_model download, the current stack's package with an ast-read config.py), BERT from
the hub cache; prompts per call and their text side computed once per prompt set; ``infer --prompt``.

The tiny network (tests/gdino_factory) can be rigged so that every query scores every caption
token sigmoid(2) = 0.8808: its predictions are then known by hand.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

import torch

from edge_agent.models.foundation.grounding_dino_steps import (
    caption_of,
    cxcywh_to_pixels,
    decode,
    phrase_class,
    phrase_tokens,
    pixel_values,
    resized_size,
)
from tests.gdino_factory import (
    RIGGED_LOGIT,
    original_state_dict,
    rigged,
    tiny_grounding_dino,
    write_bert_snapshot,
    write_legacy,
)

MODEL_ID = "grounding_dino/groundingdino_swint_ogc"
ROOT = Path(__file__).resolve().parent.parent
RIGGED = 1.0 / (1.0 + math.exp(-RIGGED_LOGIT))  # 0.8807970779778823


def noise_frame(seed: int = 5, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    width, height = size
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


# -- pure steps ----------------------------------------------------------------------------------


def test_caption_is_the_classes_joined_lowercase_with_a_final_dot() -> None:
    assert caption_of(["Dog ", "cat"]) == "dog. cat."
    assert caption_of(["a red car."]) == "a red car."


def test_resize_keeps_the_aspect_shorter_side_800_longer_at_most_1333() -> None:
    assert resized_size(640, 480) == (1066, 800)  # 640/480*800 = 1066.7 fits under 1333
    assert resized_size(480, 640) == (800, 1066)
    assert resized_size(4000, 1000) == (1332, 333)  # 4*800 > 1333: short side round(1333/4) = 333
    assert resized_size(100, 200) == (666, 1332)  # round(666.5) = 666 (half to even, as torchvision)
    assert resized_size(800, 800) == (800, 800)


def test_pixels_are_rgb_and_imagenet_normalised() -> None:
    blue = np.zeros((480, 640, 3), np.uint8)
    blue[:] = (255, 0, 0)  # BGR: pure blue
    pixels = pixel_values(blue)
    assert pixels.shape == (3, 800, 1066) and pixels.dtype == np.float32
    expected = [(0 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225]  # R, G, B
    np.testing.assert_allclose(pixels[:, 400, 500], expected, rtol=1e-6)


def test_a_phrase_names_the_first_class_it_contains() -> None:
    assert phrase_class("dog cat [SEP]", ["cat", "dog"]) == 0  # the first class in the list's order
    assert phrase_class("dog cat [SEP]", ["dog", "cat"]) == 0
    assert phrase_class("hot dog", ["cat", "dog"]) == 1  # a class inside a longer phrase
    assert phrase_class("bird", ["cat", "dog"]) is None
    assert phrase_class("", ["cat"]) is None


def test_phrase_tokens_are_those_above_the_text_threshold_never_cls() -> None:
    ids = [101, 2000, 1012, 2001, 1012, 102]
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.5, 0.8, 0.99, 0.99])  # scores past the caption: padding
    assert phrase_tokens(scores, ids, 0.5) == [2000, 2001, 102]  # 0.5 is not above 0.5
    assert phrase_tokens(scores, ids, 0.65) == [2001, 102]
    assert phrase_tokens(scores, ids, 0.95) == []


def test_boxes_go_back_to_source_pixels_inside_the_image() -> None:
    boxes = np.array([[0.5, 0.5, 0.2, 0.4], [0.05, 0.95, 0.2, 0.2]])
    np.testing.assert_allclose(cxcywh_to_pixels(boxes, (200, 100)), [[80, 30, 120, 70], [0, 85, 30, 100]])


_VOCAB = {2000: "dog", 2001: "cat", 1012: ".", 102: "[SEP]"}
_IDS = (101, 2000, 1012, 2001, 1012, 102)


def _render(ids: list[int]) -> str:
    return " ".join(_VOCAB[i] for i in ids)


def _scores() -> tuple[np.ndarray, np.ndarray]:
    # columns: [CLS] dog . cat . [SEP] pad pad
    probabilities = np.array(
        [
            [0.1, 0.90, 0.3, 0.2, 0.3, 0.1, 0, 0],  # dog, 0.90
            [0.1, 0.45, 0.3, 0.2, 0.3, 0.1, 0, 0],  # best 0.45: under the box threshold
            [0.1, 0.20, 0.7, 0.2, 0.7, 0.1, 0, 0],  # only dots: phrase "" names no class, dropped
            [0.1, 0.85, 0.3, 0.2, 0.3, 0.1, 0, 0],  # dog, 0.85, overlapping the first: suppressed
            [0.1, 0.20, 0.3, 0.60, 0.3, 0.1, 0, 0],  # cat, 0.60, overlapping the first (another class)
            [0.1, 0.55, 0.3, 0.2, 0.3, 0.1, 0, 0],  # dog, 0.55, elsewhere
        ]
    )
    boxes = np.array(
        [
            [0.5, 0.5, 0.2, 0.2],
            [0.2, 0.2, 0.1, 0.1],
            [0.8, 0.8, 0.1, 0.1],
            [0.51, 0.5, 0.2, 0.2],  # IoU with box 0: 19*20 / (2*400 - 380) = 0.905
            [0.5, 0.5, 0.2, 0.18],
            [0.2, 0.8, 0.1, 0.1],
        ]
    )
    return probabilities, boxes


def test_decode_thresholds_unmatched_phrases_and_nms() -> None:
    probabilities, boxes = _scores()
    classes = ("dog", "cat")
    xyxy, scores, ids = decode(probabilities, boxes, _IDS, _render, classes, 0.5, 0.5, (100, 100))
    assert ids.tolist() == [0, 1, 0]
    np.testing.assert_allclose(scores, [0.90, 0.60, 0.55], rtol=1e-6)
    np.testing.assert_allclose(xyxy, [[40, 40, 60, 60], [40, 41, 60, 59], [15, 75, 25, 85]], atol=1e-9)
    # class-agnostic: the cat box (IoU 0.9 with the dog box) goes too
    _, _, ids = decode(probabilities, boxes, _IDS, _render, classes, 0.5, 0.5, (100, 100), class_agnostic=True)
    assert ids.tolist() == [0, 0]
    # the box threshold is honoured (Roboflow's current stack ignores the request's)
    _, scores, _ = decode(probabilities, boxes, _IDS, _render, classes, 0.86, 0.5, (100, 100))
    np.testing.assert_allclose(scores, [0.90], rtol=1e-6)
    # and the text threshold: at 0.95 no token is in any phrase, every detection is dropped
    xyxy, _, _ = decode(probabilities, boxes, _IDS, _render, classes, 0.5, 0.95, (100, 100))
    assert xyxy.shape == (0, 4)
    # at most max_detections, best first
    _, scores, _ = decode(probabilities, boxes, _IDS, _render, classes, 0.5, 0.5, (100, 100), max_detections=1)
    np.testing.assert_allclose(scores, [0.90], rtol=1e-6)


def test_config_py_is_read_not_run(tmp_path: Path) -> None:
    from edge_agent.models.foundation.grounding_dino_weights import read_config_py

    marker = tmp_path / "ran"
    config = tmp_path / "config.py"
    config.write_text(
        f"nheads = 8\nmax_text_len = 256\ntext_encoder_type = 'bert-base-uncased'\n"
        f"return_interm_indices = [1, 2, 3]\nside_effect = open({str(marker)!r}, 'w')\n"
    )
    values = read_config_py(config)
    assert values == {
        "nheads": 8,
        "max_text_len": 256,
        "text_encoder_type": "bert-base-uncased",
        "return_interm_indices": [1, 2, 3],
    }
    assert not marker.exists()


# -- the network -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_grounding_dino()


@pytest.fixture
def gdino_cache(model_env, tiny):
    write_legacy(model_env.cache_dir, tiny)
    model_env.set(OFFLINE_MODE="true")
    return model_env


def test_original_checkpoint_gives_transformers_own_outputs(gdino_cache, tiny) -> None:
    """The renaming check: every tensor of the original checkpoint lands where transformers' model
    has it, so the loaded detector's raw outputs equal transformers' model run on the same weights."""
    from edge_agent.models import get_model
    from edge_agent.models.foundation.grounding_dino_weights import UNUSED_TARGETS, to_transformers

    renamed, unknown = to_transformers(original_state_dict(tiny))
    assert unknown == []
    expected = tiny.state_dict()
    assert set(expected) - set(renamed) == set(UNUSED_TARGETS)
    for key, value in renamed.items():
        assert torch.equal(value, expected[key]), key
    model = get_model(MODEL_ID)
    prompts = model.prompt_set(["dog", "cat"])
    assert prompts.token_ids == (101, 2000, 1012, 2001, 1012, 102)  # "[CLS] dog . cat . [SEP]"
    frame = noise_frame()
    scores, boxes = model.raw_outputs(frame, prompts)
    pixels = torch.from_numpy(pixel_values(frame))[None]
    with torch.inference_mode():
        direct = tiny(pixel_values=pixels, input_ids=prompts.input_ids, attention_mask=prompts.attention_mask)
    np.testing.assert_allclose(scores, direct.logits[0].sigmoid().numpy(), atol=1e-6)
    np.testing.assert_allclose(boxes, direct.pred_boxes[0].numpy(), atol=1e-6)
    assert scores.shape == (30, 256)  # every query, max_text_len tokens (padding at sigmoid(-inf) = 0)
    assert float(scores[:, 6:].max()) == 0.0


@pytest.fixture
def rigged_cache(model_env):
    write_legacy(model_env.cache_dir, rigged(tiny_grounding_dino(seed=1)))
    model_env.set(OFFLINE_MODE="true")
    return model_env


def test_predictions_classes_and_confidence_by_hand(rigged_cache) -> None:
    from edge_agent.models import get_model

    model = get_model(MODEL_ID)
    (response,) = model.infer([noise_frame()], prompts=["dog", "cat"])
    body = response.model_dump(by_alias=True)
    rows = body["predictions"]
    assert body["image"] == {"width": 160, "height": 120}
    assert 1 <= len(rows) <= 30
    # every token scores sigmoid(2): the phrase is "dog cat [SEP]", whose first class is dog
    assert {r["class"] for r in rows} == {"dog"} and {r["class_id"] for r in rows} == {0}
    assert all(r["confidence"] == pytest.approx(RIGGED, abs=1e-6) for r in rows)
    for r in rows:
        assert 0 <= r["x"] - r["width"] / 2 and r["x"] + r["width"] / 2 <= 160 + 1e-6
        assert 0 <= r["y"] - r["height"] / 2 and r["y"] + r["height"] / 2 <= 120 + 1e-6
    (response,) = model.infer([noise_frame()], prompts=["cat", "dog"])
    assert {r["class"] for r in response.model_dump(by_alias=True)["predictions"]} == {"cat"}
    # both thresholds are honoured
    (response,) = model.infer([noise_frame()], prompts=["dog"], confidence=0.89)
    assert response.model_dump()["predictions"] == []
    (response,) = model.infer([noise_frame()], prompts=["dog"], confidence=0.5, text_threshold=0.89)
    assert response.model_dump()["predictions"] == []
    # a class the tokenizer splits is matched as the tokenizer renders it ("t-shirt" -> "t - shirt")
    (prediction,) = model.predict([noise_frame()], prompts=["T-shirt"])
    assert len(prediction) >= 1 and prediction.class_names == ("T-shirt",)


def test_text_side_runs_once_per_prompt_set(rigged_cache) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import InvalidInputError

    model = get_model(MODEL_ID)
    frames = [noise_frame(s) for s in range(3)]
    model.predict(frames, image_options=[{"prompts": ["dog", "cat"]}] * 3)
    assert model.text_runs == 1
    first = model.predict(frames[:1], image_options=[{"prompts": ["person"]}])
    assert model.text_runs == 2 and first[0].class_names == ("person",)
    mixed = model.predict(frames[:2], image_options=[{"prompts": ["dog", "cat"]}, {"prompts": ["person"]}])
    assert model.text_runs == 2  # both sets seen before
    assert [p.class_names for p in mixed] == [("dog", "cat"), ("person",)]
    with pytest.raises(InvalidInputError, match="prompts"):
        model.predict(frames[:1])


def test_default_variant_and_bare_id_read_the_same_checkpoint(gdino_cache, tiny) -> None:
    from edge_agent.models import get_model

    for model_id in ("grounding_dino/default", "grounding_dino"):
        model = get_model(model_id)
        assert model.model_id == "grounding_dino/default"
        expected = tiny.state_dict()
        loaded = model.network.state_dict()
        assert torch.equal(loaded["model.level_embed"], expected["model.level_embed"])


def test_flag_switches_the_family_off(gdino_cache) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    gdino_cache.set(CORE_MODEL_GROUNDINGDINO_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="CORE_MODEL_GROUNDINGDINO_ENABLED"):
        get_model(MODEL_ID)


def test_missing_runtime_names_the_extra(gdino_cache, monkeypatch) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(MissingExtraError, match=r"edge-agent\[grounding-dino\]"):
        get_model(MODEL_ID)


def test_missing_bert_names_where_it_is_looked_for(model_env, tiny) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelNotCachedError

    directory = model_env.cache_dir / "grounding_dino" / "groundingdino_swint_ogc"
    directory.mkdir(parents=True)
    torch.save({"model": original_state_dict(tiny)}, directory / "groundingdino_swint_ogc.pth")
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(ModelNotCachedError, match="models--google-bert--bert-base-uncased"):
        get_model(MODEL_ID)
    # the older repository name is read too, and BERT's weights from the hub where the checkpoint has none
    write_bert_snapshot(model_env.cache_dir / "hf_home" / "hub", tiny, repo="bert-base-uncased")
    state = {k: v for k, v in original_state_dict(tiny).items() if not k.startswith("bert.")}
    torch.save({"model": state}, directory / "groundingdino_swint_ogc.pth")
    model = get_model(MODEL_ID)
    expected = tiny.state_dict()["model.text_backbone.embeddings.word_embeddings.weight"]
    assert torch.equal(
        model.network.state_dict()["model.text_backbone.inner.embeddings.word_embeddings.weight"], expected
    )


def test_a_foreign_checkpoint_is_a_clear_error(gdino_cache) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelArtifactsError

    path = gdino_cache.cache_dir / "grounding_dino" / "groundingdino_swint_ogc" / "groundingdino_swint_ogc.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, path)
    with pytest.raises(ModelArtifactsError, match="not an original Grounding DINO state dict"):
        get_model(MODEL_ID)
    # one tensor short: named; one tensor more (a newer training run's extra): ignored
    state = original_state_dict(tiny_grounding_dino())
    del state["transformer.enc_output_norm.weight"]
    state["transformer.something_new.weight"] = torch.zeros(2)
    torch.save({"model": state}, path)
    with pytest.raises(ModelArtifactsError, match=r"1 missing tensors .*model\.enc_output_norm\.weight"):
        get_model(MODEL_ID)


def test_legacy_download_through_core_model(model_server, model_env, tiny) -> None:
    from edge_agent.models import get_model

    buffer = io.BytesIO()
    torch.save({"model": original_state_dict(tiny)}, buffer)
    model_server.add_core_model(
        "grounding_dino", "groundingdino_swint_ogc", {"groundingdino_swint_ogc.pth": buffer.getvalue()}
    )
    write_bert_snapshot(model_env.cache_dir / "hf_home" / "hub", tiny)
    model_env.set(API_BASE_URL=model_server.base_url, OFFLINE_MODE="false")
    model = get_model(MODEL_ID)
    assert (
        model_env.cache_dir / "grounding_dino" / "groundingdino_swint_ogc" / "groundingdino_swint_ogc.pth"
    ).is_file()
    assert torch.equal(model.network.state_dict()["model.level_embed"], tiny.state_dict()["model.level_embed"])


def test_current_stack_package_with_its_config_py(model_server, model_env) -> None:
    """``weights.pth`` + ``config.py``: the head count comes from config.py (4 here, not the OGC's 8)."""
    from edge_agent.models import get_model
    from edge_agent.models.artifacts.packages.client import PackageRegistry
    from edge_agent.models.artifacts.packages.store import PackageStore
    from edge_agent.models.common.settings import get_model_settings
    from tests.fixtures.model_server import ServedPackage
    from tests.gdino_factory import tiny_config

    tiny4 = tiny_grounding_dino(seed=2, config=tiny_config(heads=4))
    buffer = io.BytesIO()
    torch.save(original_state_dict(tiny4), buffer)  # a bare state dict this time
    config = b"batch_size = 1\nnheads = 4\nmax_text_len = 256\ntext_encoder_type = 'bert-base-uncased'\n"
    manifest = {
        "type": "torch-model-package-v1",
        "backendType": "torch",
        "quantization": "fp32",
        "dynamicBatchSize": True,
    }
    package = ServedPackage("gd1", manifest, {"weights.pth": buffer.getvalue(), "config.py": config})
    model_server.add_package_model(MODEL_ID, [package], "grounding-dino", "object-detection")
    write_bert_snapshot(model_env.cache_dir / "hf_home" / "hub", tiny4)
    model_env.set(API_BASE_URL=model_server.base_url)
    settings = get_model_settings()
    metadata = PackageRegistry(settings).weights(MODEL_ID, None)
    PackageStore(settings).materialize(metadata, metadata.packages[0])
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    model = get_model(MODEL_ID)
    assert model.network.config.encoder_attention_heads == 4
    prompts = model.prompt_set(["dog"])
    frame = noise_frame()
    scores, _ = model.raw_outputs(frame, prompts)
    with torch.inference_mode():
        direct = tiny4(
            pixel_values=torch.from_numpy(pixel_values(frame))[None],
            input_ids=prompts.input_ids,
            attention_mask=prompts.attention_mask,
        )
    np.testing.assert_allclose(scores, direct.logits[0].sigmoid().numpy(), atol=1e-6)


def test_infer_cli_prompts_and_confidence(rigged_cache, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), noise_frame())
    base = [sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", MODEL_ID, "--prompt", "dog"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *extra, str(image)], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=240
        )

    done = run("--prompt", "cat", "--confidence", "0.5")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["predictions"]
    assert rows and {r["class"] for r in rows} == {"dog"}
    assert all(r["confidence"] == pytest.approx(RIGGED, abs=1e-6) for r in rows)
    done = run("--confidence", "0.9")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] == []
