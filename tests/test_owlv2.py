"""OWLv2: the pre-processing, the reference-box matching and the scoring rules against
hand-computed values; the network from the Hugging Face hub cache layout through the real loader
(off by default, as in Roboflow); example boxes on a reference image finding that object, the
reference embeddings kept on disk; ``infer --training-data``.

The tiny network (tests/owl_factory) has random weights with the box head's last layer at zero,
so every predicted box is a cell of the 8x8 patch grid, centred at ((j + 1) / 8, (i + 1) / 8) of the
padded square (OWLv2's box bias): a 160x120 frame has 20-pixel cells centred on multiples of 20.
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
pytest.importorskip("torch")

from edge_agent.models.foundation.owlv2_steps import (
    ImageEmbedding,
    owl_input,
    query_embeddings,
    reference_box,
    score_frame,
)
from tests.owl_factory import tiny_owlv2, write_hub_snapshot

VERSION = "owlv2-base-patch16-ensemble"
ROOT = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "edge_agent.agent.cli", "infer", "--model", f"owlv2/{VERSION}")


def noise_frame(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)


# -- pure rules ----------------------------------------------------------------------------------


def test_input_keeps_the_aspect_and_pads_with_grey() -> None:
    frame = np.zeros((50, 100, 3), np.uint8)
    frame[:] = (0, 0, 255)  # red in BGR
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.5, 0.2)
    pixels = owl_input(frame, (128, 128), mean, std)
    assert pixels.shape == (3, 128, 128)
    # ratio min(128/50, 128/100) = 1.28: the picture is 128x64, rows 64.. are the 0.5 padding
    np.testing.assert_allclose(pixels[:, 10, 10], [(1 - 0.5) / 0.25, (0 - 0.4) / 0.5, (0 - 0.3) / 0.2], atol=1e-6)
    np.testing.assert_allclose(pixels[:, 100, 10], [(0.5 - 0.5) / 0.25, (0.5 - 0.4) / 0.5, (0.5 - 0.3) / 0.2])


def _embedding() -> ImageEmbedding:
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1], [0.52, 0.5, 0.2, 0.2]])
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    return ImageEmbedding(boxes, embeddings, np.array([0.9, 0.8, 0.7]), (200, 100))


def test_reference_boxes_take_the_best_overlapping_boxs_embedding() -> None:
    image = _embedding()
    assert reference_box({"x": 100, "y": 100, "w": 40, "h": 40}, (200, 100)).tolist() == [0.5, 0.5, 0.2, 0.2]
    references = np.array([[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.05, 0.05], [0.1, 0.12, 0.1, 0.1]])
    found = query_embeddings(image, references, 0.3)
    assert found[0].tolist() == [1.0, 0.0]  # IoU 1 with box 0 (box 2 overlaps it by 0.82)
    assert found[1] is None  # overlaps nothing
    assert found[2].tolist() == [0.0, 1.0]  # IoU 0.67 with box 1


def test_scores_negatives_and_class_ids() -> None:
    image = _embedding()
    classes = {
        "dog": {"positive": np.array([[0.0, 1.0]]), "negative": None},
        "cat": {"positive": np.array([[1.0, 0.0]])},
    }
    boxes, scores, class_ids, names = score_frame(image, classes, 0.7, 0.3)
    assert names == ("cat", "dog")  # ids are the sorted names' indices
    # cat: box 0 (1+1)/2 = 1.0, box 2 (0.6+1)/2 = 0.8 (suppressed by box 0, IoU 0.82); dog: box 1 1.0, box 2 0.9
    assert sorted(zip(class_ids.tolist(), np.round(scores, 4).tolist(), strict=True)) == [(0, 1.0), (1, 1.0)]
    # dog's box 2 (0.9) is suppressed by cat's box 0 in the final class-agnostic NMS
    row = boxes[class_ids.tolist().index(0)]
    np.testing.assert_allclose(row, [80.0, 80.0, 120.0, 120.0])  # x max(W, H) = 200, back to xyxy

    # a negative example takes a box away: positives b0 0.8, b1 0.9, b2 1.0; negatives b1 1.0, b2 0.9
    # (b0 0.5 is under 0.7). NMS: +b2 kept, -b1 kept, +b1 gone (under -b1), -b2 and +b0 gone (under
    # +b2); negatives dropped: b2 alone
    classes = {"cat": {"positive": np.array([[0.6, 0.8]]), "negative": np.array([[0.0, 1.0]])}}
    boxes, scores, class_ids, _ = score_frame(image, classes, 0.7, 0.3)
    assert np.round(scores, 4).tolist() == [1.0] and boxes[0].tolist() == pytest.approx([84.0, 80.0, 124.0, 120.0])


# -- the model -------------------------------------------------------------------------------------


@pytest.fixture
def owl_cache(model_env):
    write_hub_snapshot(model_env.cache_dir / "hf_home" / "hub", VERSION, tiny_owlv2())
    model_env.set(OFFLINE_MODE="true", CORE_MODEL_OWLV2_ENABLED="true")
    return model_env


def _training_file(directory: Path, frame: np.ndarray) -> Path:
    cv2.imwrite(str(directory / "reference.png"), frame)
    data = [
        {
            "image": "reference.png",
            "boxes": [
                {"x": 40, "y": 40, "w": 20, "h": 20, "cls": "tag"},  # exactly the cell centred at (40, 40)
                {"x": 100, "y": 80, "w": 20, "h": 20, "cls": "badge"},
                {"x": 155, "y": 5, "w": 4, "h": 4, "cls": "speck"},  # overlaps no cell by > 0.3: unused
            ],
        }
    ]
    path = directory / "training.json"
    path.write_text(json.dumps(data))
    return path


def test_owlv2_is_off_by_default(model_env) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError

    with pytest.raises(ModelDisabledError, match="CORE_MODEL_OWLV2_ENABLED"):
        get_model(f"owlv2/{VERSION}")


def test_example_boxes_find_their_objects(owl_cache, tmp_path) -> None:
    from edge_agent.models import get_model

    frame = noise_frame()
    training = _training_file(tmp_path, frame)
    model = get_model(f"owlv2/{VERSION}")
    (response,) = model.infer([frame], training_data=str(training))
    rows = sorted(response.model_dump()["predictions"], key=lambda r: r["class"])
    assert [r["class"] for r in rows] == ["badge", "tag"] and [r["class_id"] for r in rows] == [0, 1]
    assert (rows[1]["x"], rows[1]["y"], rows[1]["width"], rows[1]["height"]) == pytest.approx(
        (40, 40, 20, 20), abs=0.05
    )  # the box bias is clipped by 1e-4
    assert (rows[0]["x"], rows[0]["y"]) == pytest.approx((100, 80), abs=0.05)
    assert all(r["confidence"] > 0.99 for r in rows)  # Roboflow's default threshold
    assert model.embeddings_computed == 1  # the reference is the frame: embedded once
    # the reference's embedding is on disk: a fresh model (a restart) does not embed it again
    cached = list((owl_cache.cache_dir / "owlv2-embeddings" / VERSION).glob("*.npz"))
    assert len(cached) == 1
    from edge_agent.models.common.settings import get_model_settings
    from edge_agent.models.foundation.owlv2 import load_owlv2

    fresh = load_owlv2(f"owlv2/{VERSION}", VERSION, get_model_settings())
    data = json.loads(training.read_text().replace("reference.png", str(tmp_path / "reference.png")))
    queries = fresh.class_queries(data, 0.3)
    assert sorted(queries) == ["badge", "tag"] and fresh.embeddings_computed == 0
    # another frame: nothing of the examples in it at 0.99
    (other,) = fresh.infer([noise_frame(9)], training_data=str(training))
    assert other.model_dump()["predictions"] == [] and fresh.embeddings_computed == 1


def test_bare_id_and_missing_training_data(owl_cache) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import InvalidInputError

    owl_cache.set(OWLV2_VERSION_ID=VERSION)
    model = get_model("owlv2")
    assert model.model_id == f"owlv2/{VERSION}"
    with pytest.raises(InvalidInputError, match="training_data"):
        model.predict([noise_frame()])


def test_infer_cli_training_data(owl_cache, tmp_path) -> None:
    frame = noise_frame()
    training = _training_file(tmp_path, frame)
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame)
    run = subprocess.run(
        [*CLI, str(image), "--training-data", str(training), "--confidence", "0.995"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p["class"] for p in json.loads(run.stdout)["predictions"]) == ["badge", "tag"]


def test_roboflow_instant_model_from_its_weights_pt(owl_cache, tmp_path) -> None:
    """A serialized OWLv2 (model type owlv2-finetuned) finds its stored classes without training
    data, from a local directory and from the model cache, offline."""
    import torch

    from edge_agent.models import get_model
    from tests.owl_factory import instant_weights

    frame = noise_frame()
    training = _training_file(tmp_path, frame)
    base = get_model(f"owlv2/{VERSION}")
    classes = base.class_queries(
        json.loads(training.read_text().replace("reference.png", str(tmp_path / "reference.png"))), 0.3
    )
    reference = {"abc123": tuple(torch.zeros(2, 2) for _ in range(5))}
    for directory in (tmp_path / "instant", owl_cache.cache_dir / "shapes-instant" / "3"):
        directory.mkdir(parents=True)
        instant_weights(directory / "weights.pt", VERSION, classes, reference)
        (directory / "model_type.json").write_text(
            json.dumps({"project_task_type": "object-detection", "model_type": "owlv2-finetuned"})
        )
    for model_id in (str(tmp_path / "instant"), "shapes-instant/3"):
        model = get_model(model_id)
        assert model.model_type == "owlv2-finetuned"
        (response,) = model.infer([frame])
        rows = sorted(response.model_dump()["predictions"], key=lambda r: r["class"])
        assert [(r["class"], r["class_id"]) for r in rows] == [("badge", 0), ("tag", 1)]
        assert (rows[1]["x"], rows[1]["y"]) == pytest.approx((40, 40), abs=0.05)


def test_instant_without_weights_is_a_clear_error(owl_cache, tmp_path) -> None:
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelNotCachedError

    directory = owl_cache.cache_dir / "shapes-instant" / "4"
    directory.mkdir(parents=True)
    (directory / "model_type.json").write_text(
        json.dumps({"project_task_type": "object-detection", "model_type": "owlv2-finetuned"})
    )
    with pytest.raises(ModelNotCachedError, match="Roboflow Instant"):
        get_model("shapes-instant/4")
