"""TrOCR: tiny random checkpoints (tests/trocr_factory.py) from the package registry and from the
Hugging Face hub cache Roboflow's legacy class fills; one line per image, region or detector box."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models.foundation.trocr import crop_windows

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_crop_windows_clip_and_drop():
    assert crop_windows(100, 50, None) == [(0, 0, 100, 50)]
    assert crop_windows(100, 50, [(10.7, 5.2, 40.1, 20.0), (-5, -5, 500, 500), (120, 0, 130, 10)]) == [
        (10, 5, 41, 20),
        (0, 0, 100, 50),
    ]


def _reference(directory: Path, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
    """Text and mean-token-probability straight from transformers (RGB in)."""
    processor = transformers.AutoImageProcessor.from_pretrained(str(directory))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    network = transformers.VisionEncoderDecoderModel.from_pretrained(str(directory)).eval()
    pixels = processor(images=[c[:, :, ::-1].copy() for c in crops], return_tensors="pt").pixel_values
    with torch.no_grad():
        out = network.generate(pixels, output_scores=True, return_dict_in_generate=True)
    logits = torch.stack(out.scores, 1).log_softmax(-1)  # (N, steps, vocab)
    chosen = logits.gather(2, out.sequences[:, 1:, None])[..., 0]
    return tokenizer.batch_decode(out.sequences, skip_special_tokens=True), chosen.mean(1).exp().tolist()


def _sign() -> np.ndarray:
    rng = np.random.default_rng(4)
    return rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)


def test_package_layout_regions_and_the_infer_cli(model_server, model_env, tmp_path):
    from edge_agent.models import get_model
    from tests.agent_cli import run_cli
    from tests.fixtures.model_server import hf_package
    from tests.trocr_factory import MAX_NEW_TOKENS, checkpoint_files

    model_server.add_package_model(
        "trocr/trocr-base-printed", [hf_package("t1", checkpoint_files())], "tr-ocr", "text-only-ocr"
    )
    model_env.set(API_BASE_URL=model_server.base_url)
    model = get_model("trocr/trocr-base-printed")
    image = _sign()
    regions = [[10, 10, 90, 50], [100, 60, 190, 110]]
    (prediction,) = model.predict(image, regions=regions)
    crops = [image[10:50, 10:90], image[60:110, 100:190]]
    texts, scores = _reference(model.directory, crops)
    assert prediction.texts == tuple(texts) and all(len(t) == MAX_NEW_TOKENS for t in texts)
    assert np.allclose(prediction.text_confidences, scores, atol=1e-5)
    assert prediction.confidences.tolist() == [1.0, 1.0]  # regions are read whatever CONFIDENCE says
    assert prediction.boxes.tolist() == regions  # source pixels
    assert prediction.result == "\n".join(texts)  # one line per region
    body = prediction.to_response()
    assert [p["class"] for p in body["predictions"]] == texts and body["predictions"][1]["x"] == 145.0
    # the processor sees RGB (Roboflow's adapter hands it BGR)
    rgb = transformers.AutoImageProcessor.from_pretrained(str(model.directory))(
        images=[crops[0][:, :, ::-1].copy()], return_tensors="pt"
    ).pixel_values
    assert torch.equal(model.pixel_values([crops[0]]), rgb)
    path = tmp_path / "sign.png"
    cv2.imwrite(str(path), image)
    env = {"MODEL_CACHE_DIR": str(model_env.cache_dir), "OFFLINE_MODE": "true"}
    result = run_cli("infer", "--model", "trocr/trocr-base-printed", str(path), env=env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    (whole,), _ = _reference(model.directory, [image])
    assert set(body) == {"result", "time"} and body["result"] == whole and body["time"] > 0


def test_hub_cache_layout_and_detector_boxes(model_env, tmp_path):
    from edge_agent.models import get_model
    from tests.onnx_factory import constant_detector, letterbox_env, write_model_dir
    from tests.trocr_factory import checkpoint_files

    # microsoft/trocr-small-printed as the Hugging Face hub cache holds it, under MODEL_CACHE_DIR/hf_home/hub
    repo = model_env.cache_dir / "hf_home" / "hub" / "models--microsoft--trocr-small-printed"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name, data in checkpoint_files(seed=2).items():
        (snapshot / name).write_bytes(data)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    preds = np.zeros((5, 2), np.float32)  # two plates, 320x320 input stretched to 200x120
    preds[:, 0] = [80, 80, 64, 40, 0.9]  # x * 200/320, y * 120/320 -> xyxy (30, 22.5, 70, 37.5)
    preds[:, 1] = [240, 240, 96, 80, 0.6]  # -> (120, 75, 180, 105)
    plates = write_model_dir(tmp_path / "plates", constant_detector(preds), ["plate"], letterbox_env(fmt="Stretch to"))
    model_env.set(OFFLINE_MODE="true", OCR_DETECTOR_MODEL_ID=str(plates))
    model = get_model("trocr/trocr-small-printed")
    assert model.directory == snapshot
    image = _sign()
    (prediction,) = model.predict(image)
    assert np.allclose(prediction.boxes, [[30, 22, 70, 38], [120, 75, 180, 105]])  # whole pixels around each box
    texts, _ = _reference(snapshot, [image[22:38, 30:70], image[75:105, 120:180]])
    assert prediction.texts == tuple(texts)
    assert prediction.confidences.tolist() == pytest.approx([0.9, 0.6])  # the detector's scores
    assert len(model.predict(image, confidence=0.7)[0]) == 1
