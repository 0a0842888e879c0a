"""End to end: real RTSP server, real mosquitto, real clips, ``edge-agent run`` as a subprocess."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import psutil
import pytest

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import MqttSubscriber
from tests.slow_model import write_slow_model
from tools.synthworld import CLASS_NAMES, write_clip

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "e2e-agent"


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_ground_truth(message: dict[str, Any], gts: list[tuple]) -> tuple[int, int, int]:
    """(matched ground truths, ground truths, predictions) with class and IoU >= 0.5."""
    preds = [
        (
            (p["x"] - p["width"] / 2, p["y"] - p["height"] / 2, p["x"] + p["width"] / 2, p["y"] + p["height"] / 2),
            p["class"],
        )
        for p in message["predictions"]
    ]
    used: set[int] = set()
    matched = 0
    for gt in gts:
        best, best_iou = None, 0.5
        for i, (box, cls) in enumerate(preds):
            if i in used or cls != CLASS_NAMES[int(gt[4])]:
                continue
            v = iou(box, gt[:4])
            if v >= best_iou:
                best, best_iou = i, v
        if best is not None:
            used.add(best)
            matched += 1
    return matched, len(gts), len(preds)


@pytest.fixture(scope="module")
def static_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[tuple], tuple[int, int]]]:
    """Three static synthetic scenes of different sizes; every frame has the same ground truth."""
    directory = tmp_path_factory.mktemp("clips")
    clips = {}
    for name, (w, h, seed) in {"cam1": (1280, 720, 101), "cam2": (640, 360, 102), "clip": (960, 540, 103)}.items():
        path = directory / f"{name}.mp4"
        gts = write_clip(path, seconds=3, width=w, height=h, seed=seed, max_speed=0, noise_sigma=3.0, n_objects=4)
        clips[name] = (path, gts[0], (w, h))
    return clips


def by_stream(sub: MqttSubscriber, kind: str = "predictions") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for msg in list(sub.messages):
        if msg.topic.endswith("/" + kind):
            payload = msg.json()
            if payload["message_id"] not in seen:  # QoS 1 is at-least-once
                seen.add(payload["message_id"])
                out[payload["stream"]].append(payload)
    return out


def agent_env(broker, tmp_path: Path, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "AGENT_ID": AGENT,
        "STATS_INTERVAL": "1",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "OFFLINE_MODE": "true",
    }
    env.update(extra)
    return env


def test_three_streams_to_mqtt_then_sigterm(
    tmp_path: Path,
    static_clips,
    rtsp_server_factory,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    rtsp = rtsp_server_factory({"cam1": static_clips["cam1"][0], "cam2": static_clips["cam2"][0]})
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    streams = f"cam1={rtsp.url('cam1')};cam2={rtsp.url('cam2')};clip={static_clips['clip'][0]}"
    env = agent_env(mosquitto, tmp_path, STREAMS=streams, STREAM_CLIP_LOOP="true")
    with AgentProcess(env, tmp_path) as agent:
        ok = sub.wait_for(lambda _: all(len(by_stream(sub)[s]) >= 8 for s in static_clips), timeout=120)
        assert ok, f"not every stream published: { {k: len(v) for k, v in by_stream(sub).items()} }\n{agent.stderr()}"

        def all_streaming(_: object) -> bool:
            stats = [m.json() for m in list(sub.messages) if m.topic.endswith("/stats")]
            return bool(stats) and all(s["state"] == "streaming" for s in stats[-1]["streams"].values())

        assert sub.wait_for(all_streaming, timeout=15), agent.stderr()

        messages = by_stream(sub)
        for name, (_, gts, (w, h)) in static_clips.items():
            got = messages[name]
            for m in got:
                jsonschema.validate(m, SCHEMA)
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(len(seqs))), f"{name}: seq not 0,1,2,... {seqs}"
            frame_ids = [m["frame_id"] for m in got]
            assert frame_ids == sorted(set(frame_ids)), f"{name}: frame ids not increasing"
            assert all(m["image"] == {"width": w, "height": h} for m in got)
            assert all(m["agent_id"] == AGENT and m["model_id"] == "builtin/shapes-v1" for m in got)
            matched = total = npred = 0
            for m in got:
                a, b, c = match_ground_truth(m, gts)
                matched, total, npred = matched + a, total + b, npred + c
            assert matched >= 0.9 * total, f"{name}: recall {matched}/{total}"
            assert matched >= 0.9 * npred, f"{name}: precision {matched}/{npred}"

        status = [m for m in sub.messages if m.topic == f"edge-agent/{AGENT}/status"]
        assert status and status[0].text == "online"
        stats = [m.json() for m in sub.messages if m.topic.endswith("/stats")][-1]
        assert set(stats["streams"]) == set(static_clips)
        for entry in stats["streams"].values():
            assert entry["fps_in"] > 0 and entry["processed"] > 0 and entry["latency_ms"]["p50"] > 0

        rc = agent.terminate(timeout=30)
        assert rc == 0, agent.stderr()
    assert sub.wait_for_payload(f"edge-agent/{AGENT}/status", "offline", timeout=5)


def test_live_stream_with_slow_model_keeps_frames_fresh_and_memory_flat(
    tmp_path: Path,
    rtsp_server_factory,  # type: ignore[no-untyped-def]
) -> None:
    clip = tmp_path / "live.mp4"
    write_clip(clip, seconds=4, width=1280, height=720, seed=7, max_speed=6.0, noise_sigma=2.0)
    rtsp = rtsp_server_factory({"live": clip})
    # Well under 30 fps on these machines, even with two batches in flight (MODEL_CONCURRENCY auto).
    model_dir = write_slow_model(tmp_path / "slow", layers=28)
    env = {
        "STREAMS": f"live={rtsp.url('live')}",
        "MODEL_ID": str(model_dir),
        "STDOUT_SINK": "true",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait_for(lambda p: len(p) >= 3, timeout=60), agent.stderr()
        proc = psutil.Process(agent.proc.pid)
        rss: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < 15:
            rss.append(proc.memory_info().rss / 2**20)
            time.sleep(0.25)
        assert agent.terminate(30) == 0, agent.stderr()
    preds = agent.predictions()[3:]
    ages = np.array([p["frame_age_ms"] for p in preds])
    inference = np.median([p["inference_ms"] for p in preds])
    gaps = np.diff([p["frame_id"] for p in preds])
    interval_ms = 1000 / 30
    assert inference > interval_ms, f"model too fast for this test ({inference:.1f} ms)"
    assert gaps.mean() > 1.5, "frames were not dropped although the model is slower than the camera"
    assert np.median(ages) < 2 * interval_ms, f"frame age p50 {np.median(ages):.1f} ms"
    assert np.percentile(ages, 90) < 2 * interval_ms, f"frame age p90 {np.percentile(ages, 90):.1f} ms"
    third = len(rss) // 3
    growth = np.mean(rss[-third:]) - np.mean(rss[:third])
    assert growth < 20, f"RSS grew {growth:.1f} MiB: {rss[:3]} ... {rss[-3:]}"


def test_every_mode_processes_every_frame_and_exits(tmp_path: Path) -> None:
    clip = tmp_path / "every.mp4"
    write_clip(clip, seconds=2, width=640, height=360, seed=5, max_speed=8.0, noise_sigma=2.0)
    model_dir = write_slow_model(tmp_path / "slow", layers=2)
    env = {
        "STREAMS": f"clip={clip}",
        "STREAM_CLIP_MODE": "every",
        "MODEL_ID": str(model_dir),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=120)  # a finished file stream ends the agent by itself
    assert rc == 0, agent.stderr()
    preds = agent.predictions()
    assert [p["frame_id"] for p in preds] == list(range(60))
    assert [p["seq"] for p in preds] == list(range(60))


def test_camera_outage_reconnects_and_other_streams_never_stop(
    tmp_path: Path,
    static_clips,
    rtsp_server_factory,
    mosquitto,
    mqtt_subscriber_factory,  # type: ignore[no-untyped-def]
) -> None:
    rtsp = rtsp_server_factory({"cam1": static_clips["cam2"][0]})
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    streams = f"cam1={rtsp.url('cam1')};clip={static_clips['clip'][0]};dead=rtsp://127.0.0.1:9/nothing"
    env = agent_env(
        mosquitto,
        tmp_path,
        STREAMS=streams,
        STREAM_CLIP_LOOP="true",
        STREAM_CLIP_MAX_FPS="10",
        RECONNECT_BACKOFF_MAX="2",
        STREAM_STALL_TIMEOUT="3",
    )
    with AgentProcess(env, tmp_path) as agent:
        assert sub.wait_for(lambda _: all(len(by_stream(sub)[s]) >= 3 for s in ("cam1", "clip")), timeout=90), (
            agent.stderr()
        )
        rtsp.kill()  # the camera vanishes
        time.sleep(1.0)  # let in-flight frames drain
        before = {k: len(v) for k, v in by_stream(sub).items()}
        time.sleep(4.0)
        during = {k: len(v) for k, v in by_stream(sub).items()}
        assert during["clip"] - before["clip"] >= 10, "the file stream stalled while the camera was down"
        assert during["cam1"] - before["cam1"] <= 1, "the dead camera kept publishing?"

        rtsp.restart()
        assert sub.wait_for(lambda _: len(by_stream(sub)["cam1"]) >= during["cam1"] + 3, timeout=45), agent.stderr()
        assert sub.wait_for(
            lambda _: any(
                m.topic.endswith("/stats")
                and m.json()["streams"]["cam1"]["reconnects"] >= 1
                and m.json()["streams"]["cam1"]["state"] == "streaming"
                for m in list(sub.messages)
            ),
            timeout=10,
        )
        last_stats = [m.json() for m in sub.messages if m.topic.endswith("/stats")][-1]
        assert last_stats["streams"]["dead"]["state"] in ("connecting", "backoff")
        assert last_stats["streams"]["dead"]["last_error"]
        assert agent.terminate(30) == 0, agent.stderr()
