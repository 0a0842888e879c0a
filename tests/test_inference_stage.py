"""The inference stage with a real ONNX-free model stand-in: batching, fairness, thresholds.

The model here is a small deterministic object with the model interface (pure logic under test:
how the stage batches and routes); the real models and streams are exercised end to end elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_agent.models.maths.predictions import Detections
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.inference import InferenceStage, StreamBinding, round_robin_start
from edge_agent.pipelines.results import InferenceResult
from edge_agent.pipelines.slot import LatestFrameSlot


class CountingModel:
    """Returns one prediction per image whose confidence is the image's first pixel / 255."""

    model_id = "count/1"
    max_batch_size = 4

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def predict(self, images, confidence=None, **_):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(images))
        time.sleep(self.delay_s)
        return [
            Detections(
                boxes=np.array([[0.0, 0.0, 2.0, 2.0]]),
                confidences=np.array([float(img[0, 0, 0]) / 255.0], np.float32),
                class_ids=np.array([0]),
                class_names=("a",),
                image_size=(img.shape[1], img.shape[0]),
            )
            for img in images
        ]


def frame(stream: str, i: int, value: int) -> Frame:
    img = np.full((4, 6, 3), value, dtype=np.uint8)
    now = time.monotonic()
    return Frame(stream=stream, frame_id=i, capture_time=time.time(), pts=None, image=img, monotonic=now)


def test_filter_confidence_keeps_at_or_above() -> None:
    det = Detections(
        boxes=np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 3.0, 3.0]]),
        confidences=np.array([0.3, 0.5], np.float32),
        class_ids=np.array([0, 1]),
        class_names=("a", "b"),
        image_size=(4, 4),
        track_ids=np.array([7, 8]),
    )
    kept = det.filter_confidence(0.5)
    assert kept.class_ids.tolist() == [1] and kept.track_ids.tolist() == [8]
    assert kept.boxes.tolist() == [[1.0, 1.0, 3.0, 3.0]]
    assert det.filter_confidence(0.1) is det


def test_batches_across_streams_off_loop_with_per_stream_thresholds() -> None:
    async def scenario() -> tuple[list[InferenceResult], CountingModel]:
        loop = asyncio.get_running_loop()
        model = CountingModel()
        results: list[InferenceResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer") as executor:
            stage = InferenceStage(
                model, model_id="count/1", executor=executor, on_result=results.append, default_confidence=0.4
            )
            slots = {}
            for name, conf in (("a", None), ("b", 0.9), ("c", None)):
                slots[name] = LatestFrameSlot(loop)
                stage.attach(StreamBinding(name=name, slot=slots[name], confidence=conf))
            slots["a"].put(frame("a", 0, 200))
            slots["b"].put(frame("b", 0, 200))  # 0.78 < 0.9: filtered for b only
            slots["c"].put(frame("c", 0, 128))
            task = asyncio.create_task(stage.run())
            for _ in range(200):
                if len(results) == 3:
                    break
                await asyncio.sleep(0.01)
            stage.stop()
            await asyncio.wait_for(task, 5)
        return results, model

    results, model = asyncio.run(scenario())
    assert model.batches == [3]
    assert all(name.startswith("infer") for name in model.threads)
    by_stream = {r.frame.stream: r for r in results}
    assert len(by_stream["a"].prediction) == 1
    assert len(by_stream["b"].prediction) == 0
    assert len(by_stream["c"].prediction) == 1  # 0.50 >= default 0.4
    assert all(r.batch_size == 3 and r.frame_age_ms >= 0 for r in results)


def test_more_ready_streams_than_batch_rotate_fairly() -> None:
    async def scenario() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        model = CountingModel(delay_s=0.005)
        counts: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=1) as executor:
            stage = InferenceStage(
                model,
                model_id="count/1",
                executor=executor,
                on_result=lambda r: counts.__setitem__(r.frame.stream, counts.get(r.frame.stream, 0) + 1),
                default_confidence=0.0,
                max_batch_size=8,
            )
            assert stage.max_batch_size == 4  # the model's own limit wins
            slots = [LatestFrameSlot(loop) for _ in range(6)]
            for i, slot in enumerate(slots):
                stage.attach(StreamBinding(name=f"s{i}", slot=slot))
            task = asyncio.create_task(stage.run())
            for n in range(60):  # every stream always has a fresh frame ready
                for i, slot in enumerate(slots):
                    slot.put(frame(f"s{i}", n, 10))
                await asyncio.sleep(0.01)
            stage.stop()
            await asyncio.wait_for(task, 5)
        return counts

    counts = asyncio.run(scenario())
    assert len(counts) == 6
    assert min(counts.values()) >= 0.7 * max(counts.values()), counts


def test_freshness_delay_waits_only_when_every_ready_frame_is_stale() -> None:
    from edge_agent.pipelines.inference import FRESHNESS_SLACK_S, freshness_delay

    t = 1 / 30
    assert freshness_delay([]) == 0.0
    assert freshness_delay([(0.010, t)]) == 0.0  # fresh enough: take it now
    assert abs(freshness_delay([(0.025, t)]) - (t - 0.025 + FRESHNESS_SLACK_S)) < 1e-9
    assert freshness_delay([(0.025, t), (0.030, t)]) == 0.0  # several streams ready: no idle model
    assert freshness_delay([(0.025, None)]) == 0.0  # rate unknown or not live
    assert freshness_delay([(0.4, 0.5)]) == 0.0  # slow streams are never waited for


class OverlapModel:
    """Sleeps per image as its first pixel says (value / 1000 s), raises on value 113, and records
    how many calls overlapped and in which order they finished."""

    model_id = "overlap/1"
    max_batch_size = 1

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self.active = 0
        self.most_active = 0
        self.started: list[int] = []
        self.finished: list[int] = []

    def predict(self, images, confidence=None, **_):
        value = int(images[0][0, 0, 0])
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.started.append(value)
        try:
            time.sleep(value / 1000)
            if value == 113:
                raise RuntimeError("bad batch")
            return CountingModel().predict(images)
        finally:
            with self._lock:
                self.active -= 1
                self.finished.append(value)


def _run_overlap(concurrency: int, values: list[int]) -> tuple[list[InferenceResult], list[str], OverlapModel]:
    """One stream; each frame is put once the model has started the previous one, so with room
    for two batches the second starts while the first still runs."""

    async def scenario() -> tuple[list[InferenceResult], list[str], OverlapModel]:
        loop = asyncio.get_running_loop()
        model = OverlapModel(concurrency)
        results: list[InferenceResult] = []
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="infer") as executor:
            stage = InferenceStage(
                model,
                model_id=model.model_id,
                executor=executor,
                on_result=results.append,
                on_error=errors.append,
                default_confidence=0.0,
            )
            assert stage.concurrency == concurrency  # taken from the model
            slot = LatestFrameSlot(loop)
            stage.attach(StreamBinding(name="a", slot=slot, live=False))
            task = asyncio.create_task(stage.run())
            for i, value in enumerate(values):
                slot.put(frame("a", i, value))
                for _ in range(500):
                    if len(model.started) > i:
                        break
                    await asyncio.sleep(0.002)
            for _ in range(500):
                if len(results) + len(errors) == len(values):
                    break
                await asyncio.sleep(0.01)
            stage.stop()
            await asyncio.wait_for(task, 5)
        return results, errors, model

    return asyncio.run(scenario())


def test_two_batches_in_flight_overlap_and_land_in_launch_order() -> None:
    results, errors, model = _run_overlap(2, [250, 20])
    assert model.most_active == 2, "the second batch did not start while the first ran"
    assert model.finished == [20, 250]  # the later batch finished first...
    assert [r.frame.frame_id for r in results] == [0, 1]  # ...and still came out second
    assert errors == []


def test_one_batch_in_flight_never_overlaps() -> None:
    results, _, model = _run_overlap(1, [120, 20, 20])
    assert model.most_active == 1
    assert model.finished == [120, 20, 20]
    # The stream put a new frame while the first ran: latest-frame-wins may drop one of them.
    ids = [r.frame.frame_id for r in results]
    assert ids == sorted(ids) and ids[0] == 0


def test_a_failed_batch_in_flight_does_not_lose_the_other() -> None:
    results, errors, model = _run_overlap(2, [113, 200])
    assert model.most_active == 2
    assert errors == ["a"]
    assert [r.frame.frame_id for r in results] == [1]


def test_round_robin_start_resumes_after_the_last_stream_served() -> None:
    names = ["a", "b", "c", "d"]
    assert round_robin_start(names, None, 0) == 0
    assert round_robin_start(names, None, 5) == 1  # nobody served yet: by rotation
    assert round_robin_start(names, "b", 0) == 2
    assert round_robin_start(names, "d", 0) == 0  # wraps around
    assert round_robin_start(names, "gone", 2) == 2  # the last one served was detached
    assert round_robin_start([], "a", 3) == 0


def test_64_ready_streams_are_served_in_a_circle_and_none_starves() -> None:
    """64 streams ready at once, a batch of 8: every stream once per 8 batches, in order; and a
    stream that refills its slot at once (a fast camera) gets no more turns than the others."""

    async def scenario() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        batches: list[list[str]] = []
        slots = [LatestFrameSlot(loop) for _ in range(64)]
        n = 0

        def fill(which: range | list[int]) -> None:
            nonlocal n
            n += 1
            for i in which:
                if not slots[i].has_frame:
                    slots[i].put(frame(f"s{i:02d}", n, i))  # the pixels say which stream

        class Cameras(CountingModel):
            """While a batch runs (before the stage picks the next one): s05 has a new frame
            every time, the others once per full circle of 8 batches."""

            def predict(self, images, confidence=None, **kw):
                batches.append([f"s{int(img[0, 0, 0]):02d}" for img in images])
                fill([5])
                if len(batches) % 8 == 0:
                    fill(range(64))
                return super().predict(images, confidence, **kw)

        model = Cameras()
        model.max_batch_size = 8
        with ThreadPoolExecutor(max_workers=1) as executor:
            stage = InferenceStage(
                model,
                model_id="count/1",
                executor=executor,
                on_result=lambda r: None,
                default_confidence=0.0,
                max_batch_size=8,
                concurrency=1,
            )
            for i, slot in enumerate(slots):
                stage.attach(StreamBinding(name=f"s{i:02d}", slot=slot))
            fill(range(64))
            task = asyncio.create_task(stage.run())
            await wait_for_batches(lambda: len(batches) >= 24, 10)
            stage.stop()
            await asyncio.wait_for(task, 5)
        return batches[:24]

    batches = asyncio.run(scenario())
    served = [name for batch in batches for name in batch]
    counts = {name: served.count(name) for name in set(served)}
    # 24 batches of 8 = 192 turns = 3 full circles of 64: each stream exactly 3 times
    assert all(len(b) == 8 for b in batches), batches
    assert len(counts) == 64 and set(counts.values()) == {3}, counts
    # and the first circle in stream order: batch k holds streams 8k .. 8k+7
    assert [sorted(b) for b in batches[:8]] == [[f"s{i:02d}" for i in range(8 * k, 8 * k + 8)] for k in range(8)]


async def wait_for_batches(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the stage did not run the batches in time"
        await asyncio.sleep(0.005)
