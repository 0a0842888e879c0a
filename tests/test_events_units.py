"""The event builder, counts, snapshots, persistence, HA documents and the live overlay (pure or
in-process parts; the end-to-end behaviour is in test_e2e_tracking.py)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models.maths.predictions import Detections
from edge_agent.pipelines.annotate import draw_overlay
from edge_agent.pipelines.events.builder import StreamEvents
from edge_agent.pipelines.events.options import TrackingOptions
from edge_agent.pipelines.events.overlay import Overlay
from edge_agent.pipelines.events.snapshots import SnapshotChoice, SnapshotStore, clearly_better, touches_edge
from edge_agent.pipelines.events.store import ID_BLOCK, TrackingStore
from edge_agent.pipelines.sinks.mqtt_config import MqttConfig
from edge_agent.pipelines.sinks.mqtt_discovery import count_discovery, event_discovery, snapshot_discovery

NAMES = ("car", "person")
SIZE = (200, 100)


def det(*objects: tuple[float, float, int, float]) -> Detections:
    """Boxes 20x20 with their bottom centre at (x, y), class, confidence."""
    boxes = np.array([[x - 10, y - 20, x + 10, y] for x, y, _, _ in objects], dtype=np.float64).reshape(-1, 4)
    conf = np.array([c for *_, c in objects], dtype=np.float32)
    cls = np.array([k for _, _, k, _ in objects], dtype=np.int64)
    return Detections(boxes, conf, cls, NAMES, SIZE)


def run(se: StreamEvents, frames: list[Detections], t0: float = 0.0, dt: float = 0.1) -> list[dict]:
    events = []
    for k, d in enumerate(frames):
        events += se.process(d, t0 + k * dt, None).events
    return events


def options(**kw: object) -> TrackingOptions:
    base: dict[str, object] = {
        "zones": "bay=0.25,0 0.5,0 0.5,1 0.25,1",
        "lines": "door=0.75,0 0.75,1",
        "zone_enter": "2",
        "zone_exit": "2",
        "snapshots": False,
        "event_update_s": 0.0,
    }
    return TrackingOptions.model_validate(base | kw)


def test_every_detection_has_an_integer_id_from_its_first_frame_events_wait_for_confirmation() -> None:
    se = StreamEvents("cam", options())
    first = se.process(det((20, 50, 0, 0.9), (150, 50, 1, 0.9)), 0.0, None)
    assert first.prediction.track_ids.tolist() == [1, 2] and first.events == []
    second = se.process(det((22, 50, 0, 0.9), (150, 50, 1, 0.9), (100, 90, 0, 0.3)), 0.1, None)
    assert second.prediction.track_ids.tolist() == [1, 2, 3]
    assert [(e["type"], e["tracker_id"]) for e in second.events] == [("track.start", 1), ("track.start", 2)]
    rows = second.prediction.to_response()["predictions"]
    assert [r["tracker_id"] for r in rows] == [1, 2, 3] and all(type(r["tracker_id"]) is int for r in rows)
    # whatever its score: the stream's CONFIDENCE decided what is published, the tracker follows it
    third = se.process(det((24, 50, 0, 0.9), (150, 50, 1, 0.05)), 0.2, None)
    assert third.prediction.track_ids.tolist() == [1, 2]


def test_event_order_for_a_track_that_walks_through_a_zone_and_a_line_then_vanishes_in_the_zone() -> None:
    se = StreamEvents("cam", options(lost_s=0.5))
    # x = 20, 30, ..., 170 (through the zone 50..100 and the line at 150), a pause, then back
    # into the zone (160, 150, ..., 80) where it vanishes
    path = [det((20 + 10 * k, 50, 0, 0.9)) for k in range(16)] + [det((170, 50, 0, 0.9))] * 5
    back = [det((170 - 10 * k, 50, 0, 0.9)) for k in range(1, 10)]
    events = run(se, path + back + [det()] * 8)
    kinds = [(e["type"], e.get("zone") or e.get("line"), e.get("direction")) for e in events]
    assert kinds == [
        ("track.start", None, None),
        ("zone.enter", "bay", None),  # x=50 (first in) and 60: confirmed on the second frame
        ("track.update", None, None),
        ("zone.exit", "bay", None),  # x=100 is out (half-open edge), confirmed at 110
        ("track.update", None, None),
        ("line.cross", "door", "in"),  # left to right across x=150
        ("line.cross", "door", "out"),  # back
        ("zone.enter", "bay", None),
        ("track.update", None, None),
        ("zone.exit", "bay", None),  # closed by the track's end, before it
        ("track.end", None, None),
    ]
    enter, exit_ = events[1], events[3]
    assert enter["frame_time"] == pytest.approx(0.4) and enter["zones"] == ["bay"]
    assert exit_["time_in_zone"] == pytest.approx(0.5)  # in at 0.3 (x=50), out at 0.8 (x=100)
    end = events[-1]
    assert events[-2]["frame_time"] == end["frame_time"] == end["last_seen"] == pytest.approx(2.9)
    assert end["entered_zones"] == ["bay"] and end["zones"] == []
    assert len({e["event_id"] for e in events}) == len(events)
    assert len({e["event_id"].rsplit("-", 1)[0] for e in events}) == 1  # one track key


def test_counts_are_published_on_change_and_line_totals_accumulate() -> None:
    se = StreamEvents("cam", options(), line_totals={"door/car/in": 5})
    assert se.initial_counts() == {"lines/door/car/in": 5}
    published: dict[str, int] = {}
    for k in range(16):
        out = se.process(det((20 + 10 * k, 50, 0, 0.9)), k * 0.1, None)
        published.update(out.counts)
        if k == 4:  # confirmed inside at x=60
            assert out.counts == {"zones/bay/car": 1, "zones/bay/car/active": 1}
    assert published["zones/bay/car"] == 0 and published["lines/door/car/in"] == 6
    assert se.reset_counts() == {"lines/door/car/in": 0}


def test_stationary_then_active_and_loitering() -> None:
    se = StreamEvents("cam", options(stationary_s=1.0, loiter_s=2.0, event_update_s=0.5))
    frames = [det((60, 50, 0, 0.9))] * 40 + [det((60 + 10 * k, 50, 0, 0.9)) for k in range(1, 4)]
    events = run(se, frames)
    kinds = [(e["type"], tuple(e.get("reasons", ())), e.get("zone")) for e in events]
    assert ("track.update", ("stationary",), None) in kinds
    assert ("zone.loiter", (), "bay") in kinds
    loiter = next(e for e in events if e["type"] == "zone.loiter")
    # first seen by the zones when confirmed at 0.1; 2 s later it loiters
    assert loiter["time_in_zone"] == pytest.approx(2.0) and loiter["frame_time"] == pytest.approx(2.1)
    stationary = next(e for e in events if e.get("reasons") == ["stationary"])
    assert stationary["frame_time"] == pytest.approx(1.0) and stationary["stationary"] is True
    # nothing else about this track while it stands still; then it moves
    after = [e for e in events if e["frame_time"] > 1.0 and e["type"] == "track.update"]
    assert [e["reasons"] for e in after] == [["active"]] and after[0]["frame_time"] == pytest.approx(4.0)


def test_track_classes_filter_events_and_counts() -> None:
    se = StreamEvents("cam", options(track_classes="person"))
    events = run(se, [det((20 + 10 * k, 50, 0, 0.9), (20 + 10 * k, 90, 1, 0.9)) for k in range(8)])
    assert {e["class"] for e in events} == {"person"}


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshot_choice() -> None:
    assert touches_edge(np.array([0, 10, 20, 20]), (100, 100)) and touches_edge(np.array([10, 10, 99, 20]), (100, 100))
    assert not touches_edge(np.array([3, 3, 97, 97]), (100, 100))
    assert clearly_better(0.85, 100, 0.80, 100)  # +0.05 confidence
    assert not clearly_better(0.84, 100, 0.80, 100)
    assert clearly_better(0.78, 120, 0.80, 100)  # 1.2x area, confidence within 0.05
    assert not clearly_better(0.75, 200, 0.80, 100)  # larger but clearly less sure
    choice = SnapshotChoice()
    box = np.array([10.0, 10.0, 20.0, 20.0])
    assert choice.offer(box, 0.5, 0.0, (100, 100))
    assert not choice.offer(box, 0.9, 0.5, (100, 100))  # better, but within MIN_INTERVAL_S
    assert choice.offer(box, 0.9, 1.0, (100, 100)) and choice.version == 2


def test_snapshot_store_keeps_within_its_bound_oldest_dropped(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", max_bytes=2500)
    for i in range(4):
        store.put(f"{i:016x}", bytes([i]) * 1000)
    store.close()
    assert sorted(p.name for p in (tmp_path / "snaps").glob("*.jpg")) == [f"{i:016x}.jpg" for i in (2, 3)]
    reopened = SnapshotStore(tmp_path / "snaps", max_bytes=2500)
    assert reopened.get(f"{3:016x}") == bytes([3]) * 1000 and reopened.get("../etc") is None
    assert SnapshotStore.key_of("0123456789abcdef-12") == "0123456789abcdef" and SnapshotStore.key_of("x-1") is None
    reopened.close()


def test_snapshots_are_taken_from_the_frame_with_the_box_drawn() -> None:
    se = StreamEvents("cam", options(snapshots=True))
    image = np.full((100, 200, 3), 90, np.uint8)
    snapshots = []
    for k in range(3):
        snapshots += se.process(det((60 + k, 50, 0, 0.9)), k * 0.1, lambda: image).snapshots
    snapshots += se.finish().snapshots
    assert len(snapshots) == 1  # taken once (no clearly better view later), published once
    cls, key, jpeg = snapshots[0]
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert cls == "car" and len(key) == 16 and picture is not None
    assert (picture[..., 1] > 200).any()  # the green box


# -- persistence ------------------------------------------------------------------------------------


def test_track_ids_never_reused_after_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = TrackingStore("a", db)
    ids = first.id_source("cam")
    assert [ids() for _ in range(3)] == [1, 2, 3]
    first.save_line_totals("cam", {"door/car/in": 4})
    first.flush()
    # no close(): as after SIGKILL
    second = TrackingStore("a", db)
    assert second.id_source("cam")() == 1 + ID_BLOCK  # the rest of the reserved block is skipped
    assert second.id_source("other")() == 1
    assert second.line_totals("cam") == {"door/car/in": 4}
    second.save_geometry("cam", {"lines": [{"name": "door", "points": [[0.5, 0], [0.5, 1]]}]})
    assert second.geometry("cam") == {"lines": [{"name": "door", "points": [[0.5, 0], [0.5, 1]]}]}
    second.close()
    first.close()


# -- Home Assistant ----------------------------------------------------------------------------------


def test_ha_documents_for_counts_snapshots_and_events() -> None:
    config = MqttConfig(host="127.0.0.1", agent_id="box", ha_discovery=True)
    docs = dict(count_discovery(config, "door cam", "zones/bay/car"))
    binary = next(d for t, d in docs.items() if "/binary_sensor/" in t)
    sensor = next(d for t, d in docs.items() if "/sensor/" in t)
    assert binary["state_topic"] == sensor["state_topic"] == "edge-agent/box/door cam/zones/bay/car"
    assert binary["device_class"] == "occupancy" and "int(0) > 0" in binary["value_template"]
    assert sensor["state_class"] == "measurement" and binary["unique_id"] != sensor["unique_id"]
    line = dict(count_discovery(config, "cam", "lines/door/car/in"))
    assert [d["state_class"] for d in line.values()] == ["total_increasing"]
    image = next(iter(dict(snapshot_discovery(config, "cam", "car")).values()))
    assert image["image_topic"] == "edge-agent/box/cam/snapshots/car" and image["content_type"] == "image/jpeg"
    topic, event = event_discovery(config, "cam")[0]
    assert topic.startswith("homeassistant/event/") and "line.cross" in event["event_types"]
    assert event["availability_topic"] == "edge-agent/box/status"


# -- live view overlay -------------------------------------------------------------------------------


def test_overlay_draws_zone_line_arrow_and_trail_where_they_are() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    overlay = Overlay(
        zones=(("bay", np.array([[20.0, 20.0], [60.0, 20.0], [60.0, 80.0], [20.0, 80.0]]), 2),),
        lines=(("door", np.array([150.0, 0.0]), np.array([150.0, 100.0]), 3, 1),),
        trails=((7, np.array([[100.0, 90.0], [120.0, 90.0]])),),
        speeds={7: "12 km/h"},
    )
    draw_overlay(image, overlay)
    assert tuple(image[50, 20]) == (255, 191, 0)  # the zone's left edge
    assert tuple(image[20, 150]) == (0, 215, 255)  # on the line
    trail = image[90, 110].tolist()
    assert trail[0] == trail[1] == trail[2] > 200  # the trail (white, anti-aliased)
    # the arrow at the line's middle (150, 50) points to the in side: x > 150 for a downward line
    right = image[45:56, 152:170]
    left = image[45:56, 130:148]
    assert (right == (0, 215, 255)).all(axis=2).sum() > (left == (0, 215, 255)).all(axis=2).sum()


def test_cost_is_measured_in_bench_not_here() -> None:
    # guard against a hot loop regression making a frame take seconds (no timing assertion)
    se = StreamEvents("cam", options())
    started = time.monotonic()
    run(se, [det((20 + k, 50, 0, 0.9)) for k in range(50)])
    assert time.monotonic() - started < 30


def test_stdout_sink_prints_events_one_line_each() -> None:
    import asyncio
    import io
    import json

    from edge_agent.pipelines.sinks.stdout import StdoutSink

    out = io.StringIO()
    sink = StdoutSink(out)

    async def go() -> None:
        await sink.start()
        sink.publish_event("cam", {"type": "line.cross", "event_id": "0123456789abcdef-1"})
        sink.publish_event("cam", {"type": "track.end", "event_id": "0123456789abcdef-2"})
        await sink.close(2.0)

    asyncio.run(go())
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["line.cross", "track.end"]


class _Recorder:
    """Collects what the tracking step hands its outlet (the result router in the agent)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.counts: dict[str, int] = {}

    def publish_event(self, stream: str, event: dict) -> None:
        self.events.append(event)

    def publish_counts(self, stream: str, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def publish_snapshot(self, stream: str, cls: str, jpeg: bytes) -> None:
        pass


def test_after_a_crash_zone_counts_are_zeroed_and_line_totals_continue(tmp_path: Path) -> None:
    from edge_agent.pipelines.events.step import TrackingStep
    from edge_agent.pipelines.frames import Frame

    db = tmp_path / "state.db"
    out = _Recorder()
    step = TrackingStep(TrackingStore("a", db), out)
    step.configure("cam", options(), media_time=True)
    image = np.zeros((100, 200, 3), np.uint8)
    for k, x in enumerate([120, 130, 140, 150, 160, 170, 60, 60, 60]):  # across the door, then jumps into the bay
        frame = Frame("cam", k, 1000.0 + k, k * 0.1, image)
        step("cam", det((x, 50, 0, 0.9)), frame)
    assert out.counts["lines/door/car/in"] == 1 and out.counts["zones/bay/car"] == 1
    step.store.flush()  # the saver thread's periodic write; then a SIGKILL (no finish, no close)

    again = _Recorder()
    restarted = TrackingStep(TrackingStore("a", db), again)
    restarted.configure("cam", options(), media_time=True)
    assert again.counts == {"lines/door/car/in": 1, "zones/bay/car": 0, "zones/bay/car/active": 0}
    step.store.close()
    restarted.store.close()


def test_env_errors_name_the_variable_the_zone_and_the_point() -> None:
    from edge_agent.agent.errors import ConfigError
    from edge_agent.agent.settings import stream_from_env

    env = {"STREAM_CAM_ZONES": "bay=0.1,0.5 1.4,0.5 0.4,0.9", "STREAM_CAM_ZONE_EXIT": "soon"}
    with pytest.raises(ConfigError) as info:
        stream_from_env("cam", "/dev/video0", env)
    text = str(info.value)
    assert "STREAM_CAM_ZONES=" in text and "zone 'bay', point 2 (1.4,0.5)" in text
    assert "STREAM_CAM_ZONE_EXIT='soon' is invalid" in text and "0.5s" in text
    ok = stream_from_env(
        "cam", "/dev/video0", {"STREAM_CAM_LINES": "door=px:640,0 640,720", "STREAM_CAM_TRACKING": "off"}
    )
    assert ok.lines[0].pixels and ok.tracking is False


def test_tracking_off_leaves_predictions_untouched(tmp_path: Path) -> None:
    from edge_agent.pipelines.events.step import TrackingStep
    from edge_agent.pipelines.frames import Frame

    out = _Recorder()
    step = TrackingStep(TrackingStore("a", None), out)
    step.configure("cam", options(tracking=False), media_time=True)
    d = det((20, 50, 0, 0.9))
    assert step("cam", d, Frame("cam", 0, 0.0, 0.0, np.zeros((100, 200, 3), np.uint8))) is d
    assert d.track_ids is None and not step.tracked("cam") and out.events == []


def test_a_looped_file_ends_every_track_and_empties_the_zones() -> None:
    se = StreamEvents("cam", options())
    counts: dict[str, int] = {}
    events = []
    for k in range(5):
        out = se.process(det((60, 50, 0, 0.9)), k * 0.1, None)
        counts.update(out.counts)
        events += out.events
    assert counts["zones/bay/car"] == 1
    out = se.process(det((150, 90, 1, 0.9)), 0.0, None)  # time went back: the file started again
    counts.update(out.counts)
    assert [e["type"] for e in out.events] == ["zone.exit", "track.end"]
    assert counts["zones/bay/car"] == 0
    assert out.prediction.track_ids.tolist() == [2]  # the new pass gets new ids
