"""Perception Encoder (PE-Core): RoPE, tokens and pre-processing by hand; random checkpoints in
Meta's state-dict layout (tests/pe_factory.py) from both of Roboflow's layouts; normalised
embeddings, cosine compare and zero-shot checked against numpy."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("instant_clip_tokenizer")

from edge_agent.models.foundation.pe_network import rope_angles, rotate  # noqa: E402
from edge_agent.models.foundation.perception_encoder import pack_tokens, pe_preprocess, softmax_scaled  # noqa: E402

SLUG_DIR_PREFIX = "~perception_encoder-PE-Core-B16-224-"

# Meta's parameter names (facebookresearch/perception_models core/vision_encoder/pe.py), a sample of each part
META_KEYS = [
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.transformer.resblocks.0.attn.in_proj_weight",
    "visual.transformer.resblocks.0.attn.in_proj_bias",
    "visual.transformer.resblocks.0.attn.out_proj.weight",
    "visual.transformer.resblocks.1.mlp.c_fc.weight",
    "visual.transformer.resblocks.1.mlp.c_proj.bias",
    "visual.ln_post.bias",
    "visual.attn_pool.probe",
    "visual.attn_pool.attn.in_proj_weight",
    "visual.attn_pool.layernorm.weight",
    "visual.attn_pool.mlp.c_fc.weight",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "transformer.resblocks.0.ln_1.weight",
    "transformer.resblocks.1.attn.out_proj.bias",
    "ln_final.weight",
    "text_projection",
    "logit_scale",
]


def test_rope_angles_and_rotation_by_hand():
    angles = rope_angles(1, 2, 8, with_cls=False)  # frequencies 1 and 1/100, each over two channels
    assert np.allclose(angles.numpy(), [[0.0] * 8, [1, 1, 0.01, 0.01, 0, 0, 0, 0]])
    with_cls = rope_angles(2, 1, 8, with_cls=True)  # class token unrotated; patches start at position 1
    assert np.allclose(
        with_cls.numpy(), [[0.0] * 8, [1, 1, 0.01, 0.01, 1, 1, 0.01, 0.01], [1, 1, 0.01, 0.01, 2, 2, 0.02, 0.02]]
    )
    turned = rotate(torch.tensor([1.0, 0.0, 0.0, 2.0]), torch.tensor([math.pi / 2] * 2 + [math.pi] * 2))
    assert turned.tolist() == pytest.approx([0.0, 1.0, 0.0, -2.0], abs=1e-6)


def test_tokens_preprocessing_and_softmax_by_hand():
    assert pack_tokens([[320, 1125], [1, 2, 3, 4]], 5).tolist() == [
        [49406, 320, 1125, 49407, 0],
        [49406, 1, 2, 3, 49407],  # cut to the context, the end token kept
    ]
    image = np.zeros((30, 60, 3), np.uint8)
    image[:] = (0, 51, 255)  # BGR
    out = pe_preprocess(image, 16)
    assert out.shape == (3, 16, 16)
    assert np.allclose(out.reshape(3, -1).T, [1.0, 51 / 255 * 2 - 1, -1.0], atol=1e-6)  # RGB, (x - 0.5) / 0.5
    probs = softmax_scaled(np.array([0.5, 0.0]), math.log(3) / 0.5)  # exp(ln 3) : exp(0) = 3 : 1
    assert probs.tolist() == pytest.approx([0.75, 0.25])


def test_meta_state_dict_layout():
    from tests.pe_factory import network

    keys = set(network().state_dict())
    assert set(META_KEYS) <= keys and "attn_mask" not in keys


@pytest.fixture
def pe_net():
    from tests.pe_factory import network

    return network()


def test_legacy_layout_embeddings_compare_and_zero_shot(model_server, model_env, pe_net):
    from edge_agent.models import get_model
    from edge_agent.models.maths.predictions import Embeddings
    from tests.pe_factory import model_pt

    model_server.add_core_model("perception_encoder", "PE-Core-B16-224", {"model.pt": model_pt(pe_net, wrap=True)})
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("perception_encoder/PE-Core-B16-224")
    assert model.directory.name.startswith(SLUG_DIR_PREFIX) and model.resolution == 64
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(2)]
    embedded = model.predict(frames)
    vectors = np.stack([e.vector for e in embedded])
    assert all(isinstance(e, Embeddings) for e in embedded)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)  # L2-normalised, as Roboflow
    with torch.no_grad():
        raw = pe_net.visual(torch.from_numpy(np.stack([pe_preprocess(f, 64) for f in frames]))).numpy()
    assert np.allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    prompts = ["a dog", "a photograph of a street at night"]
    texts = model.embed_text(prompts)
    assert texts.shape == (2, 24) and np.linalg.norm(texts, axis=1) == pytest.approx([1, 1], abs=1e-5)
    cosine = vectors @ texts.T
    assert model.compare(frames[0], prompts) == pytest.approx(cosine[0].tolist(), abs=1e-5)
    (scored,) = model.predict(frames[1], prompts=prompts)
    expected = np.exp(model.logit_scale * cosine[1])
    assert scored.probabilities == pytest.approx(expected / expected.sum(), abs=1e-5)
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_package_layout_and_the_infer_cli(model_server, model_env, pe_net, tmp_path):
    from edge_agent.models import get_model
    from tests.agent_cli import run_cli
    from tests.fixtures.model_server import torch_package
    from tests.pe_factory import model_pt, package_config

    files = {"model.pt": model_pt(pe_net), "config.json": package_config("PE-Core-B16-224")}
    model_server.add_package_model(
        "perception-encoder/PE-Core-B16-224", [torch_package("pe1", files)], "perception-encoder", "embedding"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("perception_encoder/PE-Core-B16-224")
    assert "models-cache" in str(model.directory)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), image)
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli(
        "infer",
        "--model",
        "perception_encoder/PE-Core-B16-224",
        "--prompt",
        "a cat",
        "--prompt",
        "a car",
        str(path),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    cosine = model.embed_text(["a cat", "a car"]) @ model.predict(image)[0].vector
    assert body["similarity"] == pytest.approx(cosine.tolist(), abs=1e-5)
    assert {p["class"] for p in body["predictions"]} == {"a cat", "a car"}
