"""The model core's pure parts: the artifacts loader, normalisation and channel order, point mapping,
typed predictions and the processing chain."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.artifacts.artifact_loader import load_artifacts
from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.maths.coordinates import boxes_to_source, points_to_source
from edge_agent.models.maths.predictions import Detections
from edge_agent.models.maths.preprocessing import HALF, InputNormalization, place_into, preprocess_batch
from edge_agent.models.maths.preprocessing import Preprocessing as Pre
from edge_agent.pipelines.processing import ProcessingChain

# --- artifacts loader ------------------------------------------------------------------------------


def _dir(tmp_path: Path, environment: object, classes: str | None = "a\nb\n", **files: object) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "environment.json").write_text(environment if isinstance(environment, str) else json.dumps(environment))
    if classes is not None:
        (tmp_path / "class_names.txt").write_text(classes)
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    return tmp_path


def test_environment_values_given_as_json_strings_are_read(tmp_path):
    env = {
        "PREPROCESSING": json.dumps({"resize": {"format": "Fit (grey edges) in", "width": 320, "height": 256}}),
        "COLORS": json.dumps({"a": "#FF0000", "b": "not a colour"}),
        "MULTICLASS": "true",
        "RESOLUTION": "320",
    }
    art = load_artifacts(_dir(tmp_path, env), "m/1")
    assert art.preprocessing.letterbox and art.preprocessing.pad_value == 114
    assert art.preprocessing.resize_size == (320, 256)
    assert art.colors == {"a": "#ff0000"} and art.color_of("b") is None
    assert art.multiclass is True and art.resolution == 320
    assert art.class_names == ("a", "b")


def test_class_map_is_the_fallback_for_class_names(tmp_path):
    env = {"CLASS_MAP": {"1": "dog", "0": "cat", "10": "eel", "2": "cow"}}
    art = load_artifacts(_dir(tmp_path, env, classes=None), "m/1")
    assert art.class_names == ("cat", "dog", "cow", "eel")  # numeric order, not text order


def test_no_class_names_is_a_clear_error(tmp_path):
    with pytest.raises(ModelArtifactsError, match=r"no class names: add class_names\.txt"):
        load_artifacts(_dir(tmp_path, {}, classes=None), "m/1")


def test_keypoints_metadata_per_class(tmp_path):
    meta = [
        {"object_class_id": 1, "keypoints": {"1": "tail", "0": "nose"}},
        {"object_class_id": 0, "keypoints": {"0": "top"}},
    ]
    art = load_artifacts(_dir(tmp_path, {}, keypoints_metadata=meta), "m/1")
    assert art.keypoints == {1: ("nose", "tail"), 0: ("top",)}


@pytest.mark.parametrize(
    ("environment", "files", "message"),
    [
        ("[1, 2]", {}, "environment.json: is not a JSON object"),
        ({"PREPROCESSING": "{not json"}, {}, "PREPROCESSING is a string but not JSON"),
        ({"RESOLUTION": "big"}, {}, "RESOLUTION must be a whole number"),
        ({}, {"keypoints_metadata": [{"keypoints": {"0": "a"}}]}, "entry 0 needs object_class_id"),
    ],
)
def test_bad_metadata_names_the_file_and_the_problem(tmp_path, environment, files, message):
    with pytest.raises(ModelArtifactsError, match=message):
        load_artifacts(_dir(tmp_path, environment, **files), "m/1")


def test_missing_environment_means_no_preprocessing(tmp_path, caplog):
    (tmp_path / "class_names.txt").write_text("a\n")
    with caplog.at_level(logging.WARNING):
        art = load_artifacts(tmp_path, "m/1")
    assert art.preprocessing == Pre() and "no environment.json" in caplog.text


# --- normalisation and channel order -------------------------------------------------------------


def test_half_normalisation_and_bgr_order():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 0, 51, 255  # B, G, R
    rgb, _ = preprocess_batch([image], Pre(), (2, 2), norm=HALF)
    np.testing.assert_allclose(rgb[0, :, 0, 0], [1.0, 51 / 127.5 - 1, -1.0], atol=1e-6)
    bgr, _ = preprocess_batch([image], Pre(), (2, 2), norm=InputNormalization(channels="bgr"))
    np.testing.assert_allclose(bgr[0, :, 0, 0], [0.0, 0.2, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="channels must be"):
        InputNormalization(channels="gbr")


def test_each_image_of_a_batch_lands_in_its_own_planes_with_its_own_pixels():
    first = np.zeros((3, 4, 3), np.uint8)
    first[..., 0], first[..., 1], first[..., 2] = 255, 0, 51  # B, G, R
    second = np.zeros((3, 4, 3), np.uint8)
    second[1, 2] = (0, 102, 255)
    tensor, _ = preprocess_batch([first, second], Pre(), (4, 3))
    assert tensor.shape == (2, 3, 3, 4) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[0, :, 2, 3], [0.2, 0.0, 1.0], atol=1e-7)  # R, G, B
    np.testing.assert_allclose(tensor[1, :, 1, 2], [1.0, 0.4, 0.0], atol=1e-7)
    assert np.count_nonzero(tensor[1]) == 2  # nothing of the first image leaked into the second
    imagenet, _ = preprocess_batch([first, second], Pre(), (4, 3), norm=InputNormalization(mean=(0.5, 0.5, 0.5)))
    np.testing.assert_allclose(imagenet[1, :, 0, 0], [-0.5, -0.5, -0.5], atol=1e-7)
    np.testing.assert_allclose(imagenet[0, :, 0, 0], [0.2 - 0.5, -0.5, 0.5], atol=1e-7)


# --- points and boxes back to source pixels --------------------------------------------------------


def test_points_follow_static_crop_and_letterbox_like_boxes():
    image = np.zeros((400, 1000, 3), np.uint8)
    pre = Pre(letterbox=True, static_crop=(10.0, 0.0, 90.0, 100.0))  # crop x 100..900: 800x400
    meta = place_into(image, pre, np.zeros((320, 320, 3), np.uint8))
    # 800x400 letterboxed into 320x320: scale 0.4, 320x160 placed at top = 80
    assert (meta.scale_x, meta.pad_x, meta.pad_y, meta.crop) == (0.4, 0, 80, (100, 0, 900, 400))
    points = np.array([[[0.0, 80.0], [160.0, 160.0], [320.0, 240.0]]])
    np.testing.assert_allclose(points_to_source(points, meta), [[[100, 0], [500, 200], [900, 400]]])
    np.testing.assert_allclose(boxes_to_source(np.array([[0.0, 80.0, 160.0, 160.0]]), meta), [[100, 0, 500, 200]])
    # Points in the padding are clipped to the region the model saw.
    np.testing.assert_allclose(points_to_source(np.array([[10.0, 0.0]]), meta), [[125, 0]])


# --- typed predictions and the processing chain ----------------------------------------------------


def _det() -> Detections:
    return Detections(
        boxes=np.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 4.0, 4.0]]),
        confidences=np.array([0.9, 0.2], np.float32),
        class_ids=np.array([1, 5]),
        class_names=("a", "b"),
        image_size=(64, 48),
    )


def test_response_is_roboflows_shape_and_unknown_ids_are_numbered():
    response = _det().to_response()
    assert response["image"] == {"width": 64, "height": 48}
    first, second = response["predictions"]
    assert list(first) == ["x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"]
    assert (first["x"], first["y"], first["width"], first["height"]) == (20.0, 40.0, 20.0, 40.0)
    assert first["class"] == "b" and second["class"] == "5"  # past the class list: its number
    assert first["detection_id"] != second["detection_id"]


class _Tracker:
    name = "tracker"

    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def __call__(self, stream: str, prediction: Detections, frame: object = None) -> Detections:
        from dataclasses import replace

        return replace(prediction, track_ids=np.arange(len(prediction)) + 100)

    def forget(self, stream: str) -> None:
        self.forgotten.append(stream)


class _Broken:
    name = "broken"

    def __call__(self, stream: str, prediction: Detections, frame: object = None) -> Detections:
        raise RuntimeError("boom")

    def forget(self, stream: str) -> None:
        pass


def test_processing_chain_runs_steps_in_order_and_survives_a_broken_one(caplog):
    tracker = _Tracker()
    chain = ProcessingChain([_Broken(), tracker])
    with caplog.at_level(logging.ERROR):
        out = chain("cam", _det())
        chain("cam", _det())
    assert out.track_ids.tolist() == [100, 101]
    assert [p["tracker_id"] for p in out.to_response()["predictions"]] == [100, 101]
    assert caplog.text.count("processing step broken failed") == 1  # logged once, not per frame
    chain.forget("cam")
    assert tracker.forgotten == ["cam"]
