"""SAM3: what is ours, checked against hand-computed values (BPE ids on a tiny vocabulary, the
pre-processing, scores and the threshold, masks and boxes back in source pixels, the
``/sam3/concept_segment`` body with its polygons and RLE), and Roboflow's artifacts loading through
the real loader, the loaded network giving exactly what transformers' ``Sam3Model`` gives run
directly on the same tensors, with text features computed once per prompt set; ``infer`` on the CLI.

Artifacts: tests/sam3_factory.py (random weights from transformers' own config classes, written
under Meta's key names as Roboflow serves them, and a small vocabulary in OpenAI's file format).
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
pytest.importorskip("instant_clip_tokenizer")

from edge_agent.models.common.errors import InvalidInputError  # noqa: E402
from edge_agent.models.foundation.sam3 import (  # noqa: E402
    ConceptSegmentation,
    boxes_to_source,
    check_prompts,
    concept_scores,
    sam3_input,
)
from edge_agent.models.foundation.sam3_weights import sam3_config, sam3_state_to_hf  # noqa: E402
from edge_agent.models.foundation.tokenizer import ClipTokenizer  # noqa: E402
from tests.sam3_factory import (  # noqa: E402
    TINY_VOCAB,
    checkpoint_bytes,
    original_sam3_state,
    sam3_model,
    tiny_sam3_config,
    vocabulary_gz,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "sam3/sam3_final"
# the tiny vocabulary's ids, by hand: 256 byte tokens and 256 end-of-word byte tokens (OpenAI's
# bytes_to_unicode order: '!'..'~' first), then one id per merge in file order, then start/end
CAT, DOG, PERSON, CAR, SOT, EOT = 513, 515, 520, 521, 522, 523


@pytest.fixture(scope="module")
def tiny() -> tuple[object, bytes, bytes]:
    model = sam3_model(tiny_sam3_config())
    return model, checkpoint_bytes(original_sam3_state(model)), vocabulary_gz()


def _cache(model_env, tiny) -> Path:
    _, weights, vocab = tiny
    directory = model_env.cache_dir / "sam3" / "sam3_final"
    directory.mkdir(parents=True)
    (directory / "weights.pt").write_bytes(weights)
    (directory / "bpe_simple_vocab_16e6.txt.gz").write_bytes(vocab)
    return directory


# -- pure parts ----------------------------------------------------------------------------------


def test_tokenizer_reads_the_gzipped_vocabulary(tmp_path) -> None:
    path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    path.write_bytes(vocabulary_gz())
    tokenizer = ClipTokenizer("SAM3", path, context_length=8)
    assert (tokenizer.start_of_text, tokenizer.end_of_text) == (SOT, EOT) and EOT == TINY_VOCAB - 1
    ids = tokenizer(["cat dog", "Person", "car", "cats"])
    assert ids.tolist() == [
        [SOT, CAT, DOG, EOT, 0, 0, 0, 0],
        [SOT, PERSON, EOT, 0, 0, 0, 0, 0],  # lower-cased
        [SOT, CAR, EOT, 0, 0, 0, 0, 0],
        # "ca" merges, "t" + "s</w>" do not: 't' is byte 116 -> 116 - 33; 's</w>' 256 + 115 - 33
        [SOT, 512, 83, 338, EOT, 0, 0, 0],
    ]
    with pytest.raises(InvalidInputError, match="at most 8"):
        tokenizer(["cat " * 7])


def test_preprocessing_is_rgb_squashed_to_1008_half_normalised() -> None:
    frame = np.zeros((1008, 1008, 3), np.uint8)
    frame[:, :, 0] = 255  # blue
    frame[:, :, 1] = 51
    frame[:504, :, 2] = 204  # red, top half only
    pixels = sam3_input(frame)
    assert pixels.shape == (3, 1008, 1008) and pixels.dtype == np.float32
    # channel 0 is red: (204/255 - 0.5) / 0.5 = 0.6 on top, -1 below; green 51 -> -0.6; blue 1
    assert pixels[0, 0, 0] == pytest.approx(0.6) and pixels[0, -1, 0] == pytest.approx(-1.0)
    assert pixels[1, 10, 10] == pytest.approx(-0.6) and pixels[2, 500, 900] == pytest.approx(1.0)
    small = sam3_input(np.full((120, 160, 3), 255, np.uint8))  # squashed, aspect not kept
    assert small.shape == (3, 1008, 1008) and np.allclose(small, 1.0)


def test_scores_are_query_times_presence_probability() -> None:
    scores = concept_scores(np.array([0.0, 2.0, -1.0]), 0.0)
    # sigmoid(0) = 0.5; sigmoid(2) = 0.880797; sigmoid(-1) = 0.268941; presence sigmoid(0) = 0.5
    np.testing.assert_allclose(scores, [0.25, 0.4403985, 0.1344707], rtol=1e-6)
    assert concept_scores(np.array([8.0]), -8.0)[0] == pytest.approx(0.99966 * 0.00033535, rel=1e-3)


def test_boxes_map_to_source_pixels_clipped() -> None:
    out = boxes_to_source(np.array([[0.1, 0.2, 0.5, 1.2], [-0.1, 0.0, 1.0, 0.5]]), (640, 480))
    np.testing.assert_allclose(out, [[64, 96, 320, 480], [0, 0, 640, 240]])


def test_prompts_are_checked() -> None:
    assert check_prompts(["person", "car"]) == ("person", "car")
    for bad, message in (
        ("person", "non-empty list"),
        ([], "non-empty list"),
        (["person", ""], "non-empty strings"),
        (["a", "a"], "repeat"),
        ([f"thing {i}" for i in range(17)], "at most 16"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            check_prompts(bad)


def test_concept_response_and_stream_message_by_hand() -> None:
    masks = np.zeros((2, 30, 40), bool)
    masks[0, 10:20, 20:40] = True
    masks[1, 1, 1:3] = True
    seg = ConceptSegmentation(
        boxes=np.array([[20.0, 10.0, 40.0, 20.0], [1.0, 1.0, 3.0, 2.0]]),
        confidences=np.array([0.9, 0.6], np.float32),
        class_ids=np.array([1, 1]),
        class_names=("dog", "car"),
        image_size=(40, 30),
        masks=masks,
        prompts=("dog", "car"),
        elapsed=0.25,
    )
    body = seg.roboflow_response()
    assert body["time"] == 0.25
    first, second = body["prompt_results"]
    assert first == {
        "prompt_index": 0,
        "echo": {"prompt_index": 0, "type": "text", "text": "dog", "num_boxes": None},
        "predictions": [],
    }
    assert second["echo"]["text"] == "car" and [p["confidence"] for p in second["predictions"]] == pytest.approx(
        [0.9, 0.6]
    )
    assert second["predictions"][0]["masks"] == [[[20, 10], [20, 19], [39, 19], [39, 10]]]
    assert second["predictions"][0]["format"] == "json"
    rle = ConceptSegmentation(**{**seg.__dict__, "concept_format": "rle", "masks": masks[:, :3, :4]})
    counts = rle.roboflow_response()["prompt_results"][1]["predictions"][1]["masks"]
    # 3x4 mask, row 1 columns 1-2, column-major: 4 zeros, 1, 2 zeros, 1, 4 zeros -> "4", "1", "2",
    # then differences from the count two before: 1-1=0, 4-2=2 -> "41202"
    assert counts == {"size": [3, 4], "counts": "41202"}
    message = seg.to_response()  # what a stream publishes: instance segmentation, class = prompt
    assert [(p["class"], p["class_id"]) for p in message["predictions"]] == [("car", 1), ("car", 1)]
    assert message["predictions"][0]["x"] == 30.0 and message["predictions"][0]["points"]


# -- the loaded network ----------------------------------------------------------------------------


def test_original_keys_convert_to_every_tensor_of_the_network(tiny) -> None:
    model, _, _ = tiny
    state = original_sam3_state(model)
    assert "detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight" in state
    assert "detector.transformer.decoder.layers.0.ca_text.in_proj_weight" in state
    assert any(k.startswith("tracker.") for k in state)
    hf = sam3_state_to_hf(state)
    config = sam3_config(hf)
    backbone = config.vision_config.backbone_config
    assert (backbone.hidden_size, backbone.num_hidden_layers, backbone.patch_size) == (64, 8, 28)
    assert backbone.global_attn_indexes == [1, 3, 5, 7] and backbone.pretrain_image_size == 336
    assert config.detr_decoder_config.num_queries == 20 and config.text_config.vocab_size == TINY_VOCAB
    from transformers import Sam3Model

    rebuilt = Sam3Model(config)
    missing, unused = rebuilt.load_state_dict(hf, strict=False)
    assert missing == [] and sorted(unused) == ["geometry_encoder.points_direct_project.weight"]
    expected = model.state_dict()
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_real_size_architecture_is_read_back_from_the_shapes() -> None:
    """Meta's SAM3 (transformers' ``Sam3Config()``): what the loader reads from a real-size state dict
    (built on the meta device: shapes only) is that configuration, heads and global blocks included."""
    from transformers import Sam3Config, Sam3Model

    with torch.device("meta"):
        network = Sam3Model(Sam3Config())
    read, real = sam3_config(network.state_dict()), Sam3Config()
    pairs = [
        (read.vision_config, real.vision_config),
        (read.vision_config.backbone_config, real.vision_config.backbone_config),
        (read.text_config, real.text_config),
        (read.geometry_encoder_config, real.geometry_encoder_config),
        (read.detr_encoder_config, real.detr_encoder_config),
        (read.detr_decoder_config, real.detr_decoder_config),
        (read.mask_decoder_config, real.mask_decoder_config),
    ]
    for ours, theirs in pairs:
        a, b = ours.to_dict(), theirs.to_dict()
        # the pad id is never read by the text encoder (Meta pads with 0, the mask says where text ends)
        differ = {k for k in set(a) | set(b) if a.get(k) != b.get(k)} - {"backbone_config", "pad_token_id"}
        assert not differ, (type(theirs).__name__, {k: (a.get(k), b.get(k)) for k in differ})


def test_loads_from_core_model_and_matches_transformers_run_directly(tiny, model_server, model_env) -> None:
    from edge_agent.models import get_model

    model, weights, vocab = tiny
    model_server.add_core_model("sam3", "sam3_final", {"weights.pt": weights, "bpe_simple_vocab_16e6.txt.gz": vocab})
    model_env.set(API_BASE_URL=model_server.base_url)
    loaded = get_model(MODEL_ID)
    assert (model_env.cache_dir / "sam3" / "sam3_final" / "weights.pt").read_bytes() == weights
    assert loaded.task_type == "instance-segmentation" and loaded.stream_options == ("prompts",)
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ours = loaded.raw_outputs(frame, ("cat", "dog"))
    pixels = torch.from_numpy(sam3_input(frame))[None]
    for out, word in zip(ours, (CAT, DOG), strict=True):
        ids = torch.zeros(1, 32, dtype=torch.long)
        ids[0, :3] = torch.tensor([SOT, word, EOT])
        with torch.inference_mode():
            direct = model(pixel_values=pixels, input_ids=ids, attention_mask=(ids != 0).long())
        for name in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks"):
            torch.testing.assert_close(getattr(out, name), getattr(direct, name), rtol=1e-4, atol=1e-4)
    # text features once per prompt set: a second frame reuses them, a new set is encoded once
    assert loaded.text_encodings == 1
    loaded.predict([frame, frame], prompts=["cat", "dog"], confidence=0.0)
    assert loaded.text_encodings == 1
    (seg,) = loaded.predict([frame], prompts=["car"], confidence=0.0)
    assert loaded.text_encodings == 2
    assert len(seg) == 20 and set(seg.class_names) == {"car"} and seg.masks.shape == (20, 120, 160)
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    assert get_model(MODEL_ID).model_id == MODEL_ID  # from the cache alone


def test_current_stack_package_layout_loads_offline(tiny, model_server, model_env) -> None:
    from edge_agent.models import get_model
    from tests.fixtures.model_server import ServedPackage

    model, weights, vocab = tiny
    manifest = {
        "type": "torch-model-package-v1",
        "backendType": "torch",
        "quantization": "fp32",
        "dynamicBatchSize": True,
    }
    files = {"weights.pt": weights, "bpe_simple_vocab_16e6.txt.gz": vocab}
    model_server.add_package_model(
        MODEL_ID, [ServedPackage("sam3base", manifest, files)], "sam3", "promptable-concept-segmentation"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    loaded = get_model(MODEL_ID)
    assert "models-cache" in loaded.directory.parts and (loaded.directory / "weights.pt").read_bytes() == weights
    assert not (model_env.cache_dir / "sam3" / "sam3_final").exists()
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    again = get_model(MODEL_ID)  # from the package cache alone
    expected = model.state_dict()
    for key, value in again.network.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_disabled_flag_and_damaged_files_are_clear_errors(tiny, model_env) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelArtifactsError, ModelDisabledError

    directory = _cache(model_env, tiny)
    model_env.set(OFFLINE_MODE="true", CORE_MODEL_SAM3_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="CORE_MODEL_SAM3_ENABLED"):
        get_model(MODEL_ID)
    model_env.set(CORE_MODEL_SAM3_ENABLED=None)
    (directory / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelArtifactsError, match=r"weights\.pt"):
        get_model(MODEL_ID)


class _Out:
    def __init__(self, logits, presence, boxes, masks) -> None:
        self.pred_logits = torch.tensor([logits], dtype=torch.float32)
        self.presence_logits = torch.tensor([[presence]], dtype=torch.float32)
        self.pred_boxes = torch.tensor([boxes], dtype=torch.float32)
        self.pred_masks = masks[None]


def test_threshold_sorting_and_masks_back_in_source_pixels(tiny, model_env) -> None:
    """The network stands in with known outputs: queries above 0.5 are kept (best first), their
    144x144 mask logits land on the source pixels the square covers, boxes scale to the frame."""
    from edge_agent.models import get_model

    _cache(model_env, tiny)
    model_env.set(OFFLINE_MODE="true")
    model = get_model(MODEL_ID)
    low = torch.full((3, 144, 144), -5.0)
    low[2, 36:72, 72:108] = 5.0  # rows 36..71, columns 72..107 of 144
    low[0, 0:72, 0:72] = 5.0
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2], [0.5, 0.25, 0.75, 0.5]]
    outs = [_Out([2.0, -3.0, 4.0], 5.0, boxes, low), _Out([9.0, 9.0, 9.0], -5.0, boxes, low)]
    model.raw_outputs = lambda image, prompts: outs  # type: ignore[method-assign]
    frame = np.zeros((480, 640, 3), np.uint8)
    (response,) = model.infer([frame], prompts=["dog", "car"])
    dog, car = response.model_dump()["prompt_results"]
    # sigmoid(4) * sigmoid(5) = 0.97544, sigmoid(2) * sigmoid(5) = 0.87490; sigmoid(-3) * .. < 0.5;
    # "car" is absent (presence sigmoid(-5) = 0.0067): nothing
    assert [p["confidence"] for p in dog["predictions"]] == pytest.approx([0.97544, 0.87490], abs=1e-4)
    assert car["predictions"] == [] and car["prompt_index"] == 1
    (polygon,) = dog["predictions"][0]["masks"]
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    # columns 72..107 of 144 are x 320..479 of 640; rows 36..71 are y 120..239 of 480
    assert (min(xs), max(xs), min(ys), max(ys)) == (320, 479, 120, 239)
    (seg,) = model.predict([frame], prompts=["dog", "car"])
    np.testing.assert_allclose(seg.boxes, [[320, 120, 480, 240], [0, 0, 320, 240]])
    assert seg.class_ids.tolist() == [0, 0] and seg.class_names == ("dog", "car")
    (strict,) = model.predict([frame], prompts=["dog", "car"], output_prob_thresh=0.9)
    assert strict.confidences.tolist() == pytest.approx([0.97544], abs=1e-4)
    with pytest.raises(InvalidInputError, match="text prompts"):
        model.predict([frame])
    # what a stream sets is checked when it is set (startup, PATCH): present, at most 16, each fits
    model.check_stream_options({"prompts": ["dog", "car"]})
    with pytest.raises(InvalidInputError, match="STREAM_<NAME>_PROMPTS"):
        model.check_stream_options({})
    with pytest.raises(InvalidInputError, match="at most 32"):
        model.check_stream_options({"prompts": ["cat " * 31]})


def test_infer_cli_with_prompts(tiny, model_env, tmp_path) -> None:
    _cache(model_env, tiny)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    env = dict(os.environ, OFFLINE_MODE="true")
    cli = (sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", MODEL_ID, str(image))
    run = subprocess.run(
        [*cli, "--prompt", "person", "--prompt", "car", "--confidence", "0", "--mask-format", "rle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert [(r["prompt_index"], r["echo"]["text"]) for r in body["prompt_results"]] == [(0, "person"), (1, "car")]
    rows = body["prompt_results"][0]["predictions"]
    assert len(rows) == 20 and rows[0]["format"] == "rle" and rows[0]["masks"]["size"] == [90, 120]
    assert [r["confidence"] for r in rows] == sorted((r["confidence"] for r in rows), reverse=True)
    assert body["time"] > 0
    bad = subprocess.run([*cli], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert bad.returncode == 2 and "--prompt" in bad.stderr
