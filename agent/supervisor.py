"""The supervisor: owns every task of a running agent and tears them down in order.

Start-up order: sinks (so ``online`` is out early), models (in an executor: a download or a
TensorRT build must not freeze the loop), then one stage per model and one runner per stream.
Shutdown order is the reverse of the data flow: stop sources, let each stage finish its batch in
flight, flush the sinks, publish ``offline``. Python 3.10 has no ``asyncio.TaskGroup``, so the
task bookkeeping is done by hand here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from typing import Any

from agent.errors import ConfigError
from agent.settings import Config, StreamConfig, env_name, mqtt_config, source_options
from agent.systemd_notify import SystemdNotifier
from models import ModelManager
from models.errors import (
    ApiAuthError,
    EdgeAgentError,
    InvalidModelIdError,
    ModelDisabledError,
    ModelNotCachedError,
    ModelNotFoundError,
    UnsupportedModelTypeError,
)
from pipelines.inference import InferenceStage, StreamBinding
from pipelines.results import ResultRouter
from pipelines.sinks.base import Sink
from pipelines.sinks.mqtt import MqttSink
from pipelines.sinks.stdout import StdoutSink
from pipelines.slot import LatestFrameSlot
from pipelines.sources.options import SourceOptions
from pipelines.sources.runner import StreamRunner
from pipelines.sources.spec import SourceSpec

log = logging.getLogger("edge_agent.supervisor")

# Frames per inference call when MAX_BATCH_SIZE is not set and the model runs on the CPU: past a
# few images a CPU batch only spills the caches (YOLOv8n-sized at 640 on 2 cores: 49 ms/image at
# batch 2-4, 57 at batch 8). Accelerators keep the model layer's larger default.
CPU_BATCH_SIZE = 4

# Model errors that no retry or restart can fix: wrong id, wrong key, disabled family, not cached
# while offline. Network trouble is not among them: systemd restarts the agent for that.
PERMANENT_MODEL_ERRORS = (
    InvalidModelIdError,
    ModelNotFoundError,
    UnsupportedModelTypeError,
    ModelDisabledError,
    ApiAuthError,
    ModelNotCachedError,
)


def _plain(stats: Any) -> dict[str, Any]:
    if is_dataclass(stats) and not isinstance(stats, type):
        return asdict(stats)
    return dict(stats)


class Supervisor:
    """Runs one agent from a validated :class:`Config` until stopped."""

    def __init__(self, config: Config, *, run_seconds: float | None = None) -> None:
        self.config = config
        self.run_seconds = run_seconds
        self.notifier = SystemdNotifier()
        self.started_monotonic = time.monotonic()
        self.sinks: list[Sink] = []
        self.router: ResultRouter | None = None
        self.stages: dict[str, InferenceStage] = {}
        self.runners: dict[str, StreamRunner] = {}
        self.stream_models: dict[str, str] = {}
        self.slots: dict[str, LatestFrameSlot] = {}
        self.runner_tasks: dict[str, asyncio.Task[Any]] = {}
        self.stage_tasks: dict[str, asyncio.Task[Any]] = {}
        # Per model id: the precision it runs at, why, and its providers (stats and metrics).
        self.model_info: dict[str, dict[str, Any]] = {}
        self._manager: ModelManager | None = None
        self._executors: list[ThreadPoolExecutor] = []
        self._stop = asyncio.Event()
        # Set whenever streams are added or removed at run time, so _wait watches the new set.
        self._changed = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    # -- start-up ------------------------------------------------------------------------------

    def _build_source(self, stream: StreamConfig) -> tuple[StreamConfig, SourceSpec, SourceOptions]:
        try:
            spec = SourceSpec.parse(stream.url)
            options = source_options(stream, self.config)
            options.validate_for(spec)
        except EdgeAgentError as exc:
            raise ConfigError(f"stream {stream.name!r}: {exc}") from None
        return stream, spec, options

    async def _start_sinks(self) -> None:
        agent = self.config.agent
        if agent.mqtt_host:
            sink = MqttSink(mqtt_config(self.config))
            await sink.start()
            self.sinks.append(sink)
        if self.config.stdout_enabled:
            stdout = StdoutSink()
            await stdout.start()
            self.sinks.append(stdout)
        self.router = ResultRouter(agent.agent_id, self.sinks)

    def _model_status(self, message: str) -> None:
        """Called from the loading thread: downloads and engine builds show in `systemctl status`."""
        log.info("%s", message)
        self.notifier.status(message)
        self.notifier.extend_timeout(900)

    async def _load_model(self, model_id: str) -> Any:
        loop = asyncio.get_running_loop()
        if self._manager is None:
            self._manager = ModelManager(max_active=max(self.config.models.max_active_models, 1))
        self.notifier.status(f"loading model {model_id}")
        # A first download or a TensorRT engine build can take minutes: keep systemd patient.
        self.notifier.extend_timeout(900)
        started = time.monotonic()
        try:
            model = await loop.run_in_executor(
                None,
                functools.partial(self._manager.get, model_id, self.config.models.api_key, status=self._model_status),
            )
        except PERMANENT_MODEL_ERRORS as exc:
            # Restarting cannot fix these; exit 2 tells systemd (RestartPreventExitStatus=2).
            users = ", ".join(s.name for s in self.config.streams if s.model_id == model_id)
            raise ConfigError(f"model {model_id!r} (streams: {users or 'none yet'}): {exc}") from None
        log.info("model %s ready in %.1f s", model_id, time.monotonic() - started)
        return model

    async def _ensure_stage(self, model_id: str) -> InferenceStage:
        """The stage of ``model_id``, loading the model and starting the stage on first use."""
        stage = self.stages.get(model_id)
        if stage is None:
            model = await self._load_model(model_id)
            stage = self.stages.get(model_id)  # another add_stream may have won the race
            if stage is None:
                engine = getattr(model, "engine", None)
                self.model_info[model_id] = {
                    "precision": getattr(model, "precision", "fp32"),
                    "precision_reason": getattr(engine, "precision_reason", ""),
                    "providers": list(getattr(model, "providers", [])),
                }
                stage = self._make_stage(model_id, model)
                self.stages[model_id] = stage
                self.stage_tasks[model_id] = asyncio.create_task(stage.run(), name=f"stage:{model_id}")
                self._changed.set()
        return stage

    def _batch_size(self, model: Any) -> int:
        settings = self.config.models
        if "max_batch_size" in settings.model_fields_set:
            return settings.max_batch_size
        if list(getattr(model, "providers", [])) == ["CPUExecutionProvider"]:
            return min(CPU_BATCH_SIZE, settings.max_batch_size)
        return settings.max_batch_size

    def _make_stage(self, model_id: str, model: Any) -> InferenceStage:
        assert self.router is not None
        # One worker per model: two batches of the same model in parallel only fight over the
        # same cores, and a single worker keeps per-model ordering simple.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{model_id}")
        self._executors.append(executor)
        return InferenceStage(
            model,
            model_id=model_id,
            executor=executor,
            on_result=self.router,
            on_error=self.router.record_error,
            default_confidence=self.config.models.confidence,
            max_batch_size=self._batch_size(model),
        )

    def _start_stream(self, stream: StreamConfig, spec: SourceSpec, options: SourceOptions) -> None:
        loop = asyncio.get_running_loop()
        slot = LatestFrameSlot(loop, wait_for_consumer=options.mode == "every")
        runner = StreamRunner(stream.name, spec, options, slot)
        self.runners[stream.name] = runner
        self.slots[stream.name] = slot
        self.stream_models[stream.name] = stream.model_id
        self.stages[stream.model_id].attach(
            StreamBinding(name=stream.name, slot=slot, confidence=stream.confidence, live=options.mode == "live")
        )
        self.runner_tasks[stream.name] = asyncio.create_task(runner.run(), name=f"stream:{stream.name}")
        self._changed.set()

    # -- streams at run time (control API) --------------------------------------------------------

    async def add_stream(self, stream: StreamConfig) -> None:
        """Start a new stream; ConfigError for a taken name, a bad URL or an unusable model."""
        if stream.name in self.runners or env_name(stream.name) in {env_name(n) for n in self.runners}:
            raise ConfigError(f"stream {stream.name!r} exists already; remove it first")
        built = self._build_source(stream)
        await self._ensure_stage(stream.model_id)
        if stream.name in self.runners:  # added meanwhile by a concurrent request
            raise ConfigError(f"stream {stream.name!r} exists already; remove it first")
        self._start_stream(*built)
        log.info("stream %s added (%s, model %s)", stream.name, built[1].display, stream.model_id)

    async def remove_stream(self, name: str) -> None:
        """Stop a stream and forget it; KeyError when there is no such stream."""
        task = self.runner_tasks.pop(name)
        task.cancel()
        await asyncio.wait([task], timeout=5.0)
        model_id = self.stream_models.pop(name)
        self.stages[model_id].detach(name)
        self.slots.pop(name).close()
        self.runners.pop(name)
        if self.router is not None:
            self.router.metrics.pop(name, None)
        self._changed.set()
        log.info("stream %s removed", name)

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        streams: dict[str, Any] = {}
        metrics = self.router.metrics if self.router else {}
        for name, runner in self.runners.items():
            entry = _plain(runner.stats)
            entry["model_id"] = self.stream_models.get(name)
            entry["model_precision"] = self.model_info.get(entry["model_id"] or "", {}).get("precision")
            if name in metrics:
                entry.update(metrics[name].snapshot())
            streams[name] = entry
        return {
            "type": "stats",
            "agent_id": self.config.agent.agent_id,
            "time": time.time(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "streams": streams,
            "models": {model_id: dict(info) for model_id, info in self.model_info.items()},
            "sinks": {type(s).__name__: s.counters() for s in self.sinks},
        }

    async def _stats_loop(self) -> None:
        interval = self.config.agent.stats_interval
        while True:
            await asyncio.sleep(interval)
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

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT, ``run_seconds``, or every stream finished. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)

        sources = [self._build_source(stream) for stream in self.config.streams]
        if self.config.using_sample:
            log.info(
                "no STREAMS set: playing the bundled sample clip through %s. Point the agent at cameras with "
                'STREAMS="door=rtsp://user:pass@10.0.0.5/live;yard=/dev/video0" and at a broker with '
                "MQTT_HOST=broker.local (see `edge-agent config` and the README)",
                self.config.agent.model_id,
            )
        await self._start_sinks()
        background: list[asyncio.Task[Any]] = []
        health = None
        try:
            for model_id in dict.fromkeys(stream.model_id for stream, _, _ in sources):
                await self._ensure_stage(model_id)
            for built in sources:
                self._start_stream(*built)
            background.append(asyncio.create_task(self._stats_loop(), name="stats"))
            background.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
            health = await self._start_health()
            self.notifier.ready(f"running {len(self.runners)} stream(s) on {len(self.stages)} model(s)")
            log.info("agent %s running %d stream(s)", self.config.agent.agent_id, len(self.runners))

            exit_code = await self._wait()
        except BaseException:
            for task in background:
                task.cancel()
            if health is not None:
                await health.cleanup()
            await self._close_sinks(self.config.agent.shutdown_timeout)
            raise
        self.notifier.stopping()
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        await self._shutdown(deadline)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if health is not None:
            await health.cleanup()
        await self._close_sinks(max(deadline - time.monotonic(), 0.5))
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        log.info("agent stopped")
        return exit_code

    async def _wait(self) -> int:
        """Block until a stop reason; a crashed stage or runner is a bug, so it stops the agent.

        With the control API on, the agent keeps running when every stream has finished or been
        removed (more may be added); without it, a finished set of file streams ends the run.
        """
        stop_task = asyncio.create_task(self._stop.wait(), name="stop-signal")
        timer = asyncio.create_task(asyncio.sleep(self.run_seconds), name="run-timer") if self.run_seconds else None
        exit_code = 0
        reported: set[asyncio.Task[Any]] = set()
        try:
            while True:
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait(), name="streams-changed")
                watched = {stop_task, changed, *self.runner_tasks.values(), *self.stage_tasks.values()} - reported
                if timer is not None:
                    watched.add(timer)
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
                if stop_task in done or (timer is not None and timer in done):
                    break
                crashed = [t for t in done if t is not changed and not t.cancelled() and t.exception() is not None]
                if crashed:
                    for task in crashed:
                        log.error("task %s crashed", task.get_name(), exc_info=task.exception())
                    exit_code = 1
                    break
                reported |= done - {changed}
                runners = list(self.runner_tasks.values())
                if runners and all(t.done() for t in runners) and not self.config.agent.control_api:
                    log.info("every stream has finished")
                    # Let the stages drain the last frames before shutting down.
                    await self._drain_slots()
                    break
        finally:
            stop_task.cancel()
            if timer is not None:
                timer.cancel()
        return exit_code

    async def _drain_slots(self) -> None:
        deadline = time.monotonic() + self.config.agent.shutdown_timeout
        while time.monotonic() < deadline:
            pending = any(slot.has_frame for slot in self.slots.values())
            busy = any(stage.busy for stage in self.stages.values())
            if not pending and not busy:
                return
            await asyncio.sleep(0.02)

    async def _shutdown(self, deadline: float) -> None:
        for task in self.runner_tasks.values():
            task.cancel()
        if self.runner_tasks:
            await asyncio.wait(self.runner_tasks.values(), timeout=max(deadline - time.monotonic(), 0.1))
        for stage in self.stages.values():
            stage.stop()
        if self.stage_tasks:
            _, pending = await asyncio.wait(self.stage_tasks.values(), timeout=max(deadline - time.monotonic(), 0.1))
            for task in pending:
                task.cancel()

    async def _close_sinks(self, timeout: float) -> None:
        for sink in self.sinks:
            try:
                await sink.close(timeout)
            except Exception:
                log.exception("closing sink %s failed", type(sink).__name__)

    async def _start_health(self) -> Any:
        port = self.config.agent.health_port
        if not port:
            return None
        from agent.health import start_health_server

        return await start_health_server(self, self.config.agent.health_host, port)
