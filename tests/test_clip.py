"""CLIP from /core_model into the legacy layout: tokenizer, pre-processing, embeddings, zero-shot.

Real CLIP weights cannot be had offline; the models here are CLIP-shaped (``tests/clip_factory``)
with numpy references, and their text table points the "red"/"green"/"blue" tokens at the
image's colour dims, so zero-shot must pick the right colour through the real tokenizer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from edge_agent.models import clear_cache, get_model, list_cached_models
from edge_agent.models.common.errors import InvalidInputError, ModelDisabledError, ModelNotCachedError
from edge_agent.models.foundation.clip import CLIP_MEAN, CLIP_STD, clip_preprocess, cosine, zero_shot
from edge_agent.models.foundation.tokenizer import ClipTokenizer
from edge_agent.models.maths.predictions import Embeddings, ZeroShotClassification
from tests.clip_factory import colour_tokens, text_table, textual_model, visual_model, visual_reference

ROOT = Path(__file__).resolve().parent.parent
SLUG_DIR = "~clip-ViT-B-16-209529c29627a4a379adf65002940e2a"  # Roboflow's legacy directory for clip/ViT-B-16
PROMPTS = ["a red thing", "a green thing", "a blue thing"]


def _frame(bgr: tuple[int, int, int], width: int = 200, height: int = 100) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = bgr
    return frame


@pytest.fixture
def clip_server(model_server, model_env):
    table = text_table(colour_tokens())
    model_server.add_core_model(
        "clip", "ViT-B-16", {"visual.onnx": visual_model(64), "textual.onnx": textual_model(table, TensorProto.INT32)}
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    return model_server, table


def test_tokenizer_gives_clips_token_ids_and_refuses_overlong_text():
    tokens = ClipTokenizer()(["a photo of a cat", ""], np.int32)
    assert tokens.dtype == np.int32 and tokens.shape == (2, 77)
    # OpenAI CLIP's clip.tokenize("a photo of a cat"): start, a, photo, of, a, cat, end, zeros
    assert tokens[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert tokens[1, :3].tolist() == [49406, 49407, 0]
    with pytest.raises(InvalidInputError, match="CLIP reads at most 77"):
        ClipTokenizer()(["word " * 80])


def test_preprocessing_is_clips_resize_centre_crop_and_normalisation():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :50] = (0, 0, 255)  # red left quarter: cropped away by the centre crop
    frame[:, 50:150] = (255, 0, 0)  # blue centre
    out = clip_preprocess(frame, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    blue = (np.array([0, 0, 1.0]) - CLIP_MEAN) / CLIP_STD
    assert np.allclose(out[:, 16, 16], blue, atol=1e-4)  # RGB order, CLIP mean/std
    assert np.allclose(out[:, :, 1:-1].reshape(3, -1).T, blue, atol=1e-4)  # no red kept inside


def test_download_layout_embeddings_and_zero_shot(clip_server, model_env):
    server, table = clip_server
    model = get_model("clip/ViT-B-16")
    directory = model_env.cache_dir / SLUG_DIR
    assert sorted(p.name for p in directory.iterdir()) == [
        ".edge-agent.json",
        "model_type.json",
        "textual.onnx",
        "visual.onnx",
    ]
    (request,) = [r for r in server.requests if r.path == "/core_model/clip/ViT-B-16"]
    assert request.query["nocache"] == ["true"] and "api_key" not in request.query  # tier 2 needs no key
    frames = [_frame((0, 0, 255)), _frame((0, 255, 0), 120, 240), _frame((255, 0, 0))]
    # embeddings: the raw visual output, as the numpy reference of the same network computes it
    embeddings = model.predict(frames)
    assert all(isinstance(e, Embeddings) for e in embeddings)
    reference = visual_reference(np.stack([clip_preprocess(f, 64) for f in frames]))
    assert np.allclose(np.stack([e.vector for e in embeddings]), reference, atol=1e-4)
    (response,) = model.infer(frames[0])
    assert response.model_dump()["embeddings"][0] == pytest.approx(reference[0].tolist(), rel=1e-4, abs=1e-4)
    # text: the table lookup of CLIP's tokens
    tokens = ClipTokenizer()(PROMPTS)
    assert np.allclose(model.embed_text(PROMPTS), table[tokens].mean(axis=1), atol=1e-6)
    # zero-shot: each colour frame's best prompt is its colour; scores are the cosine and softmax(100 cos)
    scored = model.predict(frames, prompts=PROMPTS)
    assert [p.top for p in scored] == PROMPTS
    similarity = cosine(reference, table[tokens].mean(axis=1))
    for p, expected in zip(scored, similarity, strict=True):
        assert isinstance(p, ZeroShotClassification)
        assert np.allclose(p.similarities, expected, atol=1e-4)
        assert np.allclose(p.probabilities, zero_shot(expected), atol=1e-4) and p.probabilities.sum() == pytest.approx(
            1
        )
    body = scored[2].to_response()
    assert body["top"] == "a blue thing" and next(q["class"] for q in body["predictions"]) == "a blue thing"
    assert body["similarity"] == pytest.approx(similarity[2].tolist(), rel=1e-4, abs=1e-4) and body["image"] == {
        "width": 200,
        "height": 100,
    }
    assert model.compare(frames[1], PROMPTS) == pytest.approx(similarity[1].tolist(), rel=1e-4, abs=1e-4)


def test_per_image_prompts_and_bad_options(clip_server):
    model = get_model("clip/ViT-B-16")
    red, blue = _frame((0, 0, 255)), _frame((255, 0, 0))
    out = model.predict(
        [red, blue, red], image_options=[{"prompts": ["red", "blue"]}, {"prompts": ["green", "blue"]}, None]
    )
    assert [type(p).__name__ for p in out] == ["ZeroShotClassification", "ZeroShotClassification", "Embeddings"]
    assert (out[0].top, out[1].top, out[1].prompts) == ("red", "blue", ("green", "blue"))
    with pytest.raises(InvalidInputError, match="per-image options prompts, not regions"):
        model.predict([red], image_options=[{"regions": [[0, 0, 1, 1]]}])
    with pytest.raises(InvalidInputError, match="must not repeat"):
        model.predict([red], prompts=["red", "red"])


def test_offline_flags_list_and_clear(clip_server, model_env):
    get_model("clip/ViT-B-16")
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    assert get_model("clip/ViT-B-16").resolution == 64  # from the cache, no network
    (entry,) = [e for e in list_cached_models() if e.model_id == "clip/ViT-B-16"]
    assert (entry.task_type, entry.model_type, entry.path.name) == ("embed", "clip", SLUG_DIR)
    with pytest.raises(ModelNotCachedError, match="not \\(completely\\) in the model cache"):
        get_model("clip/ViT-L-14")
    model_env.set(CORE_MODEL_CLIP_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="CORE_MODEL_CLIP_ENABLED=false"):
        get_model("clip/ViT-B-16")
    model_env.set(OFFLINE_MODE="false")
    assert clear_cache("clip/ViT-B-16") and not (model_env.cache_dir / SLUG_DIR).exists()


def test_missing_tokenizer_names_the_extra(model_env):
    code = (
        "import sys; sys.modules['instant_clip_tokenizer'] = None; "
        "from models import get_model; get_model('clip/ViT-B-16')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install 'edge-agent[clip]'" in result.stderr and "instant-clip-tokenizer" in result.stderr


def test_a_damaged_core_file_is_kept_offline_and_fetched_again_online(clip_server, model_env):
    from edge_agent.models.common.errors import CacheIntegrityError

    server, _ = clip_server
    get_model("clip/ViT-B-16")
    visual = model_env.cache_dir / SLUG_DIR / "visual.onnx"
    good = visual.read_bytes()
    visual.write_bytes(good[: len(good) // 2])
    model_env.set(OFFLINE_MODE="true")
    with pytest.raises(
        CacheIntegrityError, match=r"visual.onnx: .* bytes on disk, .* recorded at download.*nothing was deleted"
    ):
        get_model("clip/ViT-B-16")
    assert visual.stat().st_size == len(good) // 2
    model_env.set(OFFLINE_MODE="false")
    get_model("clip/ViT-B-16")
    assert visual.read_bytes() == good and server.count("/core-files/clip/ViT-B-16/visual.onnx") == 2
