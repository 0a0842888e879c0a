"""A second model on a first model's detections: the pure parts (crop windows, mapping a crop's
prediction back to frame pixels, class selection, the response rows) against hand-computed values,
and the second stage's scheduling (never stalls the first model, latest wins per stream, frame
order kept, MODE=every loses nothing, a failing second model still publishes the detections).

The models here are small deterministic stand-ins with the model interface (what is under test is
how boxes are handed over and results routed); real models run on real streams in
tests/test_e2e_second_model.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from edge_agent.models.maths.predictions import (
    ClassificationPrediction,
    Detections,
    InstanceSegmentation,
    KeypointDetections,
    TextDetections,
)
from edge_agent.models.tasks.on_detections import boxes_as, crop_window, run_on_detections, selected, shift_prediction
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.results import InferenceResult
from edge_agent.pipelines.second_stage import ResultDispatch, SecondBinding, SecondStage


def _detections(boxes: list[list[float]], classes: list[int], names=("car", "plate"), size=(100, 80)) -> Detections:
    return Detections(
        boxes=np.array(boxes, np.float64),
        confidences=np.linspace(0.9, 0.5, len(boxes)).astype(np.float32),
        class_ids=np.array(classes, np.int64),
        class_names=names,
        image_size=size,
    )


# -- pure parts ---------------------------------------------------------------------------------


def test_crop_window_takes_every_touched_pixel_and_clips_to_the_frame() -> None:
    assert crop_window([10.2, 5.7, 20.1, 9.0], (100, 80)) == (10, 5, 21, 9)
    assert crop_window([10.2, 5.7, 20.1, 9.0], (100, 80), padding=3) == (7, 2, 24, 12)
    assert crop_window([-5, -5, 4.5, 3], (100, 80), padding=1) == (0, 0, 6, 4)
    assert crop_window([95, 70, 130, 90], (100, 80)) == (95, 70, 100, 80)
    assert crop_window([100, 10, 120, 20], (100, 80)) is None  # wholly outside
    assert crop_window([10, 10, 10, 20], (100, 80)) is None  # no width


def test_shift_moves_boxes_polygons_and_keypoints_into_frame_pixels() -> None:
    crop = KeypointDetections(
        boxes=np.array([[1.0, 2.0, 5.0, 6.0]]),
        confidences=np.array([0.8], np.float32),
        class_ids=np.array([0]),
        class_names=("p",),
        image_size=(10, 10),
        keypoints=np.array([[[3.0, 4.0, 0.9]]]),
        polygons=(np.array([[1.0, 2.0], [5.0, 6.0]]),),
    )
    moved = shift_prediction(crop, 30, 40, (640, 480))
    assert moved.boxes.tolist() == [[31.0, 42.0, 35.0, 46.0]]
    assert moved.keypoints.tolist() == [[[33.0, 44.0, 0.9]]]  # confidence untouched
    assert moved.polygons[0].tolist() == [[31.0, 42.0], [35.0, 46.0]]
    assert moved.image_size == (640, 480) and isinstance(moved, KeypointDetections)
    assert crop.boxes.tolist() == [[1.0, 2.0, 5.0, 6.0]] and crop.keypoints[0, 0, 0] == 3.0  # not mutated

    text = TextDetections(
        boxes=np.array([[0.0, 0.0, 4.0, 2.0]]),
        confidences=np.array([0.9], np.float32),
        texts=("AB",),
        text_confidences=np.array([0.8], np.float32),
        line_ids=np.array([0]),
        image_size=(4, 2),
        polygons=np.array([[[0, 0], [4, 0], [4, 2], [0, 2]]], np.float32),
    )
    moved_text = shift_prediction(text, 7, 9, (50, 50))
    assert moved_text.boxes.tolist() == [[7.0, 9.0, 11.0, 11.0]]
    assert moved_text.polygons[0].tolist() == [[7, 9], [11, 9], [11, 11], [7, 11]]

    classes = ClassificationPrediction(np.array([0.2, 0.8], np.float32), ("a", "b"), (4, 4))
    assert shift_prediction(classes, 5, 5, (50, 50)) is classes  # nothing to move


def test_shift_turns_crop_masks_into_frame_polygons() -> None:
    mask = np.zeros((1, 6, 8), bool)
    mask[0, 1:4, 2:6] = True  # pixels x 2..5, y 1..3 of the crop
    seg = InstanceSegmentation(
        boxes=np.array([[2.0, 1.0, 6.0, 4.0]]),
        confidences=np.array([0.7], np.float32),
        class_ids=np.array([0]),
        class_names=("m",),
        image_size=(8, 6),
        masks=mask,
    )
    moved = shift_prediction(seg, 100, 50, (640, 480))
    assert moved.masks is None and moved.polygons is not None
    points = moved.polygons[0]
    assert points[:, 0].min() >= 102 and points[:, 0].max() <= 106  # x 2..5 (+1 at the far edge) + 100
    assert points[:, 1].min() >= 51 and points[:, 1].max() <= 54
    rows = moved.to_response()["predictions"]
    assert rows[0]["x"] == 104.0 and rows[0]["y"] == 52.5


def test_selected_by_class_name() -> None:
    dets = _detections([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], [0, 1, 5])
    assert selected(dets, ()).tolist() == [True, True, True]
    assert selected(dets, ("plate",)).tolist() == [False, True, False]
    assert selected(dets, ("5", "car")).tolist() == [True, False, True]  # an unnamed id by its number


class CropRecorder:
    """Records the crops it gets; answers each with a class 'wide'/'tall' by the crop's shape."""

    model_id = "rec/1"
    max_batch_size = 8

    def __init__(self) -> None:
        self.calls: list[list[np.ndarray]] = []
        self.options: list[Any] = []

    def predict(self, images, image_options=None, **_):
        self.calls.append([i.copy() for i in images])
        self.options.append(image_options)
        out = []
        for img in images:
            wide = img.shape[1] >= img.shape[0]
            out.append(
                ClassificationPrediction(
                    np.array([0.9, 0.1] if wide else [0.1, 0.9], np.float32), ("wide", "tall"), img.shape[1::-1]
                )
            )
        return out


def test_crops_are_the_frame_pixels_of_each_selected_box_and_ride_with_their_detection() -> None:
    image = np.arange(80 * 100 * 3, dtype=np.uint32).reshape(80, 100, 3).astype(np.uint8)
    dets = _detections([[10, 20, 30, 25], [50.5, 5, 55, 40], [0, 0, 5, 5]], [0, 1, 0])
    model = CropRecorder()
    assert boxes_as(model) == "crops"
    out = run_on_detections(
        model, image, dets, model_id="rec/1", classes=("car",), padding=1, options={"prompts": ["x"]}
    )
    (crops,) = model.calls
    assert len(crops) == 2  # the plate is not selected
    np.testing.assert_array_equal(crops[0], image[19:26, 9:31])
    np.testing.assert_array_equal(crops[1], image[0:6, 0:6])
    assert model.options == [[{"prompts": ["x"]}, {"prompts": ["x"]}]]
    assert isinstance(out, Detections) and out.details_model == "rec/1"
    rows = out.to_response()["predictions"]
    assert rows[0]["second_model"]["top"] == "wide" and rows[0]["second_model"]["model_id"] == "rec/1"
    assert "image" not in rows[0]["second_model"]
    assert "second_model" not in rows[1]
    assert rows[2]["second_model"]["top"] == "wide"
    # the details follow their detections through a per-stream threshold
    kept = out.filter_confidence(0.6)
    assert len(kept) == 2 and kept.details[1] is None


class BoxEcho:
    """A 'prompts' model: a mask per selected box filling the box (stands in for SAM)."""

    boxes_as = "prompts"

    def predict_on_boxes(self, image, detections, which, options=None):
        h, w = image.shape[:2]
        masks = np.zeros((len(detections), h, w), bool)
        for k in np.flatnonzero(which):
            x0, y0, x1, y1 = detections.boxes[k].astype(int)
            masks[k, y0:y1, x0:x1] = True
        return InstanceSegmentation(
            boxes=detections.boxes,
            confidences=detections.confidences,
            class_ids=detections.class_ids,
            class_names=detections.class_names,
            image_size=detections.image_size,
            masks=masks,
        )


def test_prompt_models_get_the_whole_frame_and_which_boxes() -> None:
    dets = _detections([[10, 20, 30, 25], [50, 5, 55, 40]], [0, 1])
    out = run_on_detections(BoxEcho(), np.zeros((80, 100, 3), np.uint8), dets, model_id="s", classes=("plate",))
    assert isinstance(out, InstanceSegmentation)
    assert out.masks[0].sum() == 0 and out.masks[1].sum() == 5 * 35


# -- the stage ------------------------------------------------------------------------------------


def _frame(stream: str, i: int) -> Frame:
    img = np.full((80, 100, 3), i, dtype=np.uint8)
    return Frame(stream=stream, frame_id=i, capture_time=time.time(), pts=None, image=img, monotonic=time.monotonic())


def _result(stream: str, i: int, prediction: Any = None) -> InferenceResult:
    return InferenceResult(
        frame=_frame(stream, i),
        prediction=prediction if prediction is not None else _detections([[10, 20, 30, 25]], [0]),
        model_id="det/1",
        inference_ms=1.0,
        frame_age_ms=0.0,
        batch_size=1,
    )


class Gated(CropRecorder):
    """Blocks in predict until released, so the test controls when the second model finishes."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.release = threading.Semaphore(0)
        self.started = threading.Event()
        self.fail_on = fail_on
        self.seen: list[int] = []

    def predict(self, images, image_options=None, **_):
        self.seen.append(int(images[0][0, 0, 0]))
        self.started.set()
        assert self.release.acquire(timeout=10)
        if self.fail_on is not None and self.seen[-1] == self.fail_on:
            raise RuntimeError("boom")
        return super().predict(images, image_options)


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _scenario(model: Gated, keep_all: bool, steps) -> tuple[list[InferenceResult], SecondStage]:
    published: list[InferenceResult] = []

    async def main() -> SecondStage:
        with ThreadPoolExecutor(1) as pool:
            stage = SecondStage(model, model_id="rec/1", executor=pool, publish=published.append)
            stage.attach(SecondBinding("cam", keep_all=keep_all))
            task = asyncio.create_task(stage.run())
            await steps(stage, published)
            stage.stop()
            while True:  # release whatever is still to run, then the stage finishes
                model.release.release()
                done, _ = await asyncio.wait([task], timeout=0.05)
                if done:
                    break
            task.result()
            return stage

    return published, asyncio.run(main())


def test_submit_never_blocks_and_the_newest_waiting_result_wins() -> None:
    model = Gated()

    async def steps(stage: SecondStage, published: list[InferenceResult]) -> None:
        stage.submit(_result("cam", 1))
        await _until(model.started.is_set)
        started = time.perf_counter()
        for i in (2, 3, 4):  # the model is busy with frame 1: each replaces the waiting one
            stage.submit(_result("cam", i))
        assert time.perf_counter() - started < 0.05  # the first stage is never held up
        assert stage.binding("cam").dropped == 2
        model.release.release()
        await _until(lambda: len(published) == 1)
        model.release.release()
        await _until(lambda: len(published) == 2)

    published, stage = _scenario(model, False, steps)
    assert [r.frame.frame_id for r in published] == [1, 4]  # in frame order, 2 and 3 dropped
    assert model.seen == [1, 4]
    assert all(r.second_model_id == "rec/1" and r.second_ms is not None for r in published)
    assert published[0].prediction.details[0].to_response()["top"] == "wide"
    assert stage.binding("cam").runs == 2


def test_keep_all_queues_every_result_and_gates_the_first_stage() -> None:
    model = Gated()

    async def steps(stage: SecondStage, published: list[InferenceResult]) -> None:
        stage.submit(_result("cam", 1))
        await _until(model.started.is_set)
        assert stage.has_room("cam")  # nothing waiting: the first stage may take a frame
        stage.submit(_result("cam", 2))
        assert not stage.has_room("cam")  # one waiting: the stream's next frame waits in its slot
        stage.submit(_result("cam", 3))  # (a batch already in flight at the first stage lands anyway)
        for n in (1, 2, 3):
            model.release.release()
            await _until(lambda n=n: len(published) == n)

    published, stage = _scenario(model, True, steps)
    assert [r.frame.frame_id for r in published] == [1, 2, 3] and stage.binding("cam").dropped == 0


def test_a_failing_second_model_still_publishes_the_detections() -> None:
    model = Gated(fail_on=1)

    async def steps(stage: SecondStage, published: list[InferenceResult]) -> None:
        stage.submit(_result("cam", 1))
        model.release.release()
        await _until(lambda: len(published) == 1)
        stage.submit(_result("cam", 2))
        model.release.release()
        await _until(lambda: len(published) == 2)

    published, stage = _scenario(model, False, steps)
    assert published[0].second_model_id is None and published[0].prediction.details is None
    assert published[1].second_model_id == "rec/1"
    assert stage.binding("cam").errors == 1


def test_results_without_boxes_pass_through_and_unbound_streams_go_straight_on() -> None:
    model = Gated()
    plain = ClassificationPrediction(np.array([1.0], np.float32), ("a",), (4, 4))

    async def steps(stage: SecondStage, published: list[InferenceResult]) -> None:
        stage.submit(_result("cam", 1, plain))
        stage.submit(_result("other", 2))
        await _until(lambda: len(published) == 2)

    published, _ = _scenario(model, False, steps)
    by_stream = {r.frame.stream: r for r in published}
    assert by_stream["cam"].prediction is plain and by_stream["other"].second_model_id is None
    assert model.seen == []


def test_dispatch_routes_by_stream() -> None:
    straight: list[InferenceResult] = []
    dispatch = ResultDispatch(straight.append)

    class Stage:
        def __init__(self) -> None:
            self.got: list[InferenceResult] = []

        def submit(self, result: InferenceResult) -> None:
            self.got.append(result)

    stage = Stage()
    dispatch.bind("cam", stage)  # type: ignore[arg-type]
    dispatch(_result("cam", 1))
    dispatch(_result("yard", 2))
    dispatch.unbind("cam")
    dispatch(_result("cam", 3))
    assert [r.frame.frame_id for r in stage.got] == [1] and [r.frame.frame_id for r in straight] == [2, 3]


@pytest.mark.parametrize("value", ["plate|car", '["plate", "car"]', ["plate", "car", "plate"]])
def test_stream_config_second_model_fields(value: Any) -> None:
    from edge_agent.pipelines.stream_config import StreamConfig

    stream = StreamConfig(name="gate", url="rtsp://x/y", second_model_id="sam2/hiera_tiny", second_classes=value)
    assert stream.second_classes == ("plate", "car")
    with pytest.raises(ValueError, match="second_padding"):
        StreamConfig(name="gate", url="rtsp://x/y", second_padding=-1)
