"""The HTTP port of a real agent process: pictures, MJPEG, /metrics, /readyz and HTTP_TOKEN.

Real parts only: ``edge-agent run`` as a subprocess on a counter-stamped clip (every frame
differs), a constant ONNX detector with known boxes and colours, a real mosquitto for the MQTT
series, the test model server for a slow model download; plain HTTP clients on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import free_port
from tests.http_client import MjpegReader, Part, basic, bearer, decode_jpeg, drop_mid_frame, get_json, request
from tests.live_agent import CLASSES, known_objects_model, sample, scrape, wait_for, wait_for_picture
from tests.onnx_factory import constant_detector, letterbox_env

CAP_FPS = 4.0
TOKEN = "live-view-test-token-6d1f0c2a9b"


def _env(model_dir: Path, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "MODEL_ID": str(model_dir),
        "HEALTH_PORT": str(port),
        "STDOUT_SINK": "false",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "RECONNECT_BACKOFF_INITIAL": "0.2",
        "RECONNECT_BACKOFF_MAX": "1",
        **extra,
    }


def _errors_in(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if " ERROR " in line or "Traceback" in line or "Error handling request" in line or "Exception" in line
    ]


def test_pictures_mjpeg_and_metrics(tmp_path: Path, clip_factory, mosquitto) -> None:  # type: ignore[no-untyped-def]
    clip = clip_factory(3.0, 30, (640, 360))
    # A model directory whose path needs escaping in Prometheus label values.
    model_dir = known_objects_model(tmp_path / 'odd "model" \\ dir é')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        model_dir,
        port,
        tmp_path,
        STREAMS=f"cam={clip};dead=rtsp://127.0.0.1:9/none",
        STREAM_CAM_LOOP="true",
        LIVE_VIEW_MAX_FPS=str(CAP_FPS),
        LIVE_VIEW_MAX_VIEWERS="2",
        MQTT_HOST="127.0.0.1",
        MQTT_PORT=str(mosquitto.port),
        AGENT_ID="live-test",
    )
    with AgentProcess(env, tmp_path) as agent:
        wait_for_picture(base, "cam")

        # -- latest.jpg: the annotated newest frame; clear errors for the others ------------------
        status, headers, body = request(f"{base}/streams/cam/latest.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert decode_jpeg(body).shape == (360, 640, 3)
        assert int(headers["X-Detections"]) == len(CLASSES)
        status, headers, body = request(f"{base}/streams/dead/latest.jpg")
        assert status == 503 and headers["Retry-After"] == "1" and b"no picture yet" in body
        status, _, body = request(f"{base}/streams/nope/latest.jpg")
        assert status == 404 and b"streams: cam, dead" in body

        # -- one MJPEG viewer: valid JPEGs at the capped rate --------------------------------------
        encodes_before = sample(scrape(base), "edge_agent_live_view_pictures_encoded_total", stream="cam")
        one = MjpegReader("127.0.0.1", port, "/streams/cam/live.mjpg")
        assert one.status == 200 and one.boundary()
        one.read_part()  # the picture that was already made; the timing starts from here
        parts = one.read_for(3.0)
        one.close()
        for part in parts:
            assert decode_jpeg(part.jpeg).shape == (360, 640, 3)
        seconds = parts[-1].arrived - parts[0].arrived
        rate = (len(parts) - 1) / seconds
        assert CAP_FPS * 0.6 <= rate <= CAP_FPS * 1.1, f"{len(parts)} pictures in {seconds:.2f} s ({rate:.2f}/s)"
        assert [p.seq for p in parts] == sorted({p.seq for p in parts}), "pictures repeated or out of order"
        frame_ids = [int(p.headers["x-frame-id"]) for p in parts]
        assert frame_ids == sorted(frame_ids) and len(set(frame_ids)) == len(frame_ids)
        encodes_one = sample(scrape(base), "edge_agent_live_view_pictures_encoded_total", stream="cam") - encodes_before
        wait_for(lambda: sample(scrape(base), "edge_agent_live_view_viewers", stream="cam") == 0, 5, "viewer gone")

        # -- two viewers: the same pictures, no extra encoding; a third is refused ------------------
        got: dict[str, list[Part]] = {}
        start = time.monotonic()
        encodes_before = sample(scrape(base), "edge_agent_live_view_pictures_encoded_total", stream="cam")

        def watch(key: str) -> None:
            reader = MjpegReader("127.0.0.1", port, "/streams/cam/live.mjpg")
            try:
                got[key] = reader.read_for(3.0 - (time.monotonic() - start))
            finally:
                reader.close()

        threads = [threading.Thread(target=watch, args=(k,)) for k in ("a", "b")]
        for t in threads:
            t.start()
        wait_for(
            lambda: sample(scrape(base), "edge_agent_live_view_viewers", stream="cam") == 2, 5, "two viewers counted"
        )
        status, headers, body = request(f"{base}/streams/cam/live.mjpg", timeout=5)
        assert status == 503 and b"LIVE_VIEW_MAX_VIEWERS=2" in body and headers["Retry-After"]
        for t in threads:
            t.join(15)
        encodes_two = sample(scrape(base), "edge_agent_live_view_pictures_encoded_total", stream="cam") - encodes_before
        seq_a = {p.seq: p.jpeg for p in got["a"]}
        seq_b = {p.seq: p.jpeg for p in got["b"]}
        shared = set(seq_a) & set(seq_b)
        assert len(shared) >= min(len(seq_a), len(seq_b)) - 2, (sorted(seq_a), sorted(seq_b))
        assert all(seq_a[s] == seq_b[s] for s in shared), "two viewers got different bytes for one picture"
        assert encodes_two <= len(set(seq_a) | set(seq_b)) + 1, (encodes_two, len(seq_a), len(seq_b))
        assert encodes_two <= encodes_one * 1.25 + 2, f"two viewers cost {encodes_two} encodes, one {encodes_one}"

        # -- viewers that hang up mid-picture, or right after the headers --------------------------
        for keep in (400, 5000, 120, 30000):
            # Each one's slot is freed within a fraction of a second (the limit is 2).
            wait_for(lambda: sample(scrape(base), "edge_agent_live_view_viewers", stream="cam") == 0, 5, "viewer gone")
            got_bytes = drop_mid_frame("127.0.0.1", port, "/streams/cam/live.mjpg", {}, keep)
            assert got_bytes.startswith(b"HTTP/1.1 200") and len(got_bytes) == keep, got_bytes[:200]
        wait_for(lambda: sample(scrape(base), "edge_agent_live_view_viewers", stream="cam") == 0, 5, "viewers let go")
        after = MjpegReader("127.0.0.1", port, "/streams/cam/live.mjpg")
        assert len(after.read_for(1.0)) >= 2, "the stream stopped serving after viewers dropped"
        after.close()

        # -- /metrics through prometheus_client's parser ---------------------------------------------
        wait_for(
            lambda: sample(scrape(base), "edge_agent_stream_reconnects_total", stream="dead") >= 1,
            20,
            "a reconnect of the dead camera",
        )
        wait_for(lambda: sample(scrape(base), "edge_agent_mqtt_acked_total") > 0, 20, "MQTT acknowledgements")
        status, headers, body = request(f"{base}/metrics")
        assert headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        metrics = scrape(base)
        model = str(model_dir)
        assert sample(metrics, "edge_agent_stream_info", stream="cam", model=model, kind="file") == 1
        assert sample(metrics, "edge_agent_model_load_seconds", model=model) > 0
        concurrency = sample(metrics, "edge_agent_model_concurrency", model=model)
        assert (
            concurrency >= 1 and 0 <= sample(metrics, "edge_agent_model_batches_in_flight", model=model) <= concurrency
        )
        assert '\\"model\\" \\\\ dir' in body.decode(), "label value not escaped in the exposition"
        for name in ("inference", "latency", "frame_age"):
            family = families[f"edge_agent_stream_{name}_seconds"]
            assert family.type == "histogram"
            buckets = {
                s.labels["le"]: s.value
                for s in family.samples
                if s.name.endswith("_bucket") and s.labels["stream"] == "cam"
            }
            (count,) = [s.value for s in family.samples if s.name.endswith("_count") and s.labels["stream"] == "cam"]
            assert count > 10 and buckets["+Inf"] == count  # one scrape: +Inf bucket is the count
            values = [buckets[k] for k in sorted(buckets, key=lambda k: float(k))]
            assert values == sorted(values), f"{name}: buckets not cumulative"
        decoded = sample(metrics, "edge_agent_stream_frames_decoded_total", stream="cam")
        processed = sample(metrics, "edge_agent_stream_frames_processed_total", stream="cam")
        assert decoded >= processed > 10
        assert "edge_agent_stream_frames_dropped_total" in metrics
        assert sample(metrics, "edge_agent_stream_frames_dropped_total", stream="cam", reason="replaced") >= 0
        assert sample(metrics, "edge_agent_stream_state", stream="cam", state="streaming") == 1
        assert sample(metrics, "edge_agent_stream_state", stream="dead", state="streaming") == 0
        assert sample(metrics, "edge_agent_stream_slot_frames", stream="cam") in (0, 1)
        assert sample(metrics, "edge_agent_mqtt_connected") == 1
        assert sample(metrics, "edge_agent_mqtt_published_total") >= processed * 0.5
        assert sample(metrics, "edge_agent_mqtt_queued") >= 0
        assert sample(metrics, "edge_agent_mqtt_dropped_total", cause="overflow") == 0
        assert sample(metrics, "edge_agent_ready", agent_id="live-test") == 1
        assert "process_cpu_seconds_total" in metrics

        # A viewer still watching does not hold up the stop, and its stream is ended cleanly.
        lingering = MjpegReader("127.0.0.1", port, "/streams/cam/live.mjpg")
        lingering.read_part()
        stopping = time.monotonic()
        assert agent.terminate(30) == 0, agent.stderr()
        assert time.monotonic() - stopping < 6, "a connected viewer held the stop up"
        lingering.response.read()  # the rest of the stream up to its end (a timeout would raise)
        lingering.close()
        log = agent.stderr_path.read_text(errors="replace")
        assert not _errors_in(log), "\n".join(_errors_in(log))


def test_http_token_guards_everything_but_the_probes(tmp_path: Path, clip_factory) -> None:  # type: ignore[no-untyped-def]
    clip = clip_factory(3.0, 30, (320, 240))
    model_dir = known_objects_model(tmp_path / "model")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        model_dir,
        port,
        tmp_path,
        STREAMS=f"cam={clip}",
        STREAM_CAM_LOOP="true",
        CONTROL_API="true",
        HTTP_TOKEN=TOKEN,
        STDOUT_SINK="true",
    )
    with AgentProcess(env, tmp_path) as agent:
        wait_for_picture(base, "cam", bearer(TOKEN))
        # Probes stay open (no token needed; their own status says how the agent is).
        status, body = get_json(f"{base}/healthz")
        assert status in (200, 503) and body["streams"] == {"cam": body["streams"]["cam"]}
        assert request(f"{base}/readyz")[0] == 200
        protected = ["/", "/live.json", "/metrics", "/streams", "/streams/cam/latest.jpg", "/streams/cam/live.mjpg"]
        for path in protected:
            status, headers, body = request(base + path, timeout=5)
            assert status == 401, (path, status)
            assert "Bearer" in headers.get("WWW-Authenticate", ""), (path, headers)
            status, _, _ = request(base + path, headers=bearer("wrong-token-0123456789abc"), timeout=5)
            assert status == 401, path
        status, _, body = request(f"{base}/", timeout=5)
        assert b"<form" in body and b"HTTP_TOKEN" in body  # a person gets a way in, not a JSON error
        # Bearer, Basic (VLC / Home Assistant) and the query parameter all work.
        assert request(f"{base}/metrics", headers=bearer(TOKEN))[0] == 200
        assert request(f"{base}/streams/cam/latest.jpg", headers=basic("viewer", TOKEN))[0] == 200
        assert request(f"{base}/streams/cam/latest.jpg?token={TOKEN}")[0] == 200
        reader = MjpegReader("127.0.0.1", port, f"/streams/cam/live.mjpg?token={TOKEN}")
        assert reader.status == 200 and decode_jpeg(reader.read_part().jpeg).shape == (240, 320, 3)
        reader.close()
        # The page with ?token= sets an HttpOnly cookie and sends the browser to the bare URL.
        status, headers, _ = request(f"{base}/?token={TOKEN}")
        assert status == 303 and headers["Location"] == "./"
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert cookie == f"edge_agent_token={TOKEN}" and "HttpOnly" in headers["Set-Cookie"]
        assert "SameSite=Strict" in headers["Set-Cookie"]
        status, _, body = request(f"{base}/", headers={"Cookie": cookie})
        assert status == 200 and b"<title>edge-agent</title>" in body
        assert request(f"{base}/streams/cam/latest.jpg", headers={"Cookie": cookie})[0] == 200
        # The login form does the same.
        status, headers, _ = request(
            f"{base}/login",
            method="POST",
            body=f"token={TOKEN}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 303 and f"edge_agent_token={TOKEN}" in headers["Set-Cookie"]
        # A cookie (or query token) is not enough to change streams: another site cannot make a
        # logged-in browser do it. The header is.
        change = {"url": str(clip), "loop": True}
        assert request(f"{base}/streams/two", method="PUT", body=change, headers={"Cookie": cookie})[0] == 401
        assert request(f"{base}/streams/two?token={TOKEN}", method="PUT", body=change)[0] == 401
        assert request(f"{base}/streams/two", method="PUT", body=change, headers=bearer(TOKEN))[0] == 201
        assert agent.terminate(30) == 0, agent.stderr()
        out = agent.stderr_path.read_text(errors="replace") + str(agent.lines)
        assert TOKEN not in out, "the token leaked into the agent's output"


def test_readyz_flips_from_503_to_200_while_the_model_downloads(tmp_path: Path, model_server) -> None:  # type: ignore[no-untyped-def]
    preds = np.zeros((5, 1), np.float32)
    preds[:, 0] = [160, 160, 100, 100, 0.9]
    model_server.add_model(
        "slowproj", "1", constant_detector(preds), environment=letterbox_env(320, 320), classes=["thing"]
    )
    model_server.delay("/artifacts/slowproj/1/weights.onnx", seconds=4.0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clip = tmp_path / "clip.mp4"
    from tests.fixtures.media import make_clip

    make_clip(clip, seconds=1.0, size=(320, 240))
    env = _env(
        Path("unused"),
        port,
        tmp_path,
        MODEL_ID="slowproj/1",
        API_BASE_URL=model_server.base_url,
        STREAMS=f"cam={clip};dead=rtsp://127.0.0.1:9/none",
        STREAM_CAM_LOOP="true",
    )
    answers: list[tuple[int, dict]] = []
    with AgentProcess(env, tmp_path) as agent:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, body = get_json(f"{base}/readyz", timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            answers.append((status, body))
            if status == 200:
                break
            time.sleep(0.1)
        assert answers and answers[-1][0] == 200, f"{answers[-3:]}\n{agent.stderr()}"
        first_status, first = answers[0]
        assert first_status == 503, answers[0]
        assert first["ready"] is False and first["missing"]["models"] == ["slowproj/1"]
        assert set(first["missing"]["streams"]) == {"cam", "dead"}
        assert sum(1 for s, _ in answers if s == 503) >= 5, "the server was not up during the download"
        ready = answers[-1][1]
        assert ready["ready"] is True and ready["missing"] == {"models": [], "streams": []}
        assert ready["models"] == ["slowproj/1"] and set(ready["streams"]) == {"cam", "dead"}
        # The dead camera is in backoff, and that does not hold readiness back.
        assert ready["streams"]["dead"] != "streaming"
        assert agent.terminate(30) == 0, agent.stderr()


@pytest.mark.parametrize("bad", ["0", "61", "x"])
def test_live_view_settings_are_checked(bad: str) -> None:
    from tests.test_agent_config import run_cli

    result = run_cli("config", env={"LIVE_VIEW_MAX_FPS": bad})
    assert result.returncode == 2 and "LIVE_VIEW_MAX_FPS" in result.stderr, result.stderr
