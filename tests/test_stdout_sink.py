"""The stdout sink never blocks the event loop, even when nobody reads the pipe."""

from __future__ import annotations

import asyncio
import json
import os
import time

from edge_agent.pipelines.sinks.stdout import StdoutSink


def test_lines_arrive_in_order_and_close_flushes(tmp_path) -> None:
    path = tmp_path / "out.jsonl"

    async def scenario(out) -> dict:  # type: ignore[no-untyped-def]
        sink = StdoutSink(out)
        await sink.start()
        for i in range(500):
            sink.publish_prediction("s", {"seq": i})
        await sink.close(5)
        return sink.counters()

    with open(path, "w") as out:
        counters = asyncio.run(scenario(out))
    seqs = [json.loads(line)["seq"] for line in path.read_text().splitlines()]
    assert seqs == list(range(500)) and counters["written"] == 500 and counters["dropped"] == 0


def test_a_stuck_reader_drops_oldest_instead_of_blocking() -> None:
    read_fd, write_fd = os.pipe()  # a real pipe whose reader never reads: writes block when full

    async def scenario() -> tuple[float, dict]:
        writer = os.fdopen(write_fd, "w")
        sink = StdoutSink(writer, backlog=50)
        await sink.start()
        started = time.perf_counter()
        for i in range(20_000):  # ~1 MB of lines: far more than the pipe buffer holds
            sink.publish_prediction("s", {"seq": i, "pad": "x" * 40})
        elapsed = time.perf_counter() - started
        counters = sink.counters()
        os.close(read_fd)  # the reader goes away: the blocked write fails and the thread ends
        await sink.close(5)
        return elapsed, counters

    elapsed, counters = asyncio.run(scenario())
    assert elapsed < 5, f"publishing blocked for {elapsed:.1f} s"
    assert counters["dropped"] > 10_000


def test_a_reader_that_goes_away_is_reported_once_and_nothing_else_breaks() -> None:
    read_fd, write_fd = os.pipe()
    calls: list[float] = []

    async def scenario() -> dict:
        writer = os.fdopen(write_fd, "w")
        sink = StdoutSink(writer, on_closed=lambda: calls.append(time.monotonic()))
        await sink.start()
        sink.publish_prediction("s", {"seq": 0})
        os.close(read_fd)  # `| head -1` has read what it wanted and exited
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            sink.publish_prediction("s", {"seq": 1})
            await asyncio.sleep(0.01)
        for i in range(100):  # after that, publishing is a no-op, never an exception
            sink.publish_prediction("s", {"seq": i})
        await sink.close(5)
        return sink.counters()

    counters = asyncio.run(scenario())
    assert len(calls) == 1
    assert counters["closed_by_reader"] is True
