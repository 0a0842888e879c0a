"""The agent as a service: systemd notify + watchdog, /healthz and /metrics, on a real run."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import free_port
from tests.slow_model import write_slow_model
from tools.synthworld import write_clip


def test_notify_watchdog_health_and_metrics(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=2, width=640, height=360, seed=9, max_speed=4.0, noise_sigma=2.0)
    model_dir = write_slow_model(tmp_path / "m", layers=1)
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)
    port = free_port()
    env = {
        "STREAMS": f"clip={clip};dead=rtsp://127.0.0.1:9/none",
        "STREAM_CLIP_LOOP": "true",
        "MODEL_ID": str(model_dir),
        "STDOUT_SINK": "false",
        "HEALTH_PORT": str(port),
        "NOTIFY_SOCKET": notify_path,
        "WATCHDOG_USEC": "1000000",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    received: list[str] = []
    with AgentProcess(env, tmp_path) as agent:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in received) and sum("WATCHDOG=1" in m for m in received) >= 2
        ):
            try:
                received.append(notify.recv(4096).decode())
            except TimeoutError:
                pass
        assert any("READY=1" in m for m in received), f"{received}\n{agent.stderr()}"
        assert sum("WATCHDOG=1" in m for m in received) >= 2, received

        health = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                health = json.loads(response.read())
            if health["streams"].get("clip") == "streaming":
                break
            time.sleep(0.2)
        assert health and health["ok"] is True, health
        assert health["streams"]["dead"] != "streaming"  # one dead camera does not make the agent unhealthy

        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        metric = "edge_agent_stream_frames_processed_total"
        processed = [line for line in metrics.splitlines() if line.startswith(metric)]
        assert any('stream="clip"' in line and float(line.split()[-1]) > 0 for line in processed), metrics
        assert 'edge_agent_stream_up{stream="dead"} 0' in metrics
        assert agent.terminate(30) == 0, agent.stderr()
    notify.close()


def _request(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_control_api_adds_and_removes_streams_at_run_time(tmp_path: Path, rtsp_server_factory) -> None:  # type: ignore[no-untyped-def]
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=2, width=640, height=360, seed=11, max_speed=4.0, noise_sigma=2.0)
    rtsp = rtsp_server_factory({"cam": clip})
    model_dir = write_slow_model(tmp_path / "m", layers=1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "STREAMS": f"first={clip}",
        "STREAM_FIRST_LOOP": "true",
        "MODEL_ID": str(model_dir),
        "STDOUT_SINK": "true",
        "HEALTH_PORT": str(port),
        "CONTROL_API": "true",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait_for(lambda p: any(m["stream"] == "first" for m in p), timeout=60), agent.stderr()

        status, body = _request("PUT", f"{base}/streams/cam", {"url": rtsp.url("cam"), "max_fps": 10})
        assert status == 201, body
        assert body["name"] == "cam" and body["model_id"] == str(model_dir)
        assert agent.wait_for(lambda p: any(m["stream"] == "cam" for m in p), timeout=30), agent.stderr()
        status, listing = _request("GET", f"{base}/streams")
        assert status == 200 and set(listing) == {"first", "cam"}
        status, one = _request("GET", f"{base}/streams/cam")
        assert status == 200 and one["name"] == "cam" and one["kind"] == "rtsp", one
        status, body = _request("GET", f"{base}/streams/nope")
        assert status == 404 and "cam" in body["error"], body

        # a stream with a model of its own: the model goes when its last stream goes
        other_model = write_slow_model(tmp_path / "m2", layers=1)
        request = {"url": str(clip), "loop": True, "model_id": str(other_model)}
        status, body = _request("PUT", f"{base}/streams/other", request)
        assert status == 201 and body["model_id"] == str(other_model), body
        health = _request("GET", f"{base}/healthz")[1]
        assert health["models"] == sorted([str(model_dir), str(other_model)]), health
        assert _request("DELETE", f"{base}/streams/other")[0] == 200
        assert _request("GET", f"{base}/healthz")[1]["models"] == [str(model_dir)]

        # clear errors, nothing changed
        assert _request("PUT", f"{base}/streams/cam", {"url": rtsp.url("cam")})[0] == 409
        status, body = _request("PUT", f"{base}/streams/bad", {"url": "gopher://x/y"})
        assert status == 400 and "accepted forms" in body["error"], body
        status, body = _request("PUT", f"{base}/streams/bad", {"url": str(clip), "mode": "fast"})
        assert status == 400 and "mode" in body["error"], body
        assert _request("DELETE", f"{base}/streams/nope")[0] == 404

        status, _ = _request("DELETE", f"{base}/streams/first")
        assert status == 200
        time.sleep(0.5)
        seen = len([m for m in agent.predictions() if m["stream"] == "first"])
        time.sleep(2.0)
        assert len([m for m in agent.predictions() if m["stream"] == "first"]) == seen, "removed stream still runs"
        cam_before = len([m for m in agent.predictions() if m["stream"] == "cam"])
        assert agent.wait_for(lambda p: len([m for m in p if m["stream"] == "cam"]) > cam_before + 5, timeout=15)
        assert set(_request("GET", f"{base}/streams")[1]) == {"cam"}
        assert agent.terminate(30) == 0, agent.stderr()
