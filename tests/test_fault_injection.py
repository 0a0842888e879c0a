"""Nothing lost across crashes, restarts and broker outages: real mosquitto, real RTSP server, real
agent processes killed at bad moments, all on 127.0.0.1.

Subscribers that must see every message use a persistent session saved in the broker's
persistence file (so a broker restart keeps their subscription and queue) and subscribe with QoS
0 (so a SIGKILLed broker's socket to them closes cleanly instead of resetting, which would throw
away data the broker had already written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from edge_agent.pipelines import state
from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import Mosquitto, MqttSubscriber, free_port

AGENT = "fault-agent"
REPO = Path(__file__).resolve().parent.parent
PREDICTIONS = f"edge-agent/{AGENT}/+/predictions"
STATUS = f"edge-agent/{AGENT}/status"


def env_for(broker: Mosquitto, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "AGENT_ID": AGENT,
        "STATE_DIR": str(state_dir),
        "OFFLINE_MODE": "true",
        "STATS_INTERVAL": "1",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def every_frame_stream(clip: Path) -> dict[str, str]:
    return {"STREAMS": f"clip={clip}", "STREAM_CLIP_MODE": "every", "STREAM_CLIP_LOOP": "true"}


def received(sub: MqttSubscriber) -> list[dict[str, Any]]:
    """Prediction payloads, first copy of each message_id, in arrival order, with arrival time."""
    out, seen = [], set()
    for m in list(sub.messages):
        if not m.topic.endswith("/predictions"):
            continue
        payload = m.json()
        if payload["message_id"] in seen:
            continue
        seen.add(payload["message_id"])
        payload["_received_at"] = m.received_at
        out.append(payload)
    return out


def missing_seqs(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    by_stream: dict[str, set[int]] = defaultdict(set)
    for m in messages:
        by_stream[m["stream"]].add(m["seq"])
    gaps = {s: sorted(set(range(max(seqs) + 1)) - seqs) for s, seqs in by_stream.items()}
    return {s: g for s, g in gaps.items() if g}


def keeper(broker: Mosquitto, factory: Any) -> MqttSubscriber:
    sub = factory(broker, PREDICTIONS, persistent=True, client_id="fault-keeper")
    broker.save()  # the session and its subscription survive a SIGKILL of the broker
    return sub


def wait_count(sub: MqttSubscriber, agent: AgentProcess, count: int, timeout: float, **match: Any) -> None:
    def enough(_: object) -> bool:
        return sum(all(m.get(k) == v for k, v in match.items()) for m in received(sub)) >= count

    assert sub.wait_for(enough, timeout), f"fewer than {count} predictions {match}\n{agent.stderr()}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def loop_clip(clip_factory: Any) -> Path:
    return clip_factory(2.0, 30, (320, 240))


# 1 -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_killed_for_20_s_every_seq_arrives_and_publishing_resumes_quickly(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    loop_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = keeper(broker, mqtt_subscriber_factory)
    port = free_port()
    env = env_for(broker, tmp_path / "state", HEALTH_PORT=str(port), **every_frame_stream(loop_clip))
    reconnect_max = 5.0  # the default of MQTT_RECONNECT_MAX
    with AgentProcess(env, tmp_path) as agent:
        wait_count(sub, agent, 30, 60)
        broker.kill()
        killed = time.monotonic()
        health: dict[str, Any] = {}
        while time.monotonic() - killed < 20:
            time.sleep(1)
            health = get_json(f"http://127.0.0.1:{port}/healthz")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        before = len(received(sub))
        broker.start()
        up = time.time()
        assert sub.wait_for(lambda _: len(received(sub)) > before, reconnect_max + 5), agent.stderr()
        resumed_after = min(m["_received_at"] for m in received(sub)[before:]) - up
        wait_count(sub, agent, len(received(sub)) + 30, 30)
        assert agent.terminate(30) == 0

    # the probe stays green while streams work; it shows the outage
    assert health["ok"] is True
    mqtt = health["mqtt"]
    assert mqtt["connected"] is False and mqtt["queued"] > 10 and mqtt["oldest_queued_age_s"] > 15, health
    assert "edge_agent_mqtt_connected 0" in metrics
    assert 'edge_agent_mqtt_dropped_total{cause="overflow"} 0' in metrics
    queued = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("edge_agent_mqtt_queued ")))
    assert queued > 10

    messages = received(sub)
    assert missing_seqs(messages) == {}, f"lost across the outage: {missing_seqs(messages)}"
    assert resumed_after <= reconnect_max + 1.0, f"publishing resumed {resumed_after:.1f} s after the broker"
    print(
        f"\n[1] {len(messages)} messages, none missing; {mqtt['queued']} queued at 20 s (oldest "
        f"{mqtt['oldest_queued_age_s']:.1f} s); publishing resumed {resumed_after:.2f} s after the broker"
    )


# 2 and 3 -------------------------------------------------------------------------------------------


def _outage_then_stop(
    tmp_path: Path, broker: Mosquitto, sub: MqttSubscriber, clip: Path, stop: signal.Signals
) -> tuple[list[dict[str, Any]], AgentProcess, float, int]:
    state_dir = tmp_path / "state"
    env = env_for(broker, state_dir, SHUTDOWN_TIMEOUT="5", **every_frame_stream(clip))
    first_dir = tmp_path / "run1"
    first_dir.mkdir()
    with AgentProcess(env, first_dir) as first:
        wait_count(sub, first, 20, 60)
        broker.stop()
        time.sleep(3)  # predictions pile up in the outbox
        started = time.monotonic()
        if stop == signal.SIGKILL:
            first.proc.kill()
            rc = first.wait(10)
        else:
            rc = first.terminate(30)
        stopped_in = time.monotonic() - started
    broker.start()
    second_dir = tmp_path / "run2"
    second_dir.mkdir()
    with AgentProcess(env, second_dir) as second:
        first_run = received(sub)[0]["run_id"]
        assert sub.wait_for(lambda _: sum(m["run_id"] != first_run for m in received(sub)) >= 20, 60), second.stderr()
        assert second.terminate(30) == 0
    return received(sub), first, stopped_in, rc


def test_agent_sigkilled_during_an_outage_loses_no_seq(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    loop_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = keeper(broker, mqtt_subscriber_factory)
    messages, _, _, rc = _outage_then_stop(tmp_path, broker, sub, loop_clip, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert missing_seqs(messages) == {}, missing_seqs(messages)
    runs = list(dict.fromkeys(m["run_id"] for m in messages))
    assert len(runs) == 2
    one = [m["seq"] for m in messages if m["run_id"] == runs[0]]
    two = [m["seq"] for m in messages if m["run_id"] == runs[1]]
    assert min(two) == max(one) + 1, "the restarted agent continues right above the last seq of the dead one"
    assert len(one) > 20 + 10, "the dead agent's outage backlog was replayed"
    print(f"\n[2] run 1 seq 0..{max(one)} all delivered (backlog replayed by run 2), run 2 from {min(two)}")


def test_sigterm_during_an_outage_keeps_the_outbox_and_exits_in_time(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    loop_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = keeper(broker, mqtt_subscriber_factory)
    messages, first, stopped_in, rc = _outage_then_stop(tmp_path, broker, sub, loop_clip, signal.SIGTERM)
    assert rc == 0
    assert stopped_in < 5.0, f"took {stopped_in:.1f} s to stop (SHUTDOWN_TIMEOUT=5)"
    log = first.stderr_path.read_text()
    assert "kept in the outbox" in log and "sent first by the next start" in log, log[-3000:]
    assert missing_seqs(messages) == {}, missing_seqs(messages)
    runs = list(dict.fromkeys(m["run_id"] for m in messages))
    one = [m["seq"] for m in messages if m["run_id"] == runs[0]]
    two = [m["seq"] for m in messages if m["run_id"] == runs[1]]
    assert min(two) == max(one) + 1
    print(f"\n[3] SIGTERM -> exit 0 in {stopped_in:.2f} s; run 1 seq 0..{max(one)} delivered, run 2 from {min(two)}")


# 4 -----------------------------------------------------------------------------------------------

_STORM = """
import asyncio, sys, threading, time
from edge_agent.pipelines.sinks.mqtt import MqttConfig, MqttSink

async def main():
    sink = MqttSink(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), agent_id=sys.argv[2],
                               outbox_path=sys.argv[3], queue_size=1_000_000, reconnect_min_s=5, reconnect_max_s=5))
    await sink.start()
    box = sink._outbox

    def report():
        while True:
            print("committed", box.committed_through, flush=True)
            time.sleep(0.005)

    threading.Thread(target=report, daemon=True).start()
    for i in range(1_000_000):
        sink.publish_prediction("burst", {"seq": i, "message_id": f"m{i}", "stream": "burst", "predictions": []})
        if i % 200 == 0:
            await asyncio.sleep(0)

asyncio.run(main())
"""


def test_sigkill_during_a_write_storm_loses_nothing_written(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    loop_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    broker = mosquitto_factory(start=False)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    db = state_dir / state.DB_NAME
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    storm = subprocess.Popen(
        [sys.executable, "-c", _STORM, str(broker.port), AGENT, str(db)], cwd=REPO, env=env, stdout=subprocess.PIPE
    )
    committed = 0
    try:
        assert storm.stdout is not None
        deadline = time.monotonic() + 60
        while committed < 5000 and time.monotonic() < deadline:
            line = storm.stdout.readline().decode()
            if line.startswith("committed"):
                committed = int(line.split()[1])
        storm.send_signal(signal.SIGKILL)  # mid-storm: the writer is committing batch after batch
        storm.wait(10)
        for line in storm.stdout.read().decode().splitlines():  # reports printed before the kill
            if line.startswith("committed"):
                committed = max(committed, int(line.split()[1]))
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait(5)
    assert committed >= 5000
    import sqlite3

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    conn.close()
    assert stored >= committed  # row ids start at 1, one per message

    broker.start()
    sub = mqtt_subscriber_factory(broker, f"edge-agent/{AGENT}/burst/predictions")
    env_agent = env_for(broker, state_dir, STREAMS=f"clip={loop_clip}", STREAM_CLIP_MODE="every")
    with AgentProcess(env_agent, tmp_path) as agent:  # a real agent opens the outbox and replays it
        assert sub.wait_for(lambda ms: len({m.payload for m in ms}) >= stored, 90), (
            f"{len({m.payload for m in sub.messages})} of {stored}\n{agent.stderr()}"
        )
        assert agent.wait(60) == 0  # the clip ends, the agent flushes and exits
    seqs = [json.loads(m.payload)["seq"] for m in sub.messages]
    assert set(range(committed)) <= set(seqs), "a committed message was lost"
    assert sorted(set(seqs)) == list(range(stored))
    duplicates = len(seqs) - len(set(seqs))
    assert seqs[: len(set(seqs))] == sorted(set(seqs)) or duplicates > 0  # in order, barring resends
    print(f"storm: {committed} committed at the kill, {stored} in the outbox, all delivered, {duplicates} duplicates")


# 5 -----------------------------------------------------------------------------------------------


def retained_status(broker: Mosquitto, factory: Any) -> bytes | None:
    """What a new subscriber is served for the status topic (None: nothing retained)."""
    sub = factory(broker, STATUS)
    sub.wait_for(lambda ms: bool(ms), 0.5)
    payloads = [m.payload for m in sub.messages if m.retain]
    sub.close()
    return payloads[0] if payloads else None


def test_online_of_a_dead_agent_expires_on_a_restarted_persistent_broker(
    tmp_path: Path,
    mosquitto_factory,
    mqtt_subscriber_factory,
    loop_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    expiry = 6
    broker = mosquitto_factory(persistence=True)
    env = env_for(broker, tmp_path / "state", MQTT_ONLINE_EXPIRY=str(expiry), STREAMS=f"clip={loop_clip}")
    env["STREAM_CLIP_LOOP"] = "true"
    watcher = mqtt_subscriber_factory(broker, STATUS)
    with AgentProcess(env, tmp_path) as agent:
        assert watcher.wait_for(lambda ms: sum(m.payload == b"online" for m in ms) >= 2, expiry + 5), (
            "online is refreshed (heartbeat)\n" + agent.stderr()
        )
        online = [m for m in watcher.messages if m.payload == b"online"]
        assert all(m.properties.get("MessageExpiryInterval", 0) <= expiry for m in online)
        broker.save()  # the retained "online" is in the broker's persistence file
        broker.kill()  # the broker dies first: nobody is left to publish the agent's will
        agent.proc.kill()
        agent.wait(10)
        died = time.monotonic()
    broker.start()
    assert retained_status(broker, mqtt_subscriber_factory) == b"online"  # restored from persistence
    while retained_status(broker, mqtt_subscriber_factory) == b"online":
        assert time.monotonic() - died < expiry + 5, "a dead agent's online never went away"
        time.sleep(0.2)
    gone_after = time.monotonic() - died
    assert gone_after <= expiry + 1.0, f"online served {gone_after:.1f} s after the agent died (bound {expiry} s)"
    print(f"\n[5] retained online gone {gone_after:.1f} s after the agent died (MQTT_ONLINE_EXPIRY={expiry})")


# 6 -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stalled_rtsp_camera_never_gets_a_fresh_frame_time_for_an_old_frame(
    tmp_path: Path,
    mosquitto,
    mqtt_subscriber_factory,
    rtsp_server_factory,
    small_clip: Path,  # type: ignore[no-untyped-def]
) -> None:
    server = rtsp_server_factory({"cam1": small_clip})
    sub = mqtt_subscriber_factory(mosquitto, PREDICTIONS)
    env = env_for(mosquitto, tmp_path / "state", STREAMS=f"cam={server.url('cam1')}")
    with AgentProcess(env, tmp_path) as agent:
        wait_count(sub, agent, 30, 60)
        stopped = time.time()
        server.pause()
        time.sleep(10)
        resumed = time.time()
        server.resume()
        assert sub.wait_for(lambda _: any(m["frame_time"] > resumed for m in received(sub)), 40), agent.stderr()
        agent.terminate(30)
    # Frames in flight when the server froze arrive within a few tens of ms; nothing captured later
    # than that can be a real frame until the server runs again.
    liars = [m for m in received(sub) if stopped + 0.5 < m["frame_time"] < resumed]
    assert liars == [], [(round(m["frame_time"] - stopped, 2), m["frame_age_ms"]) for m in liars]
    ages = [m["_received_at"] - m["frame_time"] for m in received(sub)]
    assert min(ages) >= -0.05, "frame_time after the message arrived"
    late = [a for a in ages if a > 1.0]
    print(f"\n[6] {len(ages)} messages; {len(late)} published late, with their true age (max {max(ages):.1f} s)")
