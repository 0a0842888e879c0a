"""The supervisor: owns every task of a running agent and tears them down in order.

Start-up order: the health socket is bound (a port in use fails at once) and served (``/readyz``
says what is still missing), sinks start (so ``online`` is out early), models load (each in a
thread of its own: a download or a TensorRT build must neither freeze the loop nor hold up
SIGTERM), then one stage per model and one runner per stream. Shutdown order is the reverse of
the data flow: stop sources, let each stage finish its batch in flight, flush the sinks, publish
``offline``. Python 3.10 has no ``asyncio.TaskGroup``, so the task bookkeeping is done by hand
here, in one place: one :class:`StreamRecord` per stream and one :class:`ModelRecord` per model,
retired with its last stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from edge_agent.agent.config_views import http_token, state_dir
from edge_agent.agent.errors import (
    EXIT_OK,
    EXIT_TRANSIENT,
    ConfigError,
    ModelLoadError,
    NoStreamLeftError,
    StopRequested,
    StreamExistsError,
    UnknownStreamError,
)
from edge_agent.agent.second_models import SecondModels, split_options
from edge_agent.agent.settings import Config, StreamConfig, env_name, live_view_options
from edge_agent.agent.systemd_notify import SystemdNotifier
from edge_agent.agent.validation import prepare_source
from edge_agent.agent.vlm_streams import VLMStreams
from edge_agent.models import ModelManager
from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.pipelines.errors import StateError
from edge_agent.pipelines.events.snapshots import SnapshotStore
from edge_agent.pipelines.events.step import TrackingStep
from edge_agent.pipelines.events.store import TrackingStore
from edge_agent.pipelines.inference import InferenceStage, StreamBinding
from edge_agent.pipelines.live import LiveView, model_colors
from edge_agent.pipelines.results import ResultRouter
from edge_agent.pipelines.sequence import SequenceStore
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.sinks.registry import SinkHooks, build_sinks
from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.runner import StreamRunner
from edge_agent.pipelines.sources.spec import SourceSpec
from edge_agent.pipelines.state import StateDir

log = logging.getLogger("edge_agent.supervisor")

# Frames per inference call when MAX_BATCH_SIZE is not set and the model runs on the CPU: past a
# few images a CPU batch only spills the caches (YOLOv8n-sized at 640 on 2 cores: 49 ms/image at
# batch 2-4, 57 at batch 8). Accelerators keep the model layer's larger default.
CPU_BATCH_SIZE = 4


def batch_size_for(providers: list[str], concurrency: int, max_batch_size: int, *, explicit: bool) -> int:
    """Frames per inference call of a model: MAX_BATCH_SIZE when the user set it, else by provider."""
    if explicit:
        return max_batch_size
    if providers == ["CPUExecutionProvider"]:
        if concurrency > 1:
            # Several single-threaded runs in flight: a batch gains nothing on one thread, and
            # frames taken one at a time in rotation keep every stream's share equal (4 and 8
            # 15 fps streams on 2 cores: 40.6 / 39.9 fps in all, slowest/fastest 0.99 / 0.98;
            # with batches of 4: 29.0 / 37.4 fps, 0.67 / 0.91).
            return 1
        return min(CPU_BATCH_SIZE, max_batch_size)
    return max_batch_size


# How long a removed stream's runner, or a retired model's stage, may take to stop.
RETIRE_TIMEOUT_S = 5.0


def _plain(stats: Any) -> dict[str, Any]:
    if is_dataclass(stats) and not isinstance(stats, type):
        return asdict(stats)
    return dict(stats)


@dataclass
class StreamRecord:
    """Everything the supervisor holds for one running stream."""

    config: StreamConfig
    model_id: str
    spec: SourceSpec
    options: SourceOptions
    slot: LatestFrameSlot
    runner: StreamRunner
    task: asyncio.Task[Any]


@dataclass
class ModelRecord:
    """One loaded model: its stage, the stage's task and executor, and the streams it serves."""

    model_id: str
    model: Any
    stage: InferenceStage
    task: asyncio.Task[Any]
    executor: ThreadPoolExecutor
    streams: set[str] = field(default_factory=set)


class Supervisor:
    """Runs one agent from a validated :class:`Config` until stopped."""

    def __init__(self, config: Config, *, run_seconds: float | None = None) -> None:
        self.config = config
        self.run_seconds = run_seconds
        self.notifier = SystemdNotifier()
        self.started_monotonic = time.monotonic()
        self.run_id = uuid.uuid4().hex  # in every message: tells this run's frame_ids from the last's
        self.sequences: SequenceStore | None = None
        self._state: StateDir | None = None
        self.sinks: list[Sink] = []
        self.router: ResultRouter | None = None
        self.tracking: TrackingStep | None = None  # tracking, zones, lines, events (pipelines/events)
        self.second: SecondModels | None = None  # models run on other models' detections
        self.streams: dict[str, StreamRecord] = {}
        self.models: dict[str, ModelRecord] = {}
        # Each stream's newest frame + prediction for the live page (kept and drawn only when watched).
        self.live = LiveView(live_view_options(config.agent))
        self.model_load_s: dict[str, float] = {}
        self.ready = False  # every model loaded and every stream started (/readyz, READY=1)
        # Per model id: the precision it runs at, why, and its providers (stats and metrics).
        self.model_info: dict[str, dict[str, Any]] = {}
        self._manager: ModelManager | None = None
        self._stop = asyncio.Event()
        self._stop_reason = "stop requested"
        # Set whenever streams are added or removed at run time, so _wait watches the new set.
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_failed: dict[str, str] = {}
        self.vlm: VLMStreams | None = None  # the streams' vision-language askers (VLM_PROMPT)

    def request_stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
        self._stop.set()

    @property
    def manager(self) -> ModelManager:
        if self._manager is None:
            self._manager = ModelManager(max_active=max(self.config.models.max_active_models, 1))
        return self._manager

    # -- sinks ---------------------------------------------------------------------------------

    def _open_state(self) -> None:
        """Lock STATE_DIR and load the seq numbers; exit 2 (ConfigError) when it cannot be used."""
        agent = self.config.agent
        try:
            self._state = StateDir(state_dir(self.config)).acquire()
            # With the disk outbox the outbox records seq with each message (pipelines/sequence.py).
            durable = bool(agent.mqtt_host) and agent.mqtt_qos > 0 and agent.mqtt_outbox == "disk"
            self.sequences = SequenceStore(agent.agent_id, self._state.db_path, autosave=not durable)
            self.tracking = TrackingStep(
                TrackingStore(agent.agent_id, self._state.db_path),
                snapshots=SnapshotStore(self._state.path / "snapshots", agent.snapshot_store_mb * 2**20),
            )
        except StateError as exc:
            self._close_state()
            raise ConfigError(str(exc)) from None
        log.info("run %s, state in %s", self.run_id, self._state.path)

    def _finish_tracking(self) -> None:
        """End the open tracks (zone.exit, track.end) while the sinks still take events."""
        if self.tracking is not None:
            try:
                self.tracking.finish_all()
            except Exception:
                log.exception("ending the open tracks failed")

    def _close_state(self) -> None:
        if self.tracking is not None:
            self.tracking.close()
            self.tracking = None
        if self.sequences is not None:
            self.sequences.close()
            self.sequences = None
        if self._state is not None:
            self._state.release()
            self._state = None

    async def _start_sinks(self) -> None:
        agent = self.config.agent
        try:
            # The registry (pipelines/sinks/registry.py) knows which sinks exist and builds them.
            sinks = build_sinks(self.config, SinkHooks(reader_gone=self._reader_gone_threadsafe))
        except StateError as exc:
            raise ConfigError(str(exc)) from None
        for sink in sinks:
            await sink.start()
            self.sinks.append(sink)
        steps = [self.tracking] if self.tracking is not None else []
        self.router = ResultRouter(
            agent.agent_id, self.sinks, sequences=self.sequences, run_id=self.run_id, live=self.live, steps=steps
        )
        self.vlm = VLMStreams(self.config, self._load_model, self.sinks, self.live, self.run_id)
        self.router.taps.append(self.vlm.on_frame)
        if self.tracking is not None:
            # events reach the sinks through the router; track ends and zone entries also ask the VLM
            self.tracking.outlet = self.vlm.event_outlet(self.router, self.tracking)
        self.second = SecondModels(self.router, self._load_model, self._wake_stages)

    def _wake_stages(self) -> None:
        for record in self.models.values():
            record.stage.wake()

    def _reader_gone_threadsafe(self, sink: Sink) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stdout_closed, sink)

    def _stdout_closed(self, closed: Sink) -> None:
        """stdout's reader went away (``edge-agent run | head -3``)."""
        others = [s for s in self.sinks if s is not closed]
        if others:
            log.warning("stdout was closed by its reader; predictions still go to the other sink(s)")
            return
        log.info("stdout was closed by its reader and no other sink takes predictions: stopping")
        self.request_stop("stdout closed")

    # -- models --------------------------------------------------------------------------------

    def _model_status(self, message: str) -> None:
        """Called from the loading thread: downloads and engine builds show in `systemctl status`."""
        log.info("%s", message)
        self.notifier.status(message)
        self.notifier.extend_timeout(900)

    def _users_of(self, model_id: str) -> list[str]:
        return [s.name for s in self.config.streams if self.config.model_of(s) == model_id]

    async def _in_thread(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in a daemon thread; raise :class:`StopRequested` as soon as a stop arrives.

        Not the loop's default executor: asyncio.run() joins that pool's threads on the way out,
        so a SIGTERM during a download or an engine build would wait for it to finish. A daemon
        thread that is still loading when the agent stops is simply left behind.
        """
        if self._stop.is_set():
            raise StopRequested(name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def work() -> None:
            try:
                outcome = (True, fn())
            except BaseException as exc:  # handed to the loop, which decides
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent has stopped
                loop.call_soon_threadsafe(settle, *outcome)

        threading.Thread(target=work, name=name, daemon=True).start()
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({future, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
        if not future.done():
            future.cancel()
            raise StopRequested(name)
        return future.result()

    async def _load_model(self, model_id: str) -> Any:
        self.notifier.status(f"loading model {model_id}")
        # A first download or a TensorRT engine build can take minutes: keep systemd patient.
        self.notifier.extend_timeout(900)
        started = time.monotonic()
        manager = self.manager
        api_key = self.config.models.api_key
        try:
            model = await self._in_thread(
                f"load:{model_id}"[:60], lambda: manager.get(model_id, api_key, status=self._model_status)
            )
        except StopRequested:
            raise
        except EdgeAgentError as exc:
            # permanent (wrong id, unusable files, a provider this box lacks) or not, as the cause is
            raise ModelLoadError(model_id, self._users_of(model_id), exc) from exc
        self.model_load_s[model_id] = time.monotonic() - started
        log.info("model %s ready in %.1f s", model_id, self.model_load_s[model_id])
        return model

    def _check_model_options(self, stream: StreamConfig) -> None:
        """A stream's PROMPTS/ROI must be options its model takes (exit 2 otherwise: no restart helps)."""
        model = self.models[self.config.model_of(stream)].model
        if getattr(model, "task_type", "") == "interactive-instance-segmentation":
            raise ConfigError(
                f"stream {stream.name!r}: {self.config.model_of(stream)!r} segments what prompts point at and "
                f"frames bring none; run it on a detector's boxes: STREAM_{env_name(stream.name)}_MODEL_ID=<detector> "
                f"STREAM_{env_name(stream.name)}_SECOND_MODEL_ID={self.config.model_of(stream)}"
            )
        wanted = self._first_options(stream, model)
        if stream.second_model_id and self.second is not None:
            SecondModels.check(stream, model, self.second.records[stream.second_model_id].model)
        # a model that finds only what it is told (Grounding DINO's classes) has nothing to do without it
        for key in getattr(model, "required_stream_options", ()):
            if key not in wanted:
                raise ConfigError(
                    f"stream {stream.name!r}: {self.config.model_of(stream)!r} needs "
                    f'STREAM_{env_name(stream.name)}_{key.upper()} (what to find, e.g. "a person|a car")'
                )
        if not wanted:
            return
        accepted = tuple(getattr(model, "stream_options", ()))
        names = {"prompts": "PROMPTS", "regions": "ROI", "training_data": "TRAINING_DATA"}
        for key in wanted:
            if key not in accepted:
                raise ConfigError(
                    f"STREAM_{env_name(stream.name)}_{names.get(key, key.upper())} is set but model "
                    f"{self.config.model_of(stream)!r} ({getattr(model, 'task_type', '?')}) does not take it; "
                    f"PROMPTS needs a CLIP or Perception Encoder model (clip/ViT-B-16, "
                    f"perception_encoder/PE-Core-B16-224) or Grounding DINO (grounding_dino/groundingdino_swint_ogc), "
                    f"ROI an OCR model (pp_ocr, trocr/trocr-base-printed), "
                    f"TRAINING_DATA an OWLv2 model (owlv2/owlv2-base-patch16-ensemble)"
                )

    def _first_options(self, stream: StreamConfig, model: Any) -> dict[str, Any]:
        """The stream's per-image options its first model gets (the rest go to its second model)."""
        second = None
        if stream.second_model_id and self.second is not None and stream.second_model_id in self.second.records:
            second = self.second.records[stream.second_model_id].model
        return split_options(stream.model_options, model, second)[0]

    async def _ensure_model(self, model_id: str) -> ModelRecord:
        """The record of ``model_id``, loading the model and starting its stage on first use."""
        record = self.models.get(model_id)
        if record is None:
            model = await self._load_model(model_id)
            record = self.models.get(model_id)  # another add_stream may have won the race
            if record is None:
                record = self._make_model_record(model_id, model)
                engine = getattr(model, "engine", None)
                self.model_info[model_id] = {
                    "precision": getattr(model, "precision", "fp32"),
                    "precision_reason": getattr(engine, "precision_reason", ""),
                    "providers": list(getattr(model, "providers", [])),
                    "concurrency": record.stage.concurrency,
                    "concurrency_reason": getattr(engine, "concurrency_reason", ""),
                }
                self.models[model_id] = record
                self._changed.set()
        return record

    def _default_confidence(self, model: Any) -> float:
        """CONFIDENCE when the user set it, else the model's own default (OWLv2: 0.99, as Roboflow)."""
        settings = self.config.models
        own = getattr(model, "default_confidence", None)
        if own is not None and "confidence" not in settings.model_fields_set:
            return float(own)
        return settings.confidence

    def _batch_size(self, model: Any, concurrency: int) -> int:
        settings = self.config.models
        return batch_size_for(
            list(getattr(model, "providers", [])),
            concurrency,
            settings.max_batch_size,
            explicit="max_batch_size" in settings.model_fields_set,
        )

    def _make_model_record(self, model_id: str, model: Any) -> ModelRecord:
        assert self.router is not None
        # One worker per batch the model may have in flight (its run plan, models/speed/concurrency.py);
        # the stage keeps each stream's results in order whatever finishes first.
        concurrency = max(1, int(getattr(model, "concurrency", 1) or 1))
        executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"infer-{model_id}"[:40])
        self.live.set_colors(model_id, model_colors(model))
        stage = InferenceStage(
            model,
            model_id=model_id,
            executor=executor,
            on_result=self.second.dispatch if self.second is not None else self.router,
            on_error=self.router.record_error,
            default_confidence=self._default_confidence(model),
            max_batch_size=self._batch_size(model, concurrency),
            concurrency=concurrency,
        )
        task = asyncio.create_task(stage.run(), name=f"stage:{model_id}")
        return ModelRecord(model_id=model_id, model=model, stage=stage, task=task, executor=executor)

    async def _retire_model(self, record: ModelRecord) -> None:
        """Stop a model nobody uses any more: its stage, its executor, and the loaded model."""
        if self.models.get(record.model_id) is record:
            del self.models[record.model_id]  # first, so a concurrent add_stream starts afresh
            self.model_info.pop(record.model_id, None)
        record.stage.stop()
        _, pending = await asyncio.wait([record.task], timeout=RETIRE_TIMEOUT_S)
        for task in pending:
            task.cancel()
        record.executor.shutdown(wait=False, cancel_futures=True)
        self.model_load_s.pop(record.model_id, None)
        if self._manager is not None and not any(r.model is record.model for r in self.models.values()):
            with contextlib.suppress(EdgeAgentError):
                self._manager.remove(record.model_id)
        self._changed.set()
        log.info("model %s unloaded: no stream uses it any more", record.model_id)

    # -- streams -------------------------------------------------------------------------------

    def _start_stream(self, stream: StreamConfig, spec: SourceSpec, options: SourceOptions, model: ModelRecord) -> None:
        loop = asyncio.get_running_loop()
        slot = LatestFrameSlot(loop, wait_for_consumer=options.mode == "every")
        runner = StreamRunner(stream.name, spec, options, slot)
        model.stage.attach(
            StreamBinding(
                name=stream.name,
                slot=slot,
                confidence=stream.confidence,
                live=options.mode == "live",
                options=self._first_options(stream, model.model) or None,
                mask_output=stream.masks,
                gate=self.second.gate(stream) if self.second is not None else None,
            )
        )
        if stream.second_model_id and self.second is not None:
            self.second.attach(stream, model.model)
        model.streams.add(stream.name)
        if self.tracking is not None:
            # files are timed by their frames' timestamps, live sources by capture time
            self.tracking.configure(stream.name, stream.tracking_options(), media_time=spec.kind == "file")
        self.live.track(stream.name)
        task = asyncio.create_task(runner.run(), name=f"stream:{stream.name}")
        self.streams[stream.name] = StreamRecord(
            config=stream, model_id=model.model_id, spec=spec, options=options, slot=slot, runner=runner, task=task
        )
        self._changed.set()

    def _check_free(self, name: str) -> None:
        if name in self.streams or env_name(name) in {env_name(n) for n in self.streams}:
            raise StreamExistsError(name)

    async def add_stream(self, stream: StreamConfig) -> None:
        """Start a new stream. StreamExistsError for a taken name, ConfigError for a bad URL or
        options, ModelLoadError when its model cannot be loaded."""
        self._check_free(stream.name)
        stream = self.config.with_default_model(stream)
        spec, options = prepare_source(stream, self.config)
        model_id = self.config.model_of(stream)
        record = await self._ensure_model(model_id)
        if stream.second_model_id and self.second is not None:
            await self.second.ensure(stream.second_model_id)
        self._check_free(stream.name)  # added meanwhile by a concurrent request
        if self.models.get(model_id) is not record:  # retired while we waited for it
            record = await self._ensure_model(model_id)
            self._check_free(stream.name)
        self._check_model_options(stream)
        if self.vlm is not None:
            await self.vlm.add(stream)
        self._start_stream(stream, spec, options, record)
        log.info("stream %s added (%s, model %s)", stream.name, spec.display, model_id)

    async def remove_stream(self, name: str) -> None:
        """Stop a stream and forget it (its model too, when no other stream uses it);
        UnknownStreamError when there is no such stream."""
        record = self.streams.pop(name, None)
        if record is None:
            raise UnknownStreamError(name, list(self.streams))
        record.task.cancel()
        await asyncio.wait([record.task], timeout=RETIRE_TIMEOUT_S)
        record.slot.close()
        self.live.forget(name)
        if self.vlm is not None:
            self.vlm.forget(name)
        if self.tracking is not None:
            self.tracking.forget(name)
        if self.router is not None:
            self.router.metrics.pop(name, None)
        if self.second is not None:
            await self.second.detach(name)
        model = self.models.get(record.model_id)
        if model is not None:
            model.stage.detach(name)
            model.streams.discard(name)
            if not model.streams:
                await self._retire_model(model)
        self._changed.set()
        log.info("stream %s removed", name)

    #: per-stream options a running stream may change (PATCH /streams/NAME): what its model and
    #: second model take per frame; the rest (URL, model, reading) needs the stream re-added
    LIVE_OPTIONS = frozenset(
        {
            "confidence",
            "prompts",
            "roi",
            "training_data",
            "mask_output",
            "mask_tolerance",
            "second_classes",
            "second_padding",
        }
    )

    def update_stream(self, name: str, changes: dict[str, Any]) -> StreamConfig:
        """Change a running stream's per-frame options in place; ConfigError (400) for any other
        field or a value its model does not take. Text prompts are embedded once per new set."""
        record = self.streams.get(name)
        if record is None:
            raise UnknownStreamError(name, list(self.streams))
        fixed = sorted(set(changes) - self.LIVE_OPTIONS)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)}: cannot change on a running stream (remove and add it again); "
                f"changeable: {', '.join(sorted(self.LIVE_OPTIONS))}"
            )
        from pydantic import ValidationError

        try:
            updated = StreamConfig.model_validate({**record.config.model_dump(exclude_defaults=True), **changes})
        except ValidationError as exc:  # inputs never echoed: the record holds the URL
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ConfigError(problems) from None
        self._check_model_options(updated)
        model = self.models[record.model_id]
        binding = model.stage.binding(name)
        if binding is not None:
            binding.confidence = updated.confidence
            binding.options = self._first_options(updated, model.model) or None
            binding.mask_output = updated.masks
        if self.second is not None:
            self.second.update(updated, model.model)
        record.config = updated
        log.info("stream %s changed: %s", name, ", ".join(sorted(changes)))
        return updated

    # -- stats -------------------------------------------------------------------------------

    def stream_stats(self, name: str) -> dict[str, Any]:
        record = self.streams.get(name)
        if record is None:
            raise UnknownStreamError(name, list(self.streams))
        entry = _plain(record.runner.stats)
        entry["model_id"] = record.model_id
        metrics = self.router.metrics if self.router else {}
        entry["model_precision"] = self.model_info.get(record.model_id, {}).get("precision")
        if name in metrics:
            entry.update(metrics[name].snapshot())
        tracking = self.tracking.stats(name) if self.tracking is not None else None
        if tracking is not None:
            entry["tracking"] = tracking
        if self.second is not None:
            entry.update(self.second.stream_stats(name))
        return entry

    def stats(self) -> dict[str, Any]:
        return {
            "type": "stats",
            "agent_id": self.config.agent.agent_id,
            "run_id": self.run_id,
            "time": time.time(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "streams": {name: self.stream_stats(name) for name in list(self.streams)},
            "models": {
                model_id: {
                    "streams": sorted(r.streams),
                    "batches": r.stage.batches,
                    "frames": r.stage.frames,
                    **self.model_info.get(model_id, {}),
                }
                for model_id, r in self.models.items()
            },
            "sinks": {type(s).__name__: s.counters() for s in self.sinks},
            **({"vlm": self.vlm.counters()} if self.vlm is not None and self.vlm.askers else {}),
        }

    async def _stats_loop(self) -> None:
        interval = self.config.agent.stats_interval
        while True:
            await asyncio.sleep(interval)
            self._publish_stats()

    def _publish_stats(self) -> None:
        payload = self.stats()
        for sink in self.sinks:
            try:
                sink.publish_stats(payload)
            except Exception:
                log.exception("sink %s failed to take stats", type(sink).__name__)

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- run -----------------------------------------------------------------------------------

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT, ``run_seconds``, or no stream can produce frames any more.

        Returns the exit code (0; 1 when a task crashed). Raises ConfigError or ModelLoadError for
        what stops the start-up, and NoStreamLeftError (after an orderly shutdown) when every
        stream failed; the CLI maps them to 2 or 1 by type.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._install_signal_handlers(loop)
        sources = [(self.config.with_default_model(s), *prepare_source(s, self.config)) for s in self.config.streams]
        # Before anything slow: a port in use is a configuration error, not a traceback later.
        health_sock = self._bind_health()
        if self.config.using_sample:
            log.info(
                "no STREAMS set: playing the bundled sample clip through %s. Point the agent at cameras with "
                'STREAMS="door=rtsp://10.0.0.5/live;yard=/dev/video0" and at a broker with '
                "MQTT_HOST=broker.local (see `edge-agent config` and the README)",
                self.config.agent.model_id,
            )
        background: list[asyncio.Task[Any]] = []
        health = None
        try:
            if health_sock is not None:
                # Served from the start, so /readyz can say what start-up still waits for.
                from edge_agent.agent.health import start_health_server

                health = await start_health_server(self, health_sock, http_token(self.config.agent))
                health_sock = None
            self._open_state()
            await self._start_sinks()
            try:
                for model_id in dict.fromkeys(self.config.model_of(stream) for stream, _, _ in sources):
                    await self._ensure_model(model_id)
                assert self.second is not None
                for model_id in dict.fromkeys(s.second_model_id for s, _, _ in sources if s.second_model_id):
                    await self.second.ensure(model_id)
            except StopRequested:
                log.info("%s while starting: stopping before any stream started", self._stop_reason)
                exit_code = EXIT_OK
            else:
                for stream, _, _ in sources:
                    self._check_model_options(stream)
                assert self.vlm is not None
                for stream, _, _ in sources:
                    await self.vlm.add(stream)
                for stream, spec, options in sources:
                    self._start_stream(stream, spec, options, self.models[self.config.model_of(stream)])
                background.append(asyncio.create_task(self._stats_loop(), name="stats"))
                background.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
                self.ready = True
                self.notifier.ready(f"running {len(self.streams)} stream(s) on {len(self.models)} model(s)")
                log.info("agent %s running %d stream(s)", self.config.agent.agent_id, len(self.streams))
                exit_code = await self._wait()
        except BaseException:
            for task in background:
                task.cancel()
            await self._abort()
            if health is not None:
                await health.cleanup()
            self.live.close()
            self._finish_tracking()
            await self._close_sinks(self.config.agent.shutdown_timeout)
            self._close_state()
            raise
        finally:
            if health_sock is not None:
                health_sock.close()
        self.notifier.stopping()
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        await self._shutdown(deadline)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if health is not None:
            await health.cleanup()
        self.live.close()
        self._finish_tracking()
        # the last counters (a file's whole run, a second model's last runs) before the sinks go
        self._publish_stats()
        await self._close_sinks(max(deadline - time.monotonic(), 0.5))
        self._close_state()
        for record in self.models.values():
            record.executor.shutdown(wait=False, cancel_futures=True)
        if self.second is not None:
            self.second.close()
        log.info("agent stopped")
        if self._all_failed:
            raise NoStreamLeftError(self._all_failed)
        return exit_code

    def _bind_health(self) -> socket.socket | None:
        agent = self.config.agent
        if not agent.health_port:
            return None
        from edge_agent.agent.web.listen import bind_health_socket

        return bind_health_socket(agent.health_host, agent.health_port)

    def _ended_result(self) -> int | None:
        """With every stream ended: say so and give the exit code; None while one still runs."""
        records = list(self.streams.values())
        if not records or not all(r.task.done() for r in records):
            return None
        failed = {r.config.name: r.runner.stats.last_error or "failed" for r in records if r.runner.state == "failed"}
        if self.config.agent.control_api:
            log.info("no stream can produce frames any more; waiting for new ones on the control API")
            return None
        if failed and len(failed) == len(records):
            self._all_failed = failed  # raised once everything is shut down
            return EXIT_OK
        if failed:
            log.warning("every stream has ended; failed: %s", ", ".join(failed))
        else:
            log.info("every stream has finished")
        return EXIT_OK

    async def _wait(self) -> int:
        """Block until a stop reason; a crashed stage or runner is a bug, so it stops the agent.

        With the control API on, the agent keeps running when every stream has ended or been
        removed (more may be added); without it, a set of ended streams ends the run.
        """
        stop_task = asyncio.create_task(self._stop.wait(), name="stop-signal")
        timer = asyncio.create_task(asyncio.sleep(self.run_seconds), name="run-timer") if self.run_seconds else None
        exit_code = EXIT_OK
        reported: set[asyncio.Task[Any]] = set()
        try:
            while True:
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait(), name="streams-changed")
                tasks = [r.task for r in self.streams.values()] + [r.task for r in self.models.values()]
                tasks += self.second.tasks if self.second is not None else []
                watched = {stop_task, changed, *tasks} - reported
                if timer is not None:
                    watched.add(timer)
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if stop_task in done:
                    log.info("%s: stopping", self._stop_reason)
                    break
                if timer is not None and timer in done:
                    break
                crashed = [t for t in done if t is not changed and not t.cancelled() and t.exception() is not None]
                if crashed:
                    for task in crashed:
                        log.error("task %s crashed", task.get_name(), exc_info=task.exception())
                    exit_code = EXIT_TRANSIENT
                    break
                newly_ended = done - {changed}
                reported |= newly_ended
                if newly_ended:
                    result = self._ended_result()
                    if result is not None:
                        # Let the stages drain the last frames before shutting down.
                        await self._drain_slots()
                        exit_code = result
                        break
        finally:
            stop_task.cancel()
            if timer is not None:
                timer.cancel()
        return exit_code

    async def _drain_slots(self) -> None:
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            pending = any(r.slot.has_frame for r in self.streams.values())
            busy = any(r.stage.busy for r in self.models.values())
            busy = busy or (self.second is not None and self.second.busy)
            if not pending and not busy:
                return
            await asyncio.sleep(0.02)

    async def _shutdown(self, deadline: float) -> None:
        tasks = [r.task for r in self.streams.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.1))
        for record in self.models.values():
            record.stage.stop()
        stage_tasks = [r.task for r in self.models.values()]
        if stage_tasks:
            _, pending = await asyncio.wait(stage_tasks, timeout=max(deadline - time.monotonic(), 0.1))
            for task in pending:
                task.cancel()
        if self.vlm is not None:  # before the sinks close: an answer being published still goes out
            await self.vlm.stop(max(min(deadline - time.monotonic(), 5.0), 0.1))
        if self.second is not None:  # after the first stages: their last results are handed over
            await self.second.stop(deadline - time.monotonic())

    async def _abort(self) -> None:
        """Cancel whatever started before a start-up failure (bounded, never raises)."""
        tasks = [r.task for r in self.streams.values()] + [r.task for r in self.models.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=RETIRE_TIMEOUT_S)
        for record in self.models.values():
            record.executor.shutdown(wait=False, cancel_futures=True)
        if self.vlm is not None:
            await self.vlm.stop(1.0)
        if self.second is not None:
            self.second.close()

    async def _close_sinks(self, timeout: float) -> None:
        for sink in self.sinks:
            try:
                await sink.close(timeout)
            except Exception:
                log.exception("closing sink %s failed", type(sink).__name__)
