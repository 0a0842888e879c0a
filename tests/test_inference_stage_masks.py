"""Per-stream mask output in the inference stage: polygons are made in the executor, per stream.

The model stand-in returns fixed masks (the stage's routing is what is under test; real models run
end to end in test_e2e_tasks.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edge_agent.models.maths.polygons import MaskOutput
from edge_agent.models.maths.predictions import InstanceSegmentation
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.inference import InferenceStage, StreamBinding
from edge_agent.pipelines.results import InferenceResult
from edge_agent.pipelines.slot import LatestFrameSlot

MADE_IN: list[str] = []


@dataclass(frozen=True)
class RecordingSegmentation(InstanceSegmentation):
    def with_mask_output(self, output: MaskOutput) -> InstanceSegmentation:
        MADE_IN.append(threading.current_thread().name)
        return super().with_mask_output(output)


class SegModel:
    model_id = "seg/1"
    max_batch_size = 4

    def predict(self, images, confidence=None, **_):  # type: ignore[no-untyped-def]
        masks = np.zeros((2, 40, 60), bool)
        masks[0, 5:15, 10:30] = True
        masks[1, 20:30, 40:50] = True
        return [
            RecordingSegmentation(
                boxes=np.array([[10.0, 5.0, 30.0, 15.0], [40.0, 20.0, 50.0, 30.0]]),
                confidences=np.array([0.9, 0.5], np.float32),
                class_ids=np.array([0, 0]),
                class_names=("a",),
                image_size=(60, 40),
                masks=masks,
            )
            for _ in images
        ]


def _frame(stream: str) -> Frame:
    img = np.zeros((40, 60, 3), np.uint8)
    return Frame(stream=stream, frame_id=0, capture_time=time.time(), pts=None, image=img, monotonic=time.monotonic())


def test_each_stream_gets_its_threshold_and_mask_output_made_in_the_executor() -> None:
    async def scenario() -> list[InferenceResult]:
        loop = asyncio.get_running_loop()
        results: list[InferenceResult] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer") as executor:
            stage = InferenceStage(
                SegModel(), model_id="seg/1", executor=executor, on_result=results.append, default_confidence=0.4
            )
            outputs = {"full": MaskOutput(), "high": MaskOutput("simplified", 1.0), "boxes": MaskOutput("none")}
            for name, output in outputs.items():
                slot = LatestFrameSlot(loop)
                stage.attach(
                    StreamBinding(name=name, slot=slot, confidence=0.8 if name == "high" else None, mask_output=output)
                )
                slot.put(_frame(name))
            task = asyncio.create_task(stage.run())
            for _ in range(300):
                if len(results) == 3:
                    break
                await asyncio.sleep(0.01)
            stage.stop()
            await asyncio.wait_for(task, 5)
        return results

    MADE_IN.clear()
    by_stream = {r.frame.stream: r.prediction for r in asyncio.run(scenario())}
    assert MADE_IN and all(name.startswith("infer") for name in MADE_IN)  # never the event loop's thread
    full, high, boxes = by_stream["full"], by_stream["high"], by_stream["boxes"]
    assert isinstance(full, InstanceSegmentation) and full.polygons is not None and len(full.polygons) == 2
    assert {tuple(p) for p in full.polygons[1].tolist()} == {(40.5, 20.5), (40.5, 29.5), (49.5, 29.5), (49.5, 20.5)}
    assert len(high) == 1 and high.masks.shape == (1, 40, 60) and len(high.polygons) == 1  # 0.5 < 0.8
    assert boxes.polygons is None and all("points" not in p for p in boxes.to_response()["predictions"])
