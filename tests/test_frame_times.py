"""Capture times of live frames (pure logic; the RTSP stall itself is in test_fault_injection.py)."""

from __future__ import annotations

from edge_agent.pipelines.sources.reader import CaptureClock


def test_on_time_frames_are_stamped_now() -> None:
    clock = CaptureClock(late_s=1.0)
    assert clock.stamp(0.0, 1000.0, 10.0) == (1000.0, 10.0)
    assert clock.stamp(0.033, 1000.034, 10.034) == (1000.034, 10.034)
    assert clock.stamp(None, 1000.5, 10.5) == (1000.5, 10.5)


def test_a_frame_held_up_by_a_stall_keeps_its_true_capture_time() -> None:
    clock = CaptureClock(late_s=1.0)
    clock.stamp(10.0, 1000.0, 50.0)
    # the next frame (1/30 s later by the stream's clock) only comes out 5 s later
    wall, mono = clock.stamp(10.0 + 1 / 30, 1005.0, 55.0)
    assert abs(wall - (1000.0 + 1 / 30)) < 1e-9 and abs(mono - (50.0 + 1 / 30)) < 1e-9
    # the rest of a late burst is dated from it, not from its arrival
    wall, _ = clock.stamp(10.0 + 2 / 30, 1005.001, 55.001)
    assert abs(wall - (1000.0 + 2 / 30)) < 1e-9


def test_a_camera_that_pauses_and_resumes_stays_fresh() -> None:
    clock = CaptureClock(late_s=1.0)
    clock.stamp(10.0, 1000.0, 50.0)
    assert clock.stamp(15.0, 1005.0, 55.0) == (1005.0, 55.0)  # its clock moved on too
    assert clock.stamp(2.0, 1005.1, 55.1) == (1005.1, 55.1)  # timestamps reset: trust the clock
    # slow drift between the camera and this host never adds up: each frame re-anchors
    t = 0.0
    for i in range(1, 10_000):
        t = clock.stamp(2.0 + i * 0.0333, 1005.1 + i * 0.0334, 55.1 + i * 0.0334)[0]
    assert t == 1005.1 + 9_999 * 0.0334
