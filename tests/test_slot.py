"""LatestFrameSlot: replace-and-count in live mode, blocking handoff in every mode, listeners on
the loop thread, close semantics."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.slot import LatestFrameSlot


def make_frame(i: int, stream: str = "s") -> Frame:
    img = np.zeros((2, 3, 3), dtype=np.uint8)
    return Frame(stream=stream, frame_id=i, capture_time=time.time(), pts=i / 30, image=img, monotonic=time.monotonic())


def test_frame_is_slotted_and_knows_its_size() -> None:
    f = make_frame(0)
    assert not hasattr(f, "__dict__")
    assert (f.width, f.height) == (3, 2)


def test_live_mode_keeps_newest_and_counts_drops() -> None:
    loop = asyncio.new_event_loop()
    try:
        slot = LatestFrameSlot(loop)
        assert slot.take() is None
        for i in range(5):
            assert slot.put(make_frame(i)) is True
        assert slot.put_count == 5 and slot.dropped == 4
        got = slot.take()
        assert got is not None and got.frame_id == 4
        assert slot.take() is None
        assert slot.taken_count == 1
        assert slot.put_count == slot.taken_count + slot.dropped
    finally:
        loop.close()


def test_memory_stays_at_one_frame_when_the_consumer_is_slow() -> None:
    loop = asyncio.new_event_loop()
    try:
        slot = LatestFrameSlot(loop)
        big = [np.zeros((720, 1280, 3), dtype=np.uint8) for _ in range(2)]
        for i in range(200):
            slot.put(Frame("s", i, 0.0, None, big[i % 2], 0.0))
        assert slot.dropped == 199 and slot.peek() is not None and slot.peek().frame_id == 199
    finally:
        loop.close()


def test_listener_runs_on_loop_thread_once_per_empty_to_full() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        slot = LatestFrameSlot(loop)
        calls: list[str] = []
        event = asyncio.Event()

        def listener() -> None:
            calls.append(threading.current_thread().name)
            event.set()

        slot.add_listener(listener)

        def producer() -> None:
            for i in range(3):
                slot.put(make_frame(i))

        t = threading.Thread(target=producer, name="producer")
        t.start()
        t.join()
        await asyncio.wait_for(event.wait(), 2)
        await asyncio.sleep(0.05)
        # three puts into an untaken slot: one wake-up, delivered on the loop's thread
        assert calls == [threading.current_thread().name]
        assert slot.take().frame_id == 2
        event.clear()
        await asyncio.get_running_loop().run_in_executor(None, slot.put, make_frame(3))
        await asyncio.wait_for(event.wait(), 2)
        assert len(calls) == 2
        # a listener added while a frame waits hears about it at once
        late = asyncio.Event()
        slot.add_listener(late.set)
        await asyncio.wait_for(late.wait(), 2)
        slot.remove_listener(late.set)
        slot.remove_listener(late.set)  # removing twice is harmless

    asyncio.run(scenario())


def test_one_event_can_watch_many_slots() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        slots = [LatestFrameSlot(loop) for _ in range(4)]
        for s in slots:
            s.add_listener(wake.set)
        threading.Thread(target=lambda: slots[2].put(make_frame(0, "c"))).start()
        await asyncio.wait_for(wake.wait(), 2)
        ready = [i for i, s in enumerate(slots) if s.has_frame]
        assert ready == [2]

    asyncio.run(scenario())


def test_every_mode_blocks_until_taken_and_drops_nothing() -> None:
    loop = asyncio.new_event_loop()
    try:
        slot = LatestFrameSlot(loop, wait_for_consumer=True)
        done: list[int] = []

        def producer() -> None:
            for i in range(5):
                assert slot.put(make_frame(i))
                done.append(i)

        t = threading.Thread(target=producer)
        t.start()
        taken = []
        deadline = time.monotonic() + 5
        while len(taken) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
            # the producer can be at most one frame ahead of the consumer
            assert len(done) <= len(taken) + 1
            f = slot.take()
            if f is not None:
                taken.append(f.frame_id)
        t.join(2)
        assert taken == [0, 1, 2, 3, 4]
        assert slot.dropped == 0
    finally:
        loop.close()


def test_every_mode_put_returns_when_cancelled_or_closed() -> None:
    loop = asyncio.new_event_loop()
    try:
        slot = LatestFrameSlot(loop, wait_for_consumer=True)
        slot.put(make_frame(0))
        cancel = threading.Event()
        result: list[bool] = []
        t = threading.Thread(target=lambda: result.append(slot.put(make_frame(1), cancel=cancel)))
        t.start()
        time.sleep(0.1)
        assert t.is_alive()
        started = time.monotonic()
        cancel.set()
        slot.wake_blocked()
        t.join(2)
        assert not t.is_alive() and result == [False]
        assert time.monotonic() - started < 0.5

        t2 = threading.Thread(target=lambda: result.append(slot.put(make_frame(2))))
        t2.start()
        time.sleep(0.1)
        slot.close()
        t2.join(2)
        assert not t2.is_alive() and result == [False, False]
        # closing discards the untaken frame and counts it, so the books balance
        assert slot.put_count == 1 and slot.dropped == 1 and slot.take() is None
        assert slot.put(make_frame(3)) is False
    finally:
        loop.close()


def test_put_after_loop_closed_does_not_raise() -> None:
    loop = asyncio.new_event_loop()
    slot = LatestFrameSlot(loop)
    slot.add_listener(lambda: None)
    loop.close()
    assert slot.put(make_frame(0)) is True
