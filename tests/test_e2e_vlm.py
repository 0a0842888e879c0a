"""End to end with a real agent and a real mosquitto: vision-language prompts about streams.

The VLM is a tiny random-weight Florence-2 served as Roboflow serves ``florence-2-base`` (``/ort``
``weights``, a tar.gz); its generation_config makes its greedy answer a known ``<OD>`` box, so each
published answer's boxes are checked against pixels computed by hand. The detector beside it is the
bundled model on the same streams.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import free_port
from tests.http_client import get_json
from tools.synthworld import write_clip

pytest.importorskip("transformers")
pytest.importorskip("PIL")

AGENT = "vlm-e2e"
ANSWER = "a red car<loc_10><loc_20><loc_500><loc_999>"


def _serve_florence(model_server, tmp_path: Path, endless: bool = False) -> None:
    from tests.vlm_factory import florence_checkpoint, tar_gz

    directory = florence_checkpoint(tmp_path / "florence", answer=ANSWER, endless=endless)
    model_server.add_hf_model(
        "florence-pretrains", "3", {"weights.tar.gz": tar_gz(directory)}, "text-image-pairs", "florence-2-base"
    )


def _env(model_server, mosquitto, tmp_path: Path) -> dict[str, str]:
    return {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "LMM_ENABLED": "true",
        "VLM_MODEL_ID": "florence-2-base",
        "STATS_INTERVAL": "1",
        "SHUTDOWN_TIMEOUT": "30",
    }


@pytest.mark.slow
def test_interval_prompt_answered_and_published(tmp_path, model_server, mosquitto, mqtt_subscriber_factory):
    _serve_florence(model_server, tmp_path)
    clip = tmp_path / "cam.mp4"
    write_clip(clip, seconds=2, width=640, height=480, seed=1)
    env = _env(model_server, mosquitto, tmp_path) | {
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_LOOP": "true",
        "STREAM_CAM_VLM_PROMPT": "<OD>",
        "STREAM_CAM_VLM_INTERVAL": "1",
        "VLM_CPU_SHARE": "0.5",  # paced (the default is 0.25), yet quick enough on a loaded CI box
    }
    port = free_port()
    env["HEALTH_PORT"] = str(port)
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    with AgentProcess(env, tmp_path, args=("--seconds", "12")) as agent:
        # while it runs: the newest answer shows beside the stream in the live view's status
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/cam/vlm") for m in msgs), timeout=120)
        status, live = get_json(f"http://127.0.0.1:{port}/live.json", timeout=5)
        assert status == 200
        (cam,) = live["streams"]
        assert cam["vlm"]["prompt"] == "<OD>" and cam["vlm"]["answer"] == "<OD> a red car"
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: sum(m.topic.endswith("/cam/vlm") for m in msgs) >= 2, timeout=30), log[-3000:]
    answers = [m.json() for m in sub.messages if m.topic == f"edge-agent/{AGENT}/cam/vlm"]
    for answer in answers:
        assert answer["kind"] == "interval" and answer["prompt"] == "<OD>" and answer["stream"] == "cam"
        assert answer["model_id"] == "florence-2-base" and answer["image"] == {"width": 640, "height": 480}
        # bins (10, 20, 500, 999) of 640 x 480: centres (N + 0.5) * size / 1000
        assert answer["response"]["<OD>"]["labels"] == ["a red car"]
        assert answer["response"]["<OD>"]["bboxes"] == [pytest.approx([6.72, 9.84, 320.32, 479.76])]
        (row,) = answer["predictions"]
        assert (row["class"], row["confidence"]) == ("a red car", 1.0)
        assert row["x"] == pytest.approx(163.52) and row["height"] == pytest.approx(469.92)
    # asked every second, never every frame: frames of successive answers are >= 1 s apart
    times = sorted(a["frame_time"] for a in answers)
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times
    predictions = [m for m in sub.messages if m.topic == f"edge-agent/{AGENT}/cam/predictions"]
    assert len(predictions) > 2 * len(answers)  # the detector ran on many more frames than were asked about
    stats = [m.json() for m in sub.messages if m.topic.endswith("/stats")]
    vlm = stats[-1]["vlm"]["florence-2-base"]
    assert vlm["answered"] >= len(answers) - 1 and vlm["failed"] == 0  # the last stats may precede the last answer


@pytest.mark.slow
def test_queue_bound_holds_under_a_slow_model(tmp_path, model_server, mosquitto, mqtt_subscriber_factory):
    _serve_florence(model_server, tmp_path, endless=True)  # every answer runs to VLM_MAX_NEW_TOKENS
    clip = tmp_path / "cam.mp4"
    write_clip(clip, seconds=2, width=320, height=240, seed=2)
    names = ("a", "b", "c")
    env = _env(model_server, mosquitto, tmp_path) | {
        "STREAMS": ";".join(f"{n}={clip}" for n in names),
        "VLM_QUEUE_SIZE": "1",
        "VLM_CPU_SHARE": "1",  # unpaced: the answers must finish within the run
        "VLM_MAX_NEW_TOKENS": "300",
    }
    for name in names:
        env |= {
            f"STREAM_{name.upper()}_LOOP": "true",
            f"STREAM_{name.upper()}_MAX_FPS": "5",  # the niced VLM thread gets CPU time on a busy CI box
            f"STREAM_{name.upper()}_VLM_PROMPT": "<CAPTION>",
            f"STREAM_{name.upper()}_VLM_INTERVAL": "1",
        }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    with AgentProcess(env, tmp_path, args=("--seconds", "14")) as agent:
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/vlm") for m in msgs), timeout=30), log[-3000:]
    stats = [m.json()["vlm"]["florence-2-base"] for m in sub.messages if m.topic.endswith("/stats")]
    assert stats and all(s["waiting"] <= 1 for s in stats)  # never more than VLM_QUEUE_SIZE waiting
    # 3 questions a second against answers of 300 tokens: most questions are dropped, and counted;
    # every question is waiting, being answered (at most one), answered, failed or dropped
    assert stats[-1]["dropped"] > 0
    for s in stats:
        assert s["queued"] - s["dropped"] - s["answered"] - s["failed"] - s["waiting"] in (0, 1), s
    answers = [m.json() for m in sub.messages if m.topic.endswith("/vlm")]
    assert answers
    for answer in answers:
        assert answer["new_tokens"] == 300
        assert answer["response"]["<CAPTION>"].startswith(ANSWER + ANSWER)  # the chain goes round
    for name in names:  # the detector kept going on every stream meanwhile
        got = [m for m in sub.messages if m.topic == f"edge-agent/{AGENT}/{name}/predictions"]
        assert len(got) >= 10, (name, len(got))  # ~5 fps for ~12 s; at least 10 on a loaded CI box


@pytest.mark.slow
def test_event_prompt_answered_with_the_event_id(tmp_path, model_server, mosquitto, mqtt_subscriber_factory):
    """A tracked stream (the bundled detector on the tracking world): each track.end asks the VLM about
    the track's best snapshot; the answer carries the event's id."""
    from tools.synthworld import write_tracking_clip

    _serve_florence(model_server, tmp_path)
    clip = tmp_path / "world.mp4"
    write_tracking_clip(clip, 12.0, 960, 540, seed=3, gt_path=tmp_path / "world.json")
    env = _env(model_server, mosquitto, tmp_path) | {
        "STREAMS": f"clip={clip}",
        "STREAM_CLIP_MODE": "every",
        "STREAM_CLIP_CONFIDENCE": "0.55",
        "STREAM_CLIP_VLM_EVENT_PROMPT": "<CAPTION>",
        "STREAM_CLIP_VLM_EVENTS": "track_end",
        "VLM_CPU_SHARE": "1",
        "VLM_QUEUE_SIZE": "50",
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=300)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/clip/vlm") for m in msgs), timeout=30), log[-3000:]
    ends = {
        m.json()["event_id"]: m.json()
        for m in sub.messages
        if m.topic.endswith("/clip/events") and m.json()["type"] == "track.end"
    }
    answers = [m.json() for m in sub.messages if m.topic.endswith("/clip/vlm")]
    assert ends and answers
    for answer in answers:
        assert answer["kind"] == "event" and answer["event"] == "track_end" and answer["prompt"] == "<CAPTION>"
        assert answer["event_id"] in ends  # the id of a published track.end event
        assert answer["response"] == {"<CAPTION>": ANSWER}
        assert "frame_id" not in answer
        # the picture is the track's snapshot (a crop around the object), not the 960x540 frame
        assert answer["image"]["width"] < 960 and answer["image"]["height"] < 540


@pytest.mark.slow
def test_moondream_on_a_stream_in_its_own_low_priority_process(
    tmp_path, model_server, mosquitto, mqtt_subscriber_factory
):
    """Moondream2 asked every second about a stream: the answers are Roboflow detections of the
    prompt (the checkpoint's heads forced to one known box), made in a child process of the agent
    whose every thread runs at nice 19 / SCHED_IDLE while the agent's own threads keep nice 0."""
    import os

    from tests.moondream_factory import Force, moondream_checkpoint
    from tests.vlm_factory import files_of

    directory = moondream_checkpoint(tmp_path / "md", force=Force(token=7, coord_bin=512, size_bins=(1023, 1023)))
    model_server.add_core_model("moondream2", "moondream2_2b_jul24", files_of(directory))
    clip = tmp_path / "cam.mp4"
    write_clip(clip, seconds=2, width=320, height=240, seed=4)
    env = _env(model_server, mosquitto, tmp_path) | {
        "VLM_MODEL_ID": "moondream2/moondream2_2b_jul24",
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_LOOP": "true",
        "STREAM_CAM_MAX_FPS": "5",
        "STREAM_CAM_VLM_PROMPT": "person",
        "STREAM_CAM_VLM_INTERVAL": "1",
        "VLM_CPU_SHARE": "1",
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/#"], qos=1)
    with AgentProcess(env, tmp_path, args=("--seconds", "12")) as agent:
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/cam/vlm") for m in msgs), timeout=120)
        pid = agent.proc.pid
        children = [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]
        priorities = {}
        for child in children:
            for task in Path(f"/proc/{child}/task").iterdir():
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                priorities[(child, int(task.name))] = (int(fields[16]), int(fields[38]))
        own = Path(f"/proc/{pid}/stat").read_text()
        own_fields = own[own.rindex(")") + 2 :].split()
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert priorities and set(priorities.values()) == {(19, getattr(os, "SCHED_IDLE", 5))}, priorities
    assert (int(own_fields[16]), int(own_fields[38])) == (0, 0)
    answers = [m.json() for m in sub.messages if m.topic == f"edge-agent/{AGENT}/cam/vlm"]
    assert answers
    for answer in answers:
        assert answer["model_id"] == "moondream2/moondream2_2b_jul24" and answer["prompt"] == "person"
        assert answer["image"] == {"width": 320, "height": 240} and "response" not in answer
        # centre bin 512 -> 0.5, size bins 1023 -> 1: the whole picture, 50 times (the object limit)
        assert len(answer["predictions"]) == 50
        row = answer["predictions"][0]
        assert (row["x"], row["y"], row["width"], row["height"]) == pytest.approx((160, 120, 320, 240))
        assert (row["class"], row["class_id"], row["confidence"]) == ("person", 0, 1.0)
