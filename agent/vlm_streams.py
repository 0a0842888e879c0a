"""The agent's vision-language askers: one per VLM model id, fed by the streams that set VLM prompts.

Kept apart from the supervisor: it loads each VLM model once (through the supervisor's loader, so
downloads report to systemd and stop on SIGTERM), taps the result router for frames, publishes
answers through every sink that takes them and shows the newest answer in the live view.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge_agent.agent.errors import ConfigError, ModelLoadError
from edge_agent.pipelines.live import LiveView
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.stream_config import StreamConfig, env_name
from edge_agent.pipelines.vlm_answers import StreamPrompt, VLMAsker, answer_summary
from edge_agent.pipelines.vlm_process import VLMProcess, VLMProcessError

if TYPE_CHECKING:  # agent.settings imports validation, which asks vlm_model_of
    from edge_agent.agent.settings import Config

log = logging.getLogger("edge_agent.vlm")


def vlm_model_of(stream: StreamConfig, config: Config) -> str | None:
    """The VLM a stream asks (its VLM_MODEL_ID, else the agent's), or None when it asks nothing."""
    if stream.vlm_prompt is None and stream.vlm_event_prompt is None:
        return None
    model_id = stream.vlm_model_id or config.agent.vlm_model_id
    if model_id is None:
        raise ConfigError(
            f"STREAM_{env_name(stream.name)}_VLM_PROMPT is set but no vision-language model is named: set "
            f"VLM_MODEL_ID (e.g. florence-2-base) or STREAM_{env_name(stream.name)}_VLM_MODEL_ID"
        )
    return model_id


# tracking event types -> the VLM_EVENTS names that ask about them
EVENT_KINDS = {"track.end": "track_end", "zone.enter": "zone_enter"}


class SnapshotTap:
    """A snapshot store that also keeps the newest JPEG of the last ``keep`` tracks in memory."""

    def __init__(self, store: Any, keep: int = 64) -> None:
        self._store = store
        self._keep = keep
        self._recent: OrderedDict[str, bytes] = OrderedDict()

    def put(self, key: str, jpeg: bytes) -> None:
        self._recent[key] = jpeg
        self._recent.move_to_end(key)
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)
        self._store.put(key, jpeg)

    def get(self, key: str) -> bytes | None:
        found = self._recent.get(key)
        return found if found is not None else self._store.get(key)

    def __getattr__(self, name: str) -> Any:  # key_of, close, total_bytes, ... of the store
        return getattr(self._store, name)


class VLMEventOutlet:
    """Passes events, counts and snapshots on; asks the VLM about the events its streams want."""

    def __init__(self, outlet: Any, vlm: VLMStreams, snapshots: Callable[[], Any]) -> None:
        self._outlet = outlet
        self._vlm = vlm
        self._snapshots = snapshots

    def publish_event(self, stream: str, event: dict[str, Any]) -> None:
        self._outlet.publish_event(stream, event)
        kind = EVENT_KINDS.get(str(event.get("type")))
        event_id = event.get("event_id")
        store = self._snapshots()
        if kind is None or not isinstance(event_id, str) or store is None or not self._vlm.asks_about(stream, kind):
            return
        key = store.key_of(event_id)
        jpeg = store.get(key) if key is not None else None
        if jpeg is None:
            log.debug("no snapshot for event %s of stream %s: the VLM is not asked", event_id, stream)
            return
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            self._vlm.ask_about_event(stream, kind, event_id, image)

    def publish_counts(self, stream: str, counts: dict[str, int]) -> None:
        self._outlet.publish_counts(stream, counts)

    def publish_snapshot(self, stream: str, cls: str, jpeg: bytes) -> None:
        self._outlet.publish_snapshot(stream, cls, jpeg)


def stream_prompt(stream: StreamConfig) -> StreamPrompt:
    return StreamPrompt(stream.vlm_prompt, stream.vlm_interval, stream.vlm_event_prompt, stream.vlm_events)


class VLMStreams:
    def __init__(
        self,
        config: Config,
        load: Callable[[str], Awaitable[Any]],
        sinks: Sequence[Sink],
        live: LiveView,
        run_id: str,
    ) -> None:
        self.config = config
        self._load = load
        self._sinks = sinks
        self._live = live
        self._run_id = run_id
        self.askers: dict[str, VLMAsker] = {}
        self._processes: list[VLMProcess] = []
        self._lock = asyncio.Lock()

    async def add(self, stream: StreamConfig) -> None:
        """Start asking about ``stream`` if it sets VLM prompts (loading its VLM on first use)."""
        model_id = vlm_model_of(stream, self.config)
        if model_id is None:
            return
        async with self._lock:
            asker = self.askers.get(model_id)
            if asker is None:
                model = await self._start_model(model_id, stream.name)
                if "prompt" not in tuple(getattr(model, "stream_options", ())):
                    raise ConfigError(
                        f"STREAM_{env_name(stream.name)}_VLM_PROMPT needs a vision-language model; {model_id!r} "
                        f"is a {getattr(model, 'task_type', '?')} model"
                    )
                agent = self.config.agent
                asker = VLMAsker(
                    model,
                    model_id,
                    {},
                    agent_id=agent.agent_id,
                    queue_size=agent.vlm_queue_size,
                    publish=self._publish,
                    on_answer=self._show,
                    run_id=self._run_id,
                    threads=agent.vlm_threads,
                    cpu_share=agent.vlm_cpu_share,
                    nice=agent.vlm_nice,
                )
                asker.start(asyncio.get_running_loop())
                self.askers[model_id] = asker
                log.info("VLM %s ready (%s)", model_id, ", ".join(getattr(model, "providers", [])))
            asker.prompts[stream.name] = stream_prompt(stream)

    async def _start_model(self, model_id: str, stream: str) -> Any:
        """The VLM in its own low-priority process (VLM_PROCESS, the default), else loaded here."""
        agent = self.config.agent
        if not agent.vlm_process:
            return await self._load(model_id)
        process = VLMProcess(
            model_id,
            self.config.models.api_key,
            nice=agent.vlm_nice,
            threads=agent.vlm_threads,
            cpu_share=agent.vlm_cpu_share,
        )
        self._processes.append(process)
        log.info("starting the process of VLM %s", model_id)
        try:
            await asyncio.to_thread(process.start, lambda text: log.info("VLM %s: %s", model_id, text))
        except asyncio.CancelledError:
            process.cancel()  # the agent is stopping: the load in flight ends with the child
            raise
        except VLMProcessError as exc:
            raise ModelLoadError(model_id, [stream], exc) from exc
        return process

    def on_frame(self, frame: Any, prediction: Any) -> None:
        """The result router's tap: every processed frame, on the event loop."""
        for asker in self.askers.values():
            asker.on_frame(frame, prediction)

    def asks_about(self, stream: str, event: str) -> bool:
        """Does a VLM ask ``stream``'s event prompt on ``event`` (``track_end``, ``zone_enter``)?"""
        for asker in self.askers.values():
            config = asker.prompts.get(stream)
            if config is not None and config.event_prompt is not None and event in config.events:
                return True
        return False

    def ask_about_event(self, stream: str, event: str, event_id: str, snapshot: Any) -> bool:
        """The tracking/events hook: ask the stream's event prompt about an object's best snapshot."""
        return any(a.ask_about_event(stream, event, event_id, snapshot) for a in self.askers.values())

    def forget(self, stream: str) -> None:
        for asker in self.askers.values():
            asker.forget(stream)

    def event_outlet(self, outlet: Any, tracking: Any) -> Any:
        """The tracking step's outlet: ``outlet`` (the router), and for a ``track.end`` or ``zone.enter``
        event of a stream with VLM_EVENT_PROMPT, a question about the track's best snapshot.
        The step's snapshot store is wrapped to keep the newest snapshots in memory, since the store
        writes them to disk on its own thread, after the event may already be out."""
        if tracking.snapshots is not None and not isinstance(tracking.snapshots, SnapshotTap):
            tracking.snapshots = SnapshotTap(tracking.snapshots)
        return VLMEventOutlet(outlet, self, lambda: tracking.snapshots)

    def _publish(self, stream: str, message: dict[str, Any]) -> None:
        for sink in self._sinks:
            publish = getattr(sink, "publish_answer", None)
            if publish is not None:
                publish(stream, message)

    def _show(self, stream: str, message: dict[str, Any]) -> None:
        self._live.set_answer(
            stream,
            {
                "prompt": message.get("prompt"),
                "answer": answer_summary(message),
                "time": message.get("frame_time"),
                "answer_ms": message.get("answer_ms"),
            },
        )

    def counters(self) -> dict[str, Any]:
        return {model_id: asker.counters() for model_id, asker in self.askers.items()}

    async def stop(self, timeout: float = 5.0) -> None:
        for asker in self.askers.values():
            await asker.stop(timeout)
        for process in self._processes:
            await asyncio.to_thread(process.close)
