"""Vision-language prompts about streams: asked every N seconds (or about an event), answered off the
detector's path, published on their own topic.

A VLM answer takes seconds on an edge box, so it never runs per frame:

* :class:`IntervalClock` decides, per stream, when the next frame is due a prompt
  (``STREAM_<NAME>_VLM_PROMPT`` every ``..._VLM_INTERVAL`` seconds);
* :class:`AnswerQueue` holds the questions waiting for the model: bounded (``VLM_QUEUE_SIZE``),
  newest first, and when full the oldest waiting question is dropped and counted, so a slow model
  costs stale questions, never memory or the detector's time;
* :class:`VLMAsker` owns one model and one worker thread that takes the newest question, asks it,
  and hands the answer back to the event loop, where it is published through the sinks (the MQTT
  sink's durable outbox) on ``{prefix}/{agent}/{stream}/vlm``. The model is either loaded in this
  process (the worker thread then lowers its own priority) or, as the agent runs it, a
  :class:`~edge_agent.pipelines.vlm_process.VLMProcess` at the lowest priority (``remote``).

Questions about events (a tracked object's track ended, or it entered a zone) come through
:meth:`VLMAsker.ask_about_event` with the object's best snapshot and the event's id, which the
answer carries (``event_id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger("edge_agent.vlm")

AnswerKind = Literal["interval", "event"]


@dataclass(frozen=True)
class Question:
    """One prompt about one picture, waiting for the model."""

    stream: str
    image: np.ndarray
    prompt: str
    kind: AnswerKind
    frame_id: int | None = None
    frame_time: float | None = None
    event_id: str | None = None
    event: str | None = None
    queued_at: float = field(default_factory=time.monotonic)


class AnswerQueue:
    """A bounded stack of questions: the newest is taken first; a full queue drops its oldest.

    Thread-safe: the event loop puts, the worker takes.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: deque[Question] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.queued = 0
        self.dropped = 0
        self._closed = False

    def put(self, question: Question) -> Question | None:
        """Queue ``question``; returns the question dropped to make room, if any."""
        with self._lock:
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()
                self.dropped += 1
            self._items.append(question)
            self.queued += 1
            self._ready.notify()
            return dropped

    def take(self, timeout: float) -> Question | None:
        """The newest waiting question, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._lock:
            if not self._items and not self._closed:
                self._ready.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.pop()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def close(self) -> None:
        """No more questions: those still waiting are dropped (and counted, so the books balance)."""
        with self._lock:
            self._closed = True
            self.dropped += len(self._items)
            self._items.clear()
            self._ready.notify_all()


class IntervalClock:
    """Per stream: is a frame seen at ``now`` due its prompt? (the first frame is; then every interval)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, stream: str, interval: float, now: float) -> bool:
        last = self._last.get(stream)
        if last is not None and now - last < interval:
            return False
        self._last[stream] = now
        return True

    def forget(self, stream: str) -> None:
        self._last.pop(stream, None)


@dataclass(frozen=True)
class StreamPrompt:
    """A stream's VLM settings: the interval prompt, and the prompt asked about its events."""

    prompt: str | None
    interval: float
    event_prompt: str | None = None
    events: tuple[str, ...] = ()


def answer_message(
    question: Question,
    answer: Any,
    *,
    agent_id: str,
    model_id: str,
    answer_ms: float,
    queue_ms: float,
    run_id: str | None,
) -> dict[str, Any]:
    """The published answer: Roboflow's LMM response (``response``, ``image``, maybe ``predictions``)
    with what a consumer needs to place it (stream, frame or event, prompt, timings)."""
    message = answer.to_response()
    message.update(
        agent_id=agent_id,
        stream=question.stream,
        kind=question.kind,
        prompt=question.prompt,
        model_id=model_id,
        answer_ms=round(answer_ms, 3),
        queue_ms=round(queue_ms, 3),
        new_tokens=int(getattr(answer, "new_tokens", 0)),
        message_id=uuid.uuid4().hex,
    )
    if question.frame_id is not None:
        message["frame_id"] = question.frame_id
    if question.frame_time is not None:
        message["frame_time"] = question.frame_time
    if question.event_id is not None:
        message["event_id"] = question.event_id
        message["event"] = question.event
    if run_id is not None:
        message["run_id"] = run_id
    return message


def answer_text(response: Any) -> str:
    """A short text of an answer for people (the live page)."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict) and len(response) == 1:
        ((task, body),) = response.items()
        if isinstance(body, str):
            return body
        if isinstance(body, dict) and isinstance(body.get("labels"), list):
            return f"{task} " + ", ".join(str(label) for label in body["labels"])
    return str(response)


def answer_summary(message: dict[str, Any]) -> str:
    """The live page's line for a published answer: its text, or for a detecting model (Moondream2,
    whose answer is Roboflow detections) how many of the prompt's objects it found."""
    if "response" in message:
        return answer_text(message["response"])
    rows = message.get("predictions")
    count = len(rows) if isinstance(rows, list) else 0
    return f"{count} x {message.get('prompt')}"


def thread_priority(tid: int | None = None) -> tuple[int, int]:
    """(nice, scheduling policy) of one thread of this process (Linux, from /proc; the calling thread
    by default). ``os.getpriority`` cannot tell threads apart reliably, the kernel's stat line can."""
    tid = threading.get_native_id() if tid is None else tid
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return int(fields[16]), int(fields[38])  # field 19: nice, field 41: policy


def lower_priority(nice: int = 19) -> None:
    """The calling thread, and every thread it starts from now on (torch's OpenMP intra-op team is
    made per calling thread and inherits it), yields the CPU to the detector. Linux applies a nice
    value per thread (``PRIO_PROCESS`` with a thread id); at 19 the thread also goes to SCHED_IDLE,
    the class below every nice level. Best effort: a platform without them leaves the priority."""
    if hasattr(os, "setpriority") and nice > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as exc:
            log.warning("could not lower the VLM worker's priority to nice %d: %s", nice, exc)
    if nice >= 19 and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread


class VLMAsker:
    """One vision-language model answering the streams' questions on its own worker thread.

    ``publish(stream, message)`` and ``on_answer(stream, message)`` are called on the event loop.
    """

    def __init__(
        self,
        model: Any,
        model_id: str,
        prompts: dict[str, StreamPrompt],
        *,
        agent_id: str,
        queue_size: int,
        publish: Callable[[str, dict[str, Any]], None],
        on_answer: Callable[[str, dict[str, Any]], None] | None = None,
        run_id: str | None = None,
        threads: int = 1,
        cpu_share: float = 1.0,
        nice: int = 19,
    ) -> None:
        self.model = model
        self.model_id = model_id
        self.prompts = dict(prompts)
        self.agent_id = agent_id
        self.queue = AnswerQueue(queue_size)
        self.clock = IntervalClock()
        self._publish = publish
        self._on_answer = on_answer
        self._run_id = run_id
        self._threads = threads
        self._nice = nice
        engine = getattr(model, "engine", None)
        if engine is not None and hasattr(engine, "cpu_share"):
            engine.cpu_share = cpu_share
        self.answered = 0
        self.failed = 0
        self.answer_ms_last: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the event loop side --------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._work, name=f"vlm:{self.model_id}"[:40], daemon=True)
        self._thread.start()

    def on_frame(self, frame: Any, prediction: Any = None) -> None:
        """Called with every processed frame (a ResultRouter tap); queues a question when one is due."""
        config = self.prompts.get(frame.stream)
        if config is None or config.prompt is None:
            return
        if not self.clock.due(frame.stream, config.interval, frame.monotonic or time.monotonic()):
            return
        self._put(
            Question(
                stream=frame.stream,
                image=frame.image,
                prompt=config.prompt,
                kind="interval",
                frame_id=frame.frame_id,
                frame_time=frame.capture_time,
            )
        )

    def ask_about_event(self, stream: str, event: str, event_id: str, snapshot: np.ndarray) -> bool:
        """Queue the stream's event prompt about ``snapshot`` (the tracked object's best picture) when
        the stream asks about ``event`` (``track_end``, ``zone_enter``); the answer carries ``event_id``."""
        config = self.prompts.get(stream)
        if config is None or config.event_prompt is None or event not in config.events:
            return False
        self._put(
            Question(
                stream=stream, image=snapshot, prompt=config.event_prompt, kind="event", event_id=event_id, event=event
            )
        )
        return True

    def _put(self, question: Question) -> None:
        dropped = self.queue.put(question)
        if dropped is not None:
            log.debug("VLM queue full: dropped the oldest question (stream %s)", dropped.stream)

    def forget(self, stream: str) -> None:
        self.prompts.pop(stream, None)
        self.clock.forget(stream)

    def counters(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "queued": self.queue.queued,
            "waiting": len(self.queue),
            "dropped": self.queue.dropped,
            "answered": self.answered,
            "failed": self.failed,
            "answer_ms_last": self.answer_ms_last,
        }

    def _deliver(self, stream: str, message: dict[str, Any]) -> None:
        try:
            self._publish(stream, message)
        except Exception:
            log.exception("publishing a VLM answer of stream %s failed", stream)
        if self._on_answer is not None:
            self._on_answer(stream, message)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking questions; a question being answered is left to finish on its daemon thread."""
        self._stop.set()
        self.queue.close()
        cancel = getattr(self.model, "cancel", None)
        engine = getattr(self.model, "engine", None)
        if callable(cancel):
            cancel()  # a model in its own process: the process is stopped
        elif engine is not None and hasattr(engine, "cancel"):
            engine.cancel.set()  # the answer being written ends at its next layer or token
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, timeout)  # bounded: a long answer is left behind

    # -- the worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        if not getattr(self.model, "remote", False):  # a model in its own process has lowered itself
            lower_priority(self._nice)  # before torch starts this thread's intra-op team, which inherits it
            with contextlib.suppress(Exception):
                import torch

                # OpenMP's team size is per calling thread: a detector thread that has run torch keeps its own
                torch.set_num_threads(self._threads)
        while not self._stop.is_set():
            question = self.queue.take(timeout=0.5)
            if question is None:
                continue
            started = time.monotonic()
            try:
                (answer,) = self.model.predict([question.image], prompt=question.prompt)
            except Exception as exc:
                if self._stop.is_set():
                    return  # cancelled by the stop
                self.failed += 1
                log.warning("VLM %s failed on a question of stream %s: %s", self.model_id, question.stream, exc)
                continue
            if self._stop.is_set():
                return  # cut short by the stop: a truncated answer is not published
            done = time.monotonic()
            self.answered += 1
            self.answer_ms_last = (done - started) * 1000.0
            message = answer_message(
                question,
                answer,
                agent_id=self.agent_id,
                model_id=self.model_id,
                answer_ms=(done - started) * 1000.0,
                queue_ms=(started - question.queued_at) * 1000.0,
                run_id=self._run_id,
            )
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the agent stopped
                loop.call_soon_threadsafe(self._deliver, question.stream, message)
