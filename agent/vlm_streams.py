"""The agent's vision-language askers: one per VLM model id, fed by the streams that set VLM prompts.

Kept apart from the supervisor: it loads each VLM model once (through the supervisor's loader, so
downloads report to systemd and stop on SIGTERM), taps the result router for frames, publishes
answers through every sink that takes them and shows the newest answer in the live view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge_agent.agent.errors import ConfigError
from edge_agent.pipelines.live import LiveView
from edge_agent.pipelines.sinks.base import Sink
from edge_agent.pipelines.stream_config import StreamConfig, env_name
from edge_agent.pipelines.vlm_answers import StreamPrompt, VLMAsker, answer_text

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
        self._lock = asyncio.Lock()

    async def add(self, stream: StreamConfig) -> None:
        """Start asking about ``stream`` if it sets VLM prompts (loading its VLM on first use)."""
        model_id = vlm_model_of(stream, self.config)
        if model_id is None:
            return
        async with self._lock:
            asker = self.askers.get(model_id)
            if asker is None:
                model = await self._load(model_id)
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
                )
                asker.start(asyncio.get_running_loop())
                self.askers[model_id] = asker
                log.info("VLM %s ready (%s)", model_id, ", ".join(getattr(model, "providers", [])))
            asker.prompts[stream.name] = stream_prompt(stream)

    def on_frame(self, frame: Any, prediction: Any) -> None:
        """The result router's tap: every processed frame, on the event loop."""
        for asker in self.askers.values():
            asker.on_frame(frame, prediction)

    def ask_about_event(self, stream: str, event: str, event_id: str, snapshot: Any) -> bool:
        """The tracking/events hook: ask the stream's event prompt about an object's best snapshot."""
        return any(a.ask_about_event(stream, event, event_id, snapshot) for a in self.askers.values())

    def forget(self, stream: str) -> None:
        for asker in self.askers.values():
            asker.forget(stream)

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
                "answer": answer_text(message.get("response")),
                "time": message.get("frame_time"),
                "answer_ms": message.get("answer_ms"),
            },
        )

    def counters(self) -> dict[str, Any]:
        return {model_id: asker.counters() for model_id, asker in self.askers.items()}

    async def stop(self, timeout: float = 5.0) -> None:
        for asker in self.askers.values():
            await asker.stop(timeout)
