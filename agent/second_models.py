"""The supervisor's second models: one :class:`SecondStage` per model id named by a stream's
``SECOND_MODEL_ID``, each with its own executor, loaded on first use and retired with its last
stream (the same lifecycle as the first models' stages, kept apart so the supervisor stays small).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from edge_agent.agent.errors import ConfigError
from edge_agent.models.tasks.on_detections import boxes_as
from edge_agent.pipelines.results import InferenceResult
from edge_agent.pipelines.second_stage import ResultDispatch, SecondBinding, SecondStage
from edge_agent.pipelines.stream_config import StreamConfig, env_name

log = logging.getLogger("edge_agent.supervisor")

#: what a first model must give for a second model to run on it: boxes
BOX_TASKS = ("object-detection", "instance-segmentation", "keypoint-detection")
RETIRE_TIMEOUT_S = 5.0


@dataclass
class SecondRecord:
    model_id: str
    model: Any
    stage: SecondStage
    task: asyncio.Task[Any]
    executor: ThreadPoolExecutor
    streams: set[str] = field(default_factory=set)


class SecondModels:
    """Second-model stages by model id, and the dispatch that routes first-model results to them."""

    def __init__(
        self,
        publish: Callable[[InferenceResult], None],
        load: Callable[[str], Awaitable[Any]],
        on_room: Callable[[], None] | None = None,
    ) -> None:
        """``on_room`` wakes the first stages (a MODE=every stream's gate may have opened)."""
        self.dispatch = ResultDispatch(publish)
        self._publish = publish
        self._load = load
        self._on_room = on_room
        self.records: dict[str, SecondRecord] = {}

    async def ensure(self, model_id: str) -> SecondRecord:
        record = self.records.get(model_id)
        if record is None:
            model = await self._load(model_id)
            record = self.records.get(model_id)  # another stream may have won the race
            if record is None:
                concurrency = max(1, int(getattr(model, "concurrency", 1) or 1))
                executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"second-{model_id}"[:40])
                stage = SecondStage(
                    model,
                    model_id=model_id,
                    executor=executor,
                    publish=self._publish,
                    concurrency=concurrency,
                    on_room=self._on_room,
                )
                task = asyncio.create_task(stage.run(), name=f"second:{model_id}")
                record = SecondRecord(model_id, model, stage, task, executor)
                self.records[model_id] = record
                log.info("second model %s ready (takes boxes as %s)", model_id, boxes_as(model))
        return record

    @staticmethod
    def check(stream: StreamConfig, first: Any, second: Any) -> None:
        """ConfigError (exit 2) when the first model gives no boxes to run on."""
        task = getattr(first, "task_type", "?")
        if task not in BOX_TASKS:
            raise ConfigError(
                f"STREAM_{env_name(stream.name)}_SECOND_MODEL_ID={stream.second_model_id!r} runs on detections, "
                f"but the stream's model {getattr(first, 'model_id', '?')!r} is a {task} model; "
                f"accepted first models: {', '.join(BOX_TASKS)}"
            )

    def gate(self, stream: StreamConfig) -> Callable[[], bool] | None:
        """The first stage's gate for a MODE=every stream with a second model (None otherwise)."""
        if not stream.second_model_id or stream.mode != "every":
            return None
        stage = self.records[stream.second_model_id].stage
        name = stream.name
        return lambda: stage.has_room(name)

    def attach(self, stream: StreamConfig, first: Any) -> None:
        assert stream.second_model_id is not None
        record = self.records[stream.second_model_id]
        options = split_options(stream.model_options, first, record.model)[1]
        record.stage.attach(
            SecondBinding(
                name=stream.name,
                classes=stream.second_classes,
                padding=stream.second_padding,
                mask_output=stream.masks,
                options=options or None,
                keep_all=stream.mode == "every",
            )
        )
        record.streams.add(stream.name)
        self.dispatch.bind(stream.name, record.stage)

    def update(self, stream: StreamConfig, first: Any) -> None:
        """A running stream's changed options (classes, padding, mask output, prompts for crops)."""
        stage = self.dispatch.stage_of(stream.name)
        binding = stage.binding(stream.name) if stage is not None else None
        if stage is None or binding is None:
            return
        binding.classes = stream.second_classes
        binding.padding = stream.second_padding
        binding.mask_output = stream.masks
        binding.options = split_options(stream.model_options, first, stage.model)[1] or None

    async def detach(self, stream: str) -> None:
        stage = self.dispatch.stage_of(stream)
        self.dispatch.unbind(stream)
        if stage is None:
            return
        stage.detach(stream)
        record = self.records.get(stage.model_id)
        if record is not None:
            record.streams.discard(stream)
            if not record.streams:
                await self.retire(record)

    async def retire(self, record: SecondRecord) -> None:
        if self.records.get(record.model_id) is record:
            del self.records[record.model_id]
        record.stage.stop()
        _, pending = await asyncio.wait([record.task], timeout=RETIRE_TIMEOUT_S)
        for task in pending:
            task.cancel()
        record.executor.shutdown(wait=False, cancel_futures=True)
        log.info("second model %s unloaded: no stream uses it any more", record.model_id)

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        return [r.task for r in self.records.values()]

    @property
    def busy(self) -> bool:
        return any(r.stage.busy for r in self.records.values())

    def stream_stats(self, stream: str) -> dict[str, Any]:
        stage = self.dispatch.stage_of(stream)
        binding = stage.binding(stream) if stage is not None else None
        if stage is None or binding is None:
            return {}
        return {
            "second_model_id": stage.model_id,
            "second_model_runs": binding.runs,
            "second_model_dropped": binding.dropped,
            "second_model_errors": binding.errors,
        }

    async def stop(self, timeout: float) -> None:
        """After the first stages stopped: finish what is waiting, bounded by ``timeout``."""
        for record in self.records.values():
            record.stage.stop()
        tasks = self.tasks
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.1))
            for task in pending:
                task.cancel()

    def close(self) -> None:
        for record in self.records.values():
            record.task.cancel()
            record.executor.shutdown(wait=False, cancel_futures=True)


def split_options(options: dict[str, Any], first: Any, second: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stream's per-image options (PROMPTS, ROI) for its first and second model: each goes to the
    first model when it takes it, else to a second model that does (CLIP prompts for each crop);
    one neither takes stays with the first, whose check then names it."""
    first_takes = tuple(getattr(first, "stream_options", ()))
    second_takes = tuple(getattr(second, "stream_options", ())) if second is not None else ()
    to_first, to_second = {}, {}
    for key, value in options.items():
        if key not in first_takes and key in second_takes:
            to_second[key] = value
        else:
            to_first[key] = value
    return to_first, to_second


__all__ = ["BOX_TASKS", "SecondModels", "SecondRecord", "split_options"]
