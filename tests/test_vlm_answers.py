"""The VLM question queue, the interval clock, the event hook and the published message (pure logic)."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.pipelines.vlm_answers import (
    AnswerQueue,
    IntervalClock,
    Question,
    StreamPrompt,
    VLMAsker,
    answer_message,
    answer_text,
    thread_priority,
)


def _q(stream: str, n: int = 0) -> Question:
    return Question(stream=stream, image=np.zeros((2, 2, 3), np.uint8), prompt="p", kind="interval", frame_id=n)


def test_queue_takes_newest_first_and_drops_oldest_when_full():
    queue = AnswerQueue(2)
    assert queue.put(_q("a", 1)) is None
    assert queue.put(_q("a", 2)) is None
    dropped = queue.put(_q("a", 3))
    assert dropped is not None and dropped.frame_id == 1
    assert (queue.queued, queue.dropped, len(queue)) == (3, 1, 2)
    taken = queue.take(timeout=0)
    assert taken is not None and taken.frame_id == 3
    taken = queue.take(timeout=0)
    assert taken is not None and taken.frame_id == 2
    assert queue.take(timeout=0.01) is None


def test_queue_close_wakes_a_waiting_taker():
    queue = AnswerQueue(1)
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(queue.take(timeout=10)))
    thread.start()
    queue.close()
    thread.join(timeout=2)
    assert not thread.is_alive() and got == [None]


def test_queue_close_counts_the_questions_left_waiting_as_dropped():
    queue = AnswerQueue(3)
    queue.put(_q("a", 1))
    queue.put(_q("a", 2))
    queue.close()
    assert (queue.queued, queue.dropped, len(queue)) == (2, 2, 0)
    assert queue.take(timeout=0) is None


def test_queue_needs_room():
    with pytest.raises(ValueError):
        AnswerQueue(0)


def test_interval_clock():
    clock = IntervalClock()
    assert clock.due("a", 5.0, 100.0)  # the first frame is asked about
    assert not clock.due("a", 5.0, 104.9)
    assert clock.due("b", 5.0, 104.9)  # streams are independent
    assert clock.due("a", 5.0, 105.0)
    assert not clock.due("a", 5.0, 109.0)
    clock.forget("a")
    assert clock.due("a", 5.0, 109.0)


@dataclass
class _Answer:
    response: object
    new_tokens: int = 7

    def to_response(self) -> dict:
        return {"response": self.response, "image": {"width": 2, "height": 2}}


def test_answer_message_carries_event_and_frame():
    question = Question(
        stream="door",
        image=np.zeros((2, 2, 3), np.uint8),
        prompt="what is it?",
        kind="event",
        event_id="ev-1",
        event="track_end",
    )
    message = answer_message(
        question, _Answer("a cat"), agent_id="x", model_id="m", answer_ms=12.3456, queue_ms=1.0, run_id="r"
    )
    assert message["response"] == "a cat" and message["event_id"] == "ev-1" and message["event"] == "track_end"
    assert (message["kind"], message["stream"], message["answer_ms"], message["new_tokens"]) == (
        "event",
        "door",
        12.346,
        7,
    )
    assert "frame_id" not in message and message["run_id"] == "r"


def test_answer_text():
    assert answer_text("hello") == "hello"
    assert answer_text({"<CAPTION>": "a car"}) == "a car"
    assert answer_text({"<OD>": {"bboxes": [[0, 0, 1, 1]] * 2, "labels": ["car", "dog"]}}) == "<OD> car, dog"


class _Model:
    """Answers with the prompt and image size; blocks on ``gate`` so questions pile up."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def predict(self, images, prompt):
        self.gate.wait(10)
        self.seen.append((prompt, images[0].shape))
        return [_Answer(f"{prompt}:{images[0].shape[1]}")]


@dataclass
class _Frame:
    stream: str
    frame_id: int
    monotonic: float
    capture_time: float
    image: np.ndarray


def test_asker_interval_and_event_questions_reach_publish():
    async def scenario() -> list[tuple[str, dict]]:
        model = _Model()
        published: list[tuple[str, dict]] = []
        prompts = {"cam": StreamPrompt("describe", 10.0, "who is this?", ("track_end",))}
        asker = VLMAsker(
            model, "vlm", prompts, agent_id="a", queue_size=3, publish=lambda s, m: published.append((s, m))
        )
        asker.start(asyncio.get_running_loop())
        for i in range(5):  # 5 frames within one interval: one question
            asker.on_frame(_Frame("cam", i, 100.0 + i, 1000.0 + i, np.zeros((4, 6, 3), np.uint8)))
        asker.on_frame(_Frame("other", 0, 100.0, 1000.0, np.zeros((4, 6, 3), np.uint8)))  # no prompt: ignored
        assert asker.ask_about_event("cam", "track_end", "ev-9", np.zeros((3, 5, 3), np.uint8))
        assert not asker.ask_about_event("cam", "zone_enter", "ev-10", np.zeros((3, 5, 3), np.uint8))
        model.gate.set()
        for _ in range(200):
            if len(published) == 2:
                break
            await asyncio.sleep(0.02)
        await asker.stop()
        return published

    published = asyncio.run(scenario())
    by_kind = {m["kind"]: m for _, m in published}
    assert by_kind["interval"]["response"] == "describe:6" and by_kind["interval"]["frame_id"] == 0
    assert by_kind["event"]["response"] == "who is this?:5" and by_kind["event"]["event_id"] == "ev-9"


def test_live_view_keeps_the_newest_answer_per_stream():
    from edge_agent.pipelines.live import LiveView

    live = LiveView()
    live.set_answer("cam", {"prompt": "p", "answer": "one"})
    live.set_answer("cam", {"prompt": "p", "answer": "two"})
    assert live.answers == {"cam": {"prompt": "p", "answer": "two"}}
    live.forget("cam")
    assert live.answers == {}
    live.close()


class _TorchModel:
    """Answers after torch work large enough for ``at::parallel_for`` to start the calling thread's
    OpenMP team; notes which threads that started and their (nice, policy) as the kernel reports them."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.worker: tuple[int, tuple[int, int]] | None = None
        self.started: dict[int, tuple[int, int]] = {}
        self.done = threading.Event()

    def predict(self, images, prompt):
        before = set(os.listdir("/proc/self/task"))
        self.torch.ones(8_000_000).mul_(3.0).sum()
        new = set(os.listdir("/proc/self/task")) - before
        self.started = {int(tid): thread_priority(int(tid)) for tid in new}
        self.worker = (threading.get_native_id(), thread_priority())
        self.done.set()
        return [_Answer("ok")]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities are read from Linux /proc")
@pytest.mark.parametrize(("nice", "policy"), [(19, getattr(os, "SCHED_IDLE", 5)), (10, 0)])
def test_vlm_worker_and_its_torch_threads_run_at_the_lowered_priority(nice, policy):
    torch = pytest.importorskip("torch")
    main_before = thread_priority()
    model = _TorchModel(torch)

    async def scenario() -> None:
        asker = VLMAsker(
            model,
            "vlm",
            {"cam": StreamPrompt("describe", 10.0)},
            agent_id="a",
            queue_size=1,
            publish=lambda s, m: None,
            threads=2,
            nice=nice,
        )
        asker.start(asyncio.get_running_loop())
        asker.on_frame(_Frame("cam", 0, 100.0, 1000.0, np.zeros((4, 6, 3), np.uint8)))
        await asyncio.to_thread(model.done.wait, 60)
        await asker.stop()

    asyncio.run(scenario())
    assert model.worker is not None, "the worker never answered"
    tid, worker = model.worker
    assert tid != threading.get_native_id()
    assert worker == (nice, policy)
    # torch's intra-op threads of the worker (VLM_THREADS=2: one besides the worker) inherit it
    assert model.started, "torch started no intra-op thread for the worker"
    assert set(model.started.values()) == {(nice, policy)}, model.started
    # the rest of the agent keeps its priority
    assert thread_priority() == main_before == (main_before[0], 0)
