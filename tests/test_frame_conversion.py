"""The BGR conversion of decoded frames (pipelines/frames.py): Roboflow's pixels, one scaler
thread per conversion. Real PyAV decoding of a real H.264 clip."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from edge_agent.pipelines.frames import Frame, scaler_options, to_bgr
from tests.fixtures.media import read_counter


def _native_threads() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("12.3.0", {}),
        ("16.1.0", {}),
        ("17.0.0", {"threads": 1}),
        ("18.1.0", {"threads": 1}),
        ("20.0.0rc1", {"threads": 1}),
        ("unknown", {}),
    ],
)
def test_scaler_threads_are_pinned_to_one_where_pyav_threads_them(version: str, expected: dict[str, int]) -> None:
    assert scaler_options(version) == expected


def test_conversion_gives_ffmpegs_bgr_pixels_and_starts_no_scaler_threads(hd_clip: Path) -> None:
    with av.open(str(hd_clip)) as container:
        decoded = [frame for _, frame in zip(range(12), container.decode(video=0), strict=False)]
    before = _native_threads()
    # The decoded frames stay alive, as a frame waiting in a slot does: a threaded scaler keeps
    # its threads for as long as the frame holding it lives (two per 720p frame on 2 cores).
    images = [to_bgr(frame) for frame in decoded]
    started = _native_threads() - before
    assert started < len(decoded), f"{started} threads started by {len(decoded)} conversions"
    for frame, image in zip(decoded, images, strict=True):
        assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
        assert np.array_equal(image, frame.to_ndarray(format="bgr24"))
    assert [read_counter(image) for image in images] == list(range(len(decoded)))


def test_a_lazy_frame_converts_once_and_lets_go_of_the_decoded_picture(small_clip: Path) -> None:
    with av.open(str(small_clip)) as container:
        decoded = next(container.decode(video=0))
    frame = Frame("cam", 0, 0.0, None, decoded=decoded)
    assert not frame.converted and (frame.width, frame.height) == (320, 240)
    image = frame.image
    assert frame.converted and frame.image is image
    assert np.array_equal(image, decoded.to_ndarray(format="bgr24"))
    assert read_counter(image) == 0
