"""What the durable MQTT outbox costs per message, against the in-memory outbox in the same run.

    python -m bench.outbox_bench              # 100 and 1,000 messages/s, ~1 minute
    python -m bench.outbox_bench --seconds 20

For each rate, the same paced stream of prediction-sized messages (~0.9 KB JSON, 5 detections)
goes through an :class:`~pipelines.sinks.mqtt.MqttSink` to a real mosquitto on 127.0.0.1,
once with the in-memory outbox (baseline) and once with the SQLite outbox, interleaved. Printed:

* CPU per message of the whole process (all threads: producer, paho, feeder, writer, the
  in-process subscriber), disk vs memory, and the difference: what the disk outbox adds;
* CPU per message of the outbox writer thread alone (read from /proc/self/task);
* the producer's ``publish_prediction`` call: p50 / p99 / max (what a frame pays);
* publish -> subscriber latency p50 / p95 (the commit interval shows here);
* transactions per second (batching).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, Broker, TimedSubscriber, median, percentile
from edge_agent.pipelines.sinks.mqtt import MqttConfig, MqttSink

_TICKS = os.sysconf("SC_CLK_TCK")


def _thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _payload(i: int) -> dict[str, Any]:
    det = {
        "x": 412.5,
        "y": 230.0,
        "width": 96.0,
        "height": 88.0,
        "confidence": 0.93,
        "class": "circle",
        "class_id": 0,
        "detection_id": "6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6",
    }
    return {
        "predictions": [det] * 5,
        "image": {"width": 1280, "height": 720},
        "agent_id": "bench",
        "stream": f"cam{i % 4}",
        "seq": i // 4,
        "frame_id": i,
        "frame_time": time.time(),
        "model_id": "builtin/shapes-v1",
        "message_id": f"{i:032x}",
    }


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class _Receiver(TimedSubscriber):
    """Keeps only each message's latency: at 1,000 messages/s the payloads are not worth storing."""

    def __init__(self, port: int) -> None:
        self.latencies: list[float] = []
        self.count = 0
        super().__init__(port, "edge-agent/bench/+/predictions", qos=0)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.latencies.append(time.time() - json.loads(msg.payload)["frame_time"])
        self.count += 1


async def _one(port: int, rate: int, seconds: float, disk: bool, workdir: Path) -> dict[str, float]:
    receiver = _Receiver(port)
    config = MqttConfig(
        host="127.0.0.1",
        port=port,
        agent_id="bench",
        queue_size=1_000_000,
        outbox_path=workdir / f"outbox-{rate}.db" if disk else None,
    )
    sink = MqttSink(config)
    await sink.start()
    if not await _until(lambda: sink.counters()["connected"], 10):
        raise RuntimeError("the sink did not connect")
    writer = next((t for t in threading.enumerate() if t.name == "mqtt-outbox"), None)
    n = int(rate * seconds)
    calls: list[float] = []
    cpu0, wall0 = time.process_time(), time.monotonic()
    writer0 = _thread_cpu_s(writer.native_id) if writer is not None and writer.native_id else 0.0
    commits0 = getattr(sink._outbox, "commits", 0)
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    i = 0
    while i < n:
        due = wall0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(min(per_tick, n - i)):
            payload = _payload(i)
            started = time.perf_counter()
            sink.publish_prediction(payload["stream"], payload)
            calls.append(time.perf_counter() - started)
            i += 1
    await _until(lambda: sink.counters()["acked"] >= n and receiver.count >= n, 30)
    cpu = time.process_time() - cpu0
    elapsed = time.monotonic() - wall0
    writer_cpu = _thread_cpu_s(writer.native_id) - writer0 if writer is not None and writer.native_id else 0.0
    commits = getattr(sink._outbox, "commits", 0) - commits0
    acked = sink.counters()["acked"]
    await sink.close(10)
    receiver.close()
    if acked < n:
        raise RuntimeError(f"only {acked} of {n} acknowledged")
    calls.sort()
    return {
        "cpu_ms": cpu / n * 1000,
        "writer_ms": writer_cpu / n * 1000,
        "call_p50_us": calls[len(calls) // 2] * 1e6,
        "call_p99_us": calls[int(len(calls) * 0.99)] * 1e6,
        "call_max_us": calls[-1] * 1e6,
        "lat_p50_ms": median(receiver.latencies) * 1000,
        "lat_p95_ms": percentile(receiver.latencies, 95) * 1000,
        "commits_per_s": commits / elapsed,
        "msgs_per_commit": n / commits if commits else 0.0,
    }


def run(seconds: float, rounds: int) -> list[str]:
    broker = Broker()
    lines = [
        f"outbox bench: {platform.machine()}, {os.cpu_count()} cores; SQLite WAL, synchronous=NORMAL; "
        f"{rounds} interleaved round(s) of {seconds:g} s per rate and outbox; ~0.9 KB messages, QoS 1"
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
            for rate in (100, 1000):
                mem: list[dict[str, float]] = []
                disk: list[dict[str, float]] = []
                for r in range(rounds):
                    mem.append(asyncio.run(_one(broker.port, rate, seconds, False, Path(tmp))))
                    directory = Path(tmp) / f"d{rate}-{r}"
                    directory.mkdir()
                    disk.append(asyncio.run(_one(broker.port, rate, seconds, True, directory)))

                def med(rows: list[dict[str, float]], key: str) -> float:
                    return median([row[key] for row in rows])

                added = med(disk, "cpu_ms") - med(mem, "cpu_ms")
                lines += [
                    f"{rate} msg/s: CPU per message disk {med(disk, 'cpu_ms'):.3f} ms vs memory "
                    f"{med(mem, 'cpu_ms'):.3f} ms = {med(disk, 'cpu_ms') / med(mem, 'cpu_ms'):.2f}x; "
                    f"the disk outbox adds {added:.3f} ms "
                    f"(target < 1 ms); its writer thread {med(disk, 'writer_ms'):.3f} ms/message, "
                    f"{med(disk, 'commits_per_s'):.0f} commits/s ({med(disk, 'msgs_per_commit'):.1f} messages each)",
                    f"   publish_prediction call p50/p99/max: disk {med(disk, 'call_p50_us'):.0f}/"
                    f"{med(disk, 'call_p99_us'):.0f}/{med(disk, 'call_max_us'):.0f} us, memory "
                    f"{med(mem, 'call_p50_us'):.0f}/{med(mem, 'call_p99_us'):.0f}/{med(mem, 'call_max_us'):.0f} us; "
                    f"publish -> subscriber p50/p95: disk {med(disk, 'lat_p50_ms'):.1f}/{med(disk, 'lat_p95_ms'):.1f} "
                    f"ms, memory {med(mem, 'lat_p50_ms'):.1f}/{med(mem, 'lat_p95_ms'):.1f} ms",
                ]
                print("\n".join(lines[-2:]), flush=True)
    finally:
        broker.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = run(args.seconds, args.rounds)
    (OUT / "outbox_bench.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
