"""The inference stage: newest frame of every ready stream, one batch, run off the event loop.

One stage per model. It never waits for a slow or dead stream to fill a batch: whatever is ready
when the model has room is the batch, taken in a strict circle over the streams (see
``round_robin_start``), so none starves however many are ready at once. While a batch runs,
cameras keep overwriting their slots, so the next batch again sees the newest frames
(latest-frame-wins, see ``slot.py``).

A model may take more than one batch at a time (two single-threaded runs on a small CPU, see
``models/speed/concurrency.py``): the stage then keeps that many batches in flight and hands their
results on in launch order, so a stream's results always come out in frame order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from edge_agent.models.maths.polygons import POLYGON, MaskOutput
from edge_agent.models.maths.predictions import InstanceSegmentation, Prediction
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.results import InferenceResult
from edge_agent.pipelines.slot import LatestFrameSlot

log = logging.getLogger("edge_agent.inference")

# After a failed batch, wait a little so a model that always fails does not spin a core.
ERROR_PAUSE_S = 0.5
# Freshness wait: only for streams faster than this many seconds per frame (slower ones would
# idle the model too long), and never longer than this share of a frame interval.
FRESHNESS_MAX_INTERVAL_S = 0.25
FRESHNESS_SLACK_S = 0.002


class StreamModel(Protocol):
    """What the stage needs of a model: typed predictions for a batch of BGR frames."""

    model_id: str
    max_batch_size: int

    def predict(self, images: list[Any], **kwargs: Any) -> list[Prediction]: ...


@dataclass(slots=True)
class StreamBinding:
    """A stream's slot as the stage sees it, with the stream's own confidence threshold and mask
    output (what a segmentation model's masks become in its messages)."""

    name: str
    slot: LatestFrameSlot
    confidence: float | None = None
    live: bool = True  # a live source keeps producing whether or not we take its frames
    #: per-image options of this stream's frames (CLIP prompts, OCR regions), passed as image_options
    options: dict[str, Any] | None = None
    mask_output: MaskOutput = POLYGON
    #: while this says no, the stream's frames wait in their slot (a second model still busy with
    #: the stream's earlier results, in MODE=every: pipelines/second_stage.py)
    gate: Callable[[], bool] | None = None


def finish_for_stream(prediction: Prediction, threshold: float, lowest: float, mask_output: MaskOutput) -> Prediction:
    """A prediction as one stream wants it: its own threshold (the batch ran at the lowest of its
    streams'), then its mask output. Runs in the executor: polygons cost real time."""
    if threshold > lowest:
        prediction = prediction.filter_confidence(threshold)
    if isinstance(prediction, InstanceSegmentation):
        prediction = prediction.with_mask_output(mask_output)
    return prediction


def freshness_delay(ready: list[tuple[float, float | None]]) -> float:
    """How long to wait for a fresher frame before starting a batch, in seconds.

    ``ready`` holds (age of the waiting frame, frame interval of its live stream or None) for
    every stream with a frame ready. When the model comes free at a random phase of a camera's
    frame clock, the waiting frame is on average half an interval old; if it is older than half
    its interval, the next one is less than half an interval away, so waiting for it cuts the age
    that ends up in the end-to-end latency, at the cost of that much model idle time.

    Only a lone ready stream is waited for: with several streams ready the model has work for
    every millisecond, and waiting would trade their throughput for one stream's freshness. A
    stream that is not live, or whose rate is unknown or slow, is never waited for.
    """
    if len(ready) != 1:
        return 0.0
    age, interval = ready[0]
    if interval is None or interval > FRESHNESS_MAX_INTERVAL_S or age <= interval / 2:
        return 0.0
    return max(0.0, interval - age) + FRESHNESS_SLACK_S


def round_robin_start(names: list[str], served_last: str | None, rotation: int) -> int:
    """Where the next batch starts looking for ready frames: right after the last stream served.

    So the stage serves ready streams in a strict circle: between two turns of one stream every
    other stream that was ready had its turn, however many there are (64 ready at once with a
    batch of 8: each once per 8 batches) and however fast some refill their slots (a 30 fps
    camera behind an idle one cannot take that one's turn too, as it would if the start only
    moved on by one per batch). ``rotation`` places the start when the last served stream is
    gone.
    """
    if not names:
        return 0
    if served_last is not None:
        try:
            return (names.index(served_last) + 1) % len(names)
        except ValueError:
            pass
    return rotation % len(names)


@dataclass(slots=True)
class _Flight:
    """A batch on its way through the model."""

    batch: list[tuple[StreamBinding, Frame]]
    started: float
    future: asyncio.Future[tuple[list[Prediction], float]]


class InferenceStage:
    """Batches frames across the streams bound to one model, with up to ``concurrency`` batches
    in flight (the model's run plan, see models/speed/concurrency.py)."""

    def __init__(
        self,
        model: StreamModel,
        *,
        model_id: str,
        executor: Executor,
        on_result: Callable[[InferenceResult], None],
        default_confidence: float,
        max_batch_size: int = 8,
        on_error: Callable[[str], None] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """``concurrency``: batches in flight at once (None: the model's own ``concurrency``, else 1);
        the executor needs at least that many workers."""
        self._model = model
        self._model_id = model_id
        self._executor = executor
        self._on_result = on_result
        self._on_error = on_error
        self._default_confidence = default_confidence
        self._max_batch = max(1, min(max_batch_size, getattr(model, "max_batch_size", max_batch_size) or 1))
        if concurrency is None:
            concurrency = int(getattr(model, "concurrency", 1) or 1)
        self._concurrency = max(1, concurrency)
        self._bindings: dict[str, StreamBinding] = {}
        self._rotation = 0
        self._served_last: str | None = None  # the last stream a batch took, where the next looks on
        self._wakeup = asyncio.Event()
        # Per stream: (frame_id, monotonic) of the last frame taken and the smoothed frame interval.
        self._last_taken: dict[str, tuple[int, float]] = {}
        self._interval: dict[str, float] = {}
        self._stopping = False
        self._flights: deque[_Flight] = deque()  # batches on their way through the model, oldest first
        self.batches = 0
        self.frames = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model(self) -> StreamModel:
        return self._model

    @property
    def max_batch_size(self) -> int:
        return self._max_batch

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def in_flight(self) -> int:
        """Batches on their way through the model now."""
        return len(self._flights)

    @property
    def busy(self) -> bool:
        """True while the model runs a batch."""
        return bool(self._flights)

    def attach(self, binding: StreamBinding) -> None:
        self._bindings[binding.name] = binding
        binding.slot.add_listener(self._wakeup.set)
        self._wakeup.set()

    def detach(self, name: str) -> None:
        self._bindings.pop(name, None)

    def binding(self, name: str) -> StreamBinding | None:
        """The stream's binding (its threshold, options and mask output may be changed in place:
        the next batch uses them)."""
        return self._bindings.get(name)

    def wake(self) -> None:
        """Look at the slots again (a gate may have opened)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Finish the batch in flight, then return from :meth:`run`."""
        self._stopping = True
        self._wakeup.set()

    def _collect(self) -> list[tuple[StreamBinding, Frame]]:
        bindings = list(self._bindings.values())
        if not bindings:
            return []
        start = round_robin_start([b.name for b in bindings], self._served_last, self._rotation)
        self._rotation += 1
        batch: list[tuple[StreamBinding, Frame]] = []
        for binding in bindings[start:] + bindings[:start]:
            if binding.gate is not None and not binding.gate():
                continue
            frame = binding.slot.take()
            if frame is not None:
                self._learn_interval(frame)
                batch.append((binding, frame))
                self._served_last = binding.name
                if len(batch) >= self._max_batch:
                    break
        return batch

    def _learn_interval(self, frame: Frame) -> None:
        last = self._last_taken.get(frame.stream)
        self._last_taken[frame.stream] = (frame.frame_id, frame.monotonic)
        if last is None or frame.frame_id <= last[0]:
            return
        sample = (frame.monotonic - last[1]) / (frame.frame_id - last[0])
        previous = self._interval.get(frame.stream)
        self._interval[frame.stream] = sample if previous is None else 0.8 * previous + 0.2 * sample

    def _freshness_delay(self) -> float:
        now = time.monotonic()
        ready = []
        for binding in self._bindings.values():
            frame = binding.slot.peek()
            if frame is not None:
                interval = self._interval.get(binding.name) if binding.live else None
                ready.append((now - frame.monotonic, interval))
        return freshness_delay(ready)

    def _run_batch(
        self,
        frames: list[Frame],
        thresholds: list[float],
        outputs: list[MaskOutput],
        options: list[dict[str, Any] | None] | None = None,
    ) -> tuple[list[Prediction], float]:
        """Executor side: colour conversion (lazy, see Frame.image), the model call at the lowest
        threshold, then each stream's own threshold and mask output."""
        started = time.perf_counter()
        lowest = min(thresholds)
        extra: dict[str, Any] = {} if options is None else {"image_options": options}
        predictions = self._model.predict([f.image for f in frames], confidence=lowest, **extra)
        predictions = [
            finish_for_stream(p, t, lowest, o) for p, t, o in zip(predictions, thresholds, outputs, strict=True)
        ]
        return predictions, (time.perf_counter() - started) * 1000.0

    def _launch(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[StreamBinding, Frame]]) -> _Flight:
        thresholds = [b.confidence if b.confidence is not None else self._default_confidence for b, _ in batch]
        options = [b.options for b, _ in batch] if any(b.options for b, _ in batch) else None
        future = loop.run_in_executor(
            self._executor,
            self._run_batch,
            [f for _, f in batch],
            thresholds,
            [b.mask_output for b, _ in batch],
            options,
        )
        # A landing frees room for the next batch: the loop sleeps on the same event as new frames.
        future.add_done_callback(lambda _: self._wakeup.set())
        return _Flight(batch=batch, started=time.monotonic(), future=future)

    def _land(self, flight: _Flight) -> bool:
        """Hand a finished batch's results on; False when the batch failed."""
        frames = [f for _, f in flight.batch]
        try:
            predictions, inference_ms = flight.future.result()
        except Exception:
            log.exception("inference failed on a batch of %d frame(s) of model %s", len(frames), self._model_id)
            if self._on_error is not None:
                for frame in frames:
                    self._on_error(frame.stream)
            return False
        self.batches += 1
        self.frames += len(frames)
        for frame, prediction in zip(frames, predictions, strict=True):
            self._on_result(
                InferenceResult(
                    frame=frame,
                    prediction=prediction,
                    model_id=self._model_id,
                    inference_ms=inference_ms,
                    frame_age_ms=(flight.started - frame.monotonic) * 1000.0,
                    batch_size=len(frames),
                )
            )
        return True

    async def _land_finished(self) -> None:
        """Land the finished batches at the head of the queue: in launch order, so a stream's
        results never overtake each other when a later, smaller batch finishes first."""
        flights, failed = self._flights, False
        while flights and flights[0].future.done():
            failed |= not self._land(flights.popleft())
        if failed:
            # A model that always fails must not spin a core.
            await asyncio.sleep(ERROR_PAUSE_S)

    async def _wait(self, timeout: float | None = None) -> None:
        """Until a frame arrives or a batch lands (or ``timeout`` passes).

        Slot listeners and landings run on this loop's thread, so nothing slips in between the
        caller's checks and this clear; only a head batch that finished during an earlier await
        (its wake-up already spent) needs the check here.
        """
        if self._flights and self._flights[0].future.done():
            return
        self._wakeup.clear()
        if timeout is None:
            await self._wakeup.wait()
            return
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            pass

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        flights = self._flights
        try:
            while True:
                await self._land_finished()
                if self._stopping:
                    break
                if len(flights) >= self._concurrency:
                    await self._wait()
                    continue
                delay = self._freshness_delay()
                if delay > 0:
                    await self._wait(delay)
                    await self._land_finished()
                batch = self._collect()
                if not batch:
                    await self._wait()
                    continue
                flights.append(self._launch(loop, batch))
            # Stopping: what is in flight finishes and is handed on.
            if flights:
                await asyncio.wait([f.future for f in flights])
                await self._land_finished()
        finally:
            for flight in flights:
                flight.future.cancel()  # a run already in a thread finishes there, unheard
            flights.clear()
