"""Shared pieces of the benchmarks: the bench model, clips, a broker, an RTSP server, the agent.

Everything runs on 127.0.0.1 and every wait is bounded. The real services come from the test
fixtures' classes (tests/fixtures), used here outside pytest.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "_out"
BENCH_MODEL = OUT / "yolov8n-like"


def bench_model() -> Path:
    """The YOLOv8n-sized model with random weights; exported once (needs torch) and reused."""
    if not (BENCH_MODEL / "weights.onnx").is_file():
        subprocess.run([sys.executable, "-m", "bench.yolov8n_like", "--out", str(BENCH_MODEL)], check=True, cwd=ROOT)
    return BENCH_MODEL


def clip(name: str, seconds: float, fps: int = 30, width: int = 1280, height: int = 720, seed: int = 0) -> Path:
    from tools.synthworld import write_clip

    path = OUT / f"{name}-{width}x{height}-{fps}fps-{seconds:g}s.mp4"
    if not path.is_file():
        OUT.mkdir(parents=True, exist_ok=True)
        write_clip(path, seconds=seconds, width=width, height=height, fps=fps, seed=seed, noise_sigma=2.0)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of the process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Broker:
    """mosquitto on a free loopback port (tests/fixtures/mosquitto.py's class, outside pytest)."""

    def __init__(self) -> None:
        from tests.fixtures.mosquitto import Mosquitto

        self._dir = tempfile.TemporaryDirectory(prefix="bench-mqtt-")
        self.server = Mosquitto(Path(self._dir.name)).start()
        self.port = self.server.port

    def close(self) -> None:
        self.server.stop()
        self._dir.cleanup()


class TimedSubscriber:
    """Records (receive wall time, topic, payload) for every message under a topic filter."""

    def __init__(self, port: int, topic: str, qos: int = 1) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}", protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=qos)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("bench subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        received = time.time()
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            self.messages.append((received, msg.topic, payload))

    def predictions(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, p) for t, topic, p in self.messages if topic.endswith("/predictions")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rtsp_server(mounts: dict[str, Path]):  # type: ignore[no-untyped-def]
    from tests.fixtures.rtsp import RtspServer

    return RtspServer(dict(mounts)).start()


def agent(env: dict[str, str], workdir: Path):  # type: ignore[no-untyped-def]
    from tests.agent_process import AgentProcess

    workdir.mkdir(parents=True, exist_ok=True)
    base = {"MODEL_CACHE_DIR": str(workdir / "cache"), "LOG_LEVEL": "WARNING"}
    return AgentProcess({**base, **env}, workdir)
