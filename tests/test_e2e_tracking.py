"""Tracking, zones, lines and events end to end: a real agent with the built-in model on clips of
the tracking world (objects with identities that enter, leave, stop and pass behind a pillar),
a real mosquitto, and the agent killed at bad moments."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from edge_agent.pipelines.events.options import TrackingOptions
from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import MqttSubscriber, free_port
from tests.http_client import get_json, request
from tests.tracking_truth import event_counts, identity_map, truth_counts
from tools.synthworld import write_tracking_clip

AGENT = "track-agent"
ROOT = Path(__file__).resolve().parent.parent
EVENT_SCHEMA = json.loads((ROOT / "pipelines" / "schemas" / "event.schema.json").read_text())
PREDICTION_SCHEMA = json.loads((ROOT / "pipelines" / "schemas" / "prediction.schema.json").read_text())
ZONES = "bay=0.15,0 0.4,0 0.4,1 0.15,1"
LINES = "door=0.5,0 0.5,1"
EVENT_TYPES = ("track.", "zone.", "line.")


@pytest.fixture(scope="module")
def world_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("tracking")
    path = directory / "world.mp4"
    write_tracking_clip(path, 12.0, 960, 540, seed=3, gt_path=directory / "world.json")
    return path, json.loads((directory / "world.json").read_text())


def env_for(broker: Any, state_dir: Path, clip: Path, **extra: str) -> dict[str, str]:
    return {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "AGENT_ID": AGENT,
        "STATE_DIR": str(state_dir),
        "MODEL_CACHE_DIR": str(state_dir.parent / "cache"),
        "OFFLINE_MODE": "true",
        "STDOUT_SINK": "false",
        "STREAMS": f"clip={clip}",
        "STREAM_CLIP_MODE": "every",
        # the built-in detector scores a few background blobs of this world at about 0.5: false
        # positives that a tracked stream tracks like any detection it publishes
        "STREAM_CLIP_CONFIDENCE": "0.55",
        "STREAM_CLIP_ZONES": ZONES,
        "STREAM_CLIP_LINES": LINES,
        **extra,
    }


def messages(sub: MqttSubscriber, suffix: str) -> list[dict[str, Any]]:
    """JSON messages of topics ending in ``suffix``, de-duplicated on message_id (QoS 1)."""
    out, seen = [], set()
    for m in list(sub.messages):
        if m.topic.endswith(suffix):
            payload = m.json()
            if payload["message_id"] not in seen:
                seen.add(payload["message_id"])
                out.append(payload)
    return out


def latest_retained(sub: MqttSubscriber, prefix: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in list(sub.messages):
        if m.topic.startswith(prefix):
            out[m.topic[len(prefix) :]] = m.payload
    return out


def test_clip_gives_the_true_counts_stable_ids_and_valid_messages(
    tmp_path: Path,
    world_clip: tuple[Path, dict[str, Any]],
    mosquitto: Any,
    mqtt_subscriber_factory: Any,
) -> None:
    clip, gt = world_clip
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#", "homeassistant/#"], qos=1)
    env = env_for(mosquitto, tmp_path / "state", clip, MQTT_HA_DISCOVERY="true")
    with AgentProcess(env, tmp_path) as agent:
        assert agent.wait(240) == 0, agent.stderr()
    base = f"edge-agent/{AGENT}/clip/"
    predictions = messages(sub, "/predictions")
    assert len(predictions) == len(gt["frames"]), "MODE=every: one message per frame"
    for m in predictions:
        jsonschema.validate(m, PREDICTION_SCHEMA)
        assert all(isinstance(p["tracker_id"], int) and p["tracker_id"] >= 1 for p in m["predictions"])

    events = sorted(messages(sub, "/events"), key=lambda e: e["seq"])
    for e in events:
        jsonschema.validate(e, EVENT_SCHEMA)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len({e["event_id"] for e in events}) == len(events)

    # exact counts: what the rules give on the true boxes and identities
    options = TrackingOptions(zones=ZONES, lines=LINES)  # type: ignore[arg-type]
    t_lines, t_zones = truth_counts(gt, options)
    e_lines, e_zones = event_counts(events)
    assert sum(t_lines.values()) >= 3 and sum(t_zones.values()) >= 3, "the clip must exercise the line and zone"
    assert e_lines == t_lines
    assert e_zones == t_zones

    # one tracker id per true object, through the pillar; no id shared by two objects
    seen: dict[int, list[int]] = {}
    for k, objects in enumerate(gt["frames"]):
        for o in objects:
            seen.setdefault(int(o[0]), []).append(k)
    occluded = [i for i, ks in seen.items() if any(b - a > 3 for a, b in itertools.pairwise(ks))]
    assert occluded, "some object must pass fully behind the pillar"
    ids = identity_map(predictions, gt)
    for obj in occluded:
        assert len(ids.get(obj, set())) == 1, f"object {obj} got tracker ids {ids.get(obj)} across the occlusion"
    owners: dict[int, set[int]] = {}
    for obj, tids in ids.items():
        for tid in tids:
            owners.setdefault(tid, set()).add(obj)
    assert all(len(o) == 1 for o in owners.values()), f"a tracker id covers two objects: {owners}"
    switches = sum(len(t) - 1 for t in ids.values())
    assert switches <= 1, f"identity switches: {ids}"

    # per track: start first, end last, zone exits before the end
    by_track: dict[int, list[str]] = {}
    for e in events:
        by_track.setdefault(e["tracker_id"], []).append(e["type"])
    for tid, kinds in by_track.items():
        assert kinds[0] == "track.start" and kinds[-1] == "track.end", (tid, kinds)
        assert kinds.count("zone.enter") == kinds.count("zone.exit"), (tid, kinds)

    # retained counts: line totals equal the events; zones empty once every track ended
    counts = latest_retained(sub, base)
    for key, n in t_lines.items():
        assert counts[f"lines/{key}"] == str(n).encode()
    zone_counts = {k: v for k, v in counts.items() if k.startswith("zones/")}
    assert zone_counts and all(v == b"0" for v in zone_counts.values()), zone_counts
    snapshots = {k: v for k, v in counts.items() if k.startswith("snapshots/")}
    assert snapshots and all(v[:2] == b"\xff\xd8" for v in snapshots.values()), "retained JPEG snapshots"

    # Home Assistant: retained discovery documents pointing at the retained counts
    configs = [m for m in list(sub.messages) if m.topic.startswith("homeassistant/")]
    docs = {m.topic: m.json() for m in configs}
    occupancy = [d for t, d in docs.items() if "/binary_sensor/" in t and d.get("device_class") == "occupancy"]
    assert occupancy and all(d["state_topic"].startswith(base + "zones/bay/") for d in occupancy)
    assert any("/event/" in t and d["state_topic"] == base + "events" for t, d in docs.items())
    assert any("/image/" in t and d["image_topic"].startswith(base + "snapshots/") for t, d in docs.items())
    assert any(
        "/sensor/" in t and d["state_topic"].startswith(base + "lines/door/") and d["state_class"] == "total_increasing"
        for t, d in docs.items()
    )

    # the same file processed again, at another pace (one frame per inference call instead of
    # batches), gives the same events: frame time is media time, not wall time
    sub2 = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/clip/events"], qos=1)
    with AgentProcess(env_for(mosquitto, tmp_path / "state2", clip, MAX_BATCH_SIZE="1"), tmp_path) as agent:
        assert agent.wait(240) == 0, agent.stderr()
    again = sorted(messages(sub2, "/events"), key=lambda e: e["seq"])

    def shape(evs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        first = {e["tracker_id"]: i for i, e in reversed(list(enumerate(evs)))}
        return [
            (e["type"], first[e["tracker_id"]], e["class"], e["frame_time"], e.get("zone"), e.get("line")) for e in evs
        ]

    assert shape(again) == shape(events)


def test_events_survive_a_broker_kill_and_an_agent_sigkill(
    tmp_path: Path,
    world_clip: tuple[Path, dict[str, Any]],
    mosquitto_factory: Any,
    mqtt_subscriber_factory: Any,
) -> None:
    clip, _ = world_clip
    broker = mosquitto_factory(persistence=True)
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/+/events", persistent=True, client_id="event-keeper")
    broker.save()  # the keeper's session survives the broker's SIGKILL
    state_dir = tmp_path / "state"
    env = env_for(broker, state_dir, clip, STREAM_CLIP_LOOP="true", SHUTDOWN_TIMEOUT="5")
    run1 = tmp_path / "run1"
    run1.mkdir()
    with AgentProcess(env, run1) as first:
        assert sub.wait_for(lambda _: len(messages(sub, "/events")) >= 10, 120), first.stderr()
        broker.kill()
        time.sleep(4)  # events pile up in the outbox while the broker is away
        first.proc.kill()  # SIGKILL: nothing flushed, nothing said
        first.wait(10)
    broker.start()
    run2 = tmp_path / "run2"
    run2.mkdir()
    first_run = messages(sub, "/events")[0]["run_id"]
    with AgentProcess(env, run2) as second:
        # the first run's events left in the outbox come first (with its run_id), then new ones
        def new_ones(_: object) -> bool:
            return sum(e["run_id"] != first_run for e in messages(sub, "/events")) >= 10

        assert sub.wait_for(new_ones, 120), second.stderr()
        assert second.terminate(30) == 0
    events = messages(sub, "/events")
    by_seq: dict[int, set[str]] = {}
    for e in events:
        by_seq.setdefault(e["seq"], set()).add(e["event_id"])
    seqs = sorted(by_seq)
    assert seqs == list(range(len(seqs))), f"gaps in the events' seq: {sorted(set(range(seqs[-1] + 1)) - set(seqs))}"
    assert all(len(ids) == 1 for ids in by_seq.values()), "one event per seq"
    assert len({e["event_id"] for e in events}) == len(events), "event ids unique across the restart"
    runs = {}
    for e in events:
        runs.setdefault(e["run_id"], []).append(e["tracker_id"])
    assert len(runs) == 2
    first_ids, second_ids = (
        runs[r] for r in sorted(runs, key=lambda r: min(e["seq"] for e in events if e["run_id"] == r))
    )
    assert min(second_ids) > max(first_ids), "tracker ids are never reused after a restart"


def test_zones_and_lines_at_run_time_counts_reset_snapshots_over_http(
    tmp_path: Path,
    world_clip: tuple[Path, dict[str, Any]],
    mosquitto: Any,
    mqtt_subscriber_factory: Any,
) -> None:
    clip, _ = world_clip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state_dir = tmp_path / "state"
    env = env_for(mosquitto, state_dir, clip, STREAM_CLIP_LOOP="true", CONTROL_API="true", HEALTH_PORT=str(port))
    del env["STREAM_CLIP_ZONES"], env["STREAM_CLIP_LINES"]
    topic = f"edge-agent/{AGENT}/clip/"
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    run1 = tmp_path / "run1"
    run1.mkdir()
    with AgentProcess(env, run1) as agent:
        assert sub.wait_for(lambda _: messages(sub, "/events"), 120), agent.stderr()
        assert get_json(f"{base}/streams/clip/geometry") == (200, {"zones": [], "lines": []})
        status, stream = get_json(f"{base}/streams/clip")
        assert status == 200 and stream["tracking"]["events"] > 0 and stream["tracking"]["lines"] == []
        status, _, body = request(
            f"{base}/streams/clip/geometry", method="PUT", body={"zones": "bay=0.15,0 1.4,0 0.4,1"}
        )
        assert status == 400 and "zone 'bay', point 2 (1.4,0)" in json.loads(body)["error"]
        assert request(f"{base}/streams/nope/geometry")[0] == 404
        status, _, body = request(f"{base}/streams/clip/geometry", method="PUT", body={"zones": ZONES, "lines": LINES})
        assert status == 200, body
        assert [z["name"] for z in json.loads(body)["zones"]] == ["bay"]
        assert get_json(f"{base}/streams/clip")[1]["tracking"]["lines"] == ["door"]

        def crossed(_: object) -> bool:
            return any(e["type"] == "line.cross" for e in messages(sub, "/events"))

        assert sub.wait_for(crossed, 120), agent.stderr()
        assert sub.wait_for(lambda _: any(k.startswith("lines/door/") for k in latest_retained(sub, topic)), 10)

        # the live view draws the line (and the zone) set at run time
        status, _, picture = request(f"{base}/streams/clip/latest.jpg")
        assert status == 200
        image = cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR)
        column = image[100:440, 478:483].reshape(-1, 3).astype(int)
        near = np.abs(column - np.array([0, 215, 255])).max(axis=1) < 60
        assert near.mean() > 0.5, "the door line is drawn at x = 0.5 of the frame"

        # a snapshot by the id of any event of its track
        with_snapshot = [e for e in messages(sub, "/events") if e["snapshot"]]
        assert with_snapshot
        time.sleep(0.5)  # written by the store's thread
        status, headers, jpeg = request(f"{base}/events/{with_snapshot[-1]['event_id']}/snapshot.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        assert request(f"{base}/events/0123456789abcdef-1/snapshot.jpg")[0] == 404

        status, _, _ = request(f"{base}/streams/clip/counts/reset", method="POST")
        assert status == 200
        lines_now = {k: v for k, v in latest_retained(sub, topic).items() if k.startswith("lines/")}
        assert sub.wait_for(
            lambda _: all(v == b"0" for k, v in latest_retained(sub, topic).items() if k in lines_now), 10
        ), latest_retained(sub, topic)
        assert agent.terminate(30) == 0
    last = {k: v for k, v in latest_retained(sub, topic).items() if k.startswith("lines/")}
    # wipe them on the broker: after the restart they must come from the agent's saved state
    for key in last:
        sub.client.publish(topic + key, b"", qos=1, retain=True).wait_for_publish(5)

    # after a restart: the zones and lines set at run time are back, the counts continue
    sub2 = mqtt_subscriber_factory(mosquitto, [f"{topic}lines/#"], qos=1)
    run2 = tmp_path / "run2"
    run2.mkdir()
    with AgentProcess(env, run2) as agent:
        assert wait_http(f"{base}/streams/clip/geometry", 60), agent.stderr()
        status, geometry = get_json(f"{base}/streams/clip/geometry")
        assert status == 200 and [ln["name"] for ln in geometry["lines"]] == ["door"]
        assert sub2.wait_for(lambda _: latest_retained(sub2, topic) == last, 20), (latest_retained(sub2, topic), last)
        status, _, _ = request(f"{base}/streams/clip/geometry", method="DELETE")
        assert status == 200 and get_json(f"{base}/streams/clip/geometry")[1] == {"zones": [], "lines": []}
        assert agent.terminate(30) == 0


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if request(url, timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def test_a_live_rtsp_camera_is_tracked_in_capture_time(
    tmp_path: Path,
    world_clip: tuple[Path, dict[str, Any]],
    rtsp_server_factory: Any,
    mosquitto: Any,
    mqtt_subscriber_factory: Any,
) -> None:
    clip, _ = world_clip
    rtsp = rtsp_server_factory({"cam": clip})
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    env = env_for(mosquitto, tmp_path / "state", clip)
    for key in [k for k in env if k.startswith("STREAM_CLIP_")]:
        env[key.replace("STREAM_CLIP_", "STREAM_CAM_")] = env.pop(key)
    del env["STREAM_CAM_MODE"]  # live: latest frame wins, frames dropped when the model is slower
    env["STREAMS"] = f"cam={rtsp.url('cam')}"
    started = time.time()
    with AgentProcess(env, tmp_path) as agent:

        def enough(_: object) -> bool:
            return len(messages(sub, "/events")) >= 5 and len(messages(sub, "/predictions")) >= 20

        assert sub.wait_for(enough, 120), agent.stderr()
        assert agent.terminate(30) == 0
    predictions = messages(sub, "/predictions")
    assert all(isinstance(p["tracker_id"], int) for m in predictions for p in m["predictions"])
    assert any(m["predictions"] for m in predictions)
    events = messages(sub, "/events")
    for e in events:
        jsonschema.validate(e, EVENT_SCHEMA)
        # live time is capture time (unix seconds), not the clip's media time
        assert started - 5 < e["first_seen"] <= e["last_seen"] <= time.time() + 5
    assert {e["type"] for e in events} >= {"track.start"}
