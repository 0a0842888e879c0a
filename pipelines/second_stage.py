"""The second-model stage: a model run on the first model's detections, in its own executor.

A stream with a second model (``STREAM_<NAME>_SECOND_MODEL_ID``) has its first model's results
handed here instead of to the sinks (:class:`ResultDispatch` does the routing). The second model
runs on the detections (``models/tasks/on_detections.py``: SAM masks for the boxes, a classifier or OCR
on crops...) and the combined prediction is published as one message.

It never stalls the first model: the first stage only drops its result into this stage's slot for
the stream and goes on with the next frame. Each stream has one result at the second model at a
time and one waiting; a newer result replaces the waiting one (latest wins, as frames do in
``slot.py``), counted in ``dropped``. So a stream's messages stay in frame order, the pair runs
as a pipeline (throughput of the slower model, not of the sum), and memory stays bounded. A
stream in MODE=every loses nothing instead: its results queue (``keep_all``) and its binding at the
first stage is gated (:meth:`SecondStage.has_room`), so its next frame waits in the slot, and the
reader behind it, until the second model has caught up; the first model meanwhile serves its
other streams. When the
second model fails on a result, the first model's prediction is published alone (logged), so the
detections are never lost to the second model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

from edge_agent.models.maths.polygons import POLYGON, MaskOutput
from edge_agent.models.maths.predictions import Detections, InstanceSegmentation, Prediction
from edge_agent.models.tasks.on_detections import run_on_detections
from edge_agent.pipelines.results import InferenceResult

log = logging.getLogger("edge_agent.second_stage")


@dataclass(slots=True)
class SecondBinding:
    """One stream's use of a second model."""

    name: str
    classes: tuple[str, ...] = ()
    padding: float = 0.0
    mask_output: MaskOutput = POLYGON
    #: per-image options for a foundation second model (CLIP prompts for each crop, say)
    options: dict[str, Any] | None = None
    #: MODE=every: queue results instead of replacing the waiting one (see has_room)
    keep_all: bool = False
    runs: int = 0
    dropped: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Flight:
    result: InferenceResult
    future: asyncio.Future[tuple[Prediction, float]]


@dataclass
class _StreamState:
    binding: SecondBinding
    pending: deque[InferenceResult] = field(default_factory=deque)
    in_flight: bool = False
    warned: set[str] = field(default_factory=set)


class SecondStage:
    """Runs one second model for the streams bound to it, ``concurrency`` results at a time."""

    def __init__(
        self,
        model: Any,
        *,
        model_id: str,
        executor: Executor,
        publish: Callable[[InferenceResult], None],
        concurrency: int = 1,
        on_room: Callable[[], None] | None = None,
    ) -> None:
        """``on_room``: called when a stream's waiting result went to the model (wakes the first
        stages, whose gates may have opened)."""
        self._model = model
        self._model_id = model_id
        self._executor = executor
        self._publish = publish
        self._on_room = on_room
        self._concurrency = max(1, concurrency)
        self._streams: dict[str, _StreamState] = {}
        self._flights: list[_Flight] = []
        self._rotation = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.runs = 0

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model(self) -> Any:
        return self._model

    @property
    def busy(self) -> bool:
        return bool(self._flights) or any(s.pending for s in self._streams.values())

    def attach(self, binding: SecondBinding) -> None:
        self._streams[binding.name] = _StreamState(binding)

    def detach(self, name: str) -> None:
        self._streams.pop(name, None)

    def binding(self, name: str) -> SecondBinding | None:
        state = self._streams.get(name)
        return None if state is None else state.binding

    def has_room(self, name: str) -> bool:
        """May the first stage take the stream's next frame? (Only ``keep_all`` streams ever wait.)"""
        state = self._streams.get(name)
        return state is None or not state.binding.keep_all or not state.pending

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def submit(self, result: InferenceResult) -> None:
        """Take a first-model result (on the event loop; never blocks)."""
        state = self._streams.get(result.frame.stream)
        if state is None:
            self._publish(result)
            return
        if state.pending and not state.binding.keep_all:
            state.pending.popleft()
            state.binding.dropped += 1
        state.pending.append(result)
        self._wakeup.set()

    def stop(self) -> None:
        """Finish what is in flight and waiting, then return from :meth:`run`."""
        self._stopping = True
        self._wakeup.set()

    def _run(self, result: InferenceResult, binding: SecondBinding) -> tuple[Prediction, float]:
        """Executor side: the second model on the first model's detections, then the stream's mask output."""
        started = time.perf_counter()
        prediction = result.prediction
        assert isinstance(prediction, Detections)
        combined = run_on_detections(
            self._model,
            result.frame.image,
            prediction,
            model_id=self._model_id,
            classes=binding.classes,
            padding=binding.padding,
            options=binding.options,
        )
        if isinstance(combined, InstanceSegmentation) and not isinstance(prediction, InstanceSegmentation):
            combined = combined.with_mask_output(binding.mask_output)
        return combined, (time.perf_counter() - started) * 1000.0

    def _next(self) -> tuple[_StreamState, InferenceResult] | None:
        states = list(self._streams.values())
        if not states:
            return None
        start = self._rotation % len(states)
        self._rotation += 1
        for state in states[start:] + states[:start]:
            if state.pending and not state.in_flight:
                result = state.pending.popleft()
                if not state.pending and state.binding.keep_all and self._on_room is not None:
                    self._on_room()
                return state, result
        return None

    def _launch(self, loop: asyncio.AbstractEventLoop, state: _StreamState, result: InferenceResult) -> None:
        if not isinstance(result.prediction, Detections):
            # A first model without boxes (a classifier): nothing to run on. Said once per stream.
            kind = type(result.prediction).__name__
            if kind not in state.warned:
                state.warned.add(kind)
                log.warning(
                    "stream %s: second model %s needs boxes, but the first model gave %s; published as it is",
                    result.frame.stream,
                    self._model_id,
                    kind,
                )
            self._publish(result)
            return
        state.in_flight = True
        future = loop.run_in_executor(self._executor, self._run, result, state.binding)
        future.add_done_callback(lambda _: self._wakeup.set())
        self._flights.append(_Flight(result, future))

    def _land(self) -> None:
        still: list[_Flight] = []
        for flight in self._flights:
            if not flight.future.done():
                still.append(flight)
                continue
            stream = flight.result.frame.stream
            state = self._streams.get(stream)
            if state is not None:
                state.in_flight = False
            if flight.future.cancelled():
                continue
            try:
                prediction, ms = flight.future.result()
            except Exception:
                log.exception("second model %s failed on a frame of stream %s", self._model_id, stream)
                if state is not None:
                    state.binding.errors += 1
                self._publish(flight.result)  # the detections still go out
                continue
            self.runs += 1
            if state is not None:
                state.binding.runs += 1
            self._publish(replace(flight.result, prediction=prediction, second_model_id=self._model_id, second_ms=ms))
        self._flights = still

    async def _wait(self) -> None:
        if any(f.future.done() for f in self._flights):
            return
        self._wakeup.clear()
        await self._wakeup.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._land()
                if len(self._flights) < self._concurrency:
                    picked = self._next()
                    if picked is not None:
                        self._launch(loop, *picked)
                        continue
                if self._stopping and not self.busy:
                    break
                await self._wait()
        finally:
            for flight in self._flights:
                flight.future.cancel()  # a run already in a thread finishes there, unheard
            self._flights.clear()


class ResultDispatch:
    """Where a first model's results go: to the stream's second stage when it has one, else
    straight on (the result router)."""

    def __init__(self, publish: Callable[[InferenceResult], None]) -> None:
        self._publish = publish
        self._second: dict[str, SecondStage] = {}

    def bind(self, stream: str, stage: SecondStage) -> None:
        self._second[stream] = stage

    def unbind(self, stream: str) -> None:
        self._second.pop(stream, None)

    def stage_of(self, stream: str) -> SecondStage | None:
        return self._second.get(stream)

    def __call__(self, result: InferenceResult) -> None:
        stage = self._second.get(result.frame.stream)
        if stage is None:
            self._publish(result)
        else:
            stage.submit(result)


__all__ = ["ResultDispatch", "SecondBinding", "SecondStage"]
