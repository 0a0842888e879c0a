"""The numpy Haar cascade (gaze's built-in face finder): a one-stump cascade worked by hand, the
column skipping and the grouping by hand, then OpenCV's shipped cascades on a drawn face."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.foundation import haar_cascade as hc


def _cascade(path: Path, threshold: float, rects: str = "0 0 6 3 -1.</_><_>0 3 6 3 2.", tilted: str = "") -> Path:
    """One stage of one stump over a 6x6 window: feature -top + 2 bottom; leaves -1 / +1, stage 0.5."""
    path.write_text(
        f"""<?xml version="1.0"?>
<opencv_storage><cascade type_id="opencv-cascade-classifier"><stageType>BOOST</stageType>
<featureType>HAAR</featureType><height>6</height><width>6</width><stageNum>1</stageNum>
<stages><_><maxWeakCount>1</maxWeakCount><stageThreshold>0.5</stageThreshold><weakClassifiers>
<_><internalNodes>0 -1 0 {threshold}</internalNodes><leafValues>-1. 1.</leafValues></_>
</weakClassifiers></_></stages>
<features><_><rects><_>{rects}</_></rects>{tilted}</_></features></cascade></opencv_storage>"""
    )
    return path


def test_one_stump_worked_by_hand(tmp_path):
    # rows 0-2 black, rows 3-5 at 200. Inner rectangle (1, 1, 4, 4): 8 pixels of 0 and 8 of 200:
    # sum 1600, sum of squares 320000, nf = sqrt(16 * 320000 - 1600^2) = 1600 (std 100 > 10).
    # Feature: -1 * 0 + 2 * (18 * 200) = 7200, normalised 7200 / 1600 = 4.5.
    image = np.zeros((6, 6), np.uint8)
    image[3:] = 200
    passes = hc.load_cascade(_cascade(tmp_path / "a.xml", 4.4))  # 4.5 >= 4.4: right leaf +1 >= 0.5
    fails = hc.load_cascade(_cascade(tmp_path / "b.xml", 4.6))  # 4.5 < 4.6: left leaf -1 < 0.5
    assert hc.stage_scores(passes, image).tolist() == [[1]]
    assert hc.stage_scores(fails, image).tolist() == [[0]]
    flat = np.full((6, 6), 100, np.uint8)  # std 0: never read
    assert hc.stage_scores(passes, flat).tolist() == [[-1]]
    faint = np.zeros((6, 6), np.uint8)
    faint[3:] = 20  # std 10: at OpenCV's limit (1 / std must be < 0.1), not read
    assert hc.stage_scores(passes, faint).tolist() == [[-1]]
    # one window only at scale 1 (6 / 1.1 rounds to 5 < 6): the whole image
    assert hc.raw_detections(passes, image) == [(0, 0, 6, 6)]
    assert hc.raw_detections(fails, image) == []


def test_cascades_edge_agent_cannot_read_are_refused(tmp_path):
    tilted = _cascade(tmp_path / "t.xml", 1.0, tilted="<tilted>1</tilted>")
    with pytest.raises(ModelArtifactsError, match="tilted"):
        hc.load_cascade(tilted)
    (tmp_path / "n.xml").write_text("not xml")
    with pytest.raises(ModelArtifactsError, match="not an OpenCV cascade XML"):
        hc.load_cascade(tmp_path / "n.xml")


def test_a_window_failing_stage_0_skips_the_next_column():
    failed = np.array([[True, True, False, True, False], [False, False, False, False, True]])
    # row 0: col 0 read and failed -> col 1 skipped; col 2 read (passed); col 3 read, failed -> col 4 skipped
    assert hc.scan_positions(failed).tolist() == [[True, False, True, True, False], [True] * 5]


def test_grouping_by_hand():
    cluster = [(100, 100, 50, 50), (102, 98, 50, 50), (98, 101, 52, 52), (101, 103, 48, 48)]
    alone = [(10, 10, 30, 30)]  # one box: not enough neighbours
    inner = [(110, 110, 24, 24)] * 4  # a cluster of four inside the big one
    kept = hc.group_rectangles(cluster + alone, min_neighbors=3)
    # mean x (100+102+98+101)/4 = 100.25 -> 100, y 100.5 -> 100 (half to even), w 50, h 50
    assert kept == [((100, 100, 50, 50), 4)]
    both = hc.group_rectangles([*cluster, *cluster, *inner], min_neighbors=3)
    # the big cluster has 8 boxes, the inner 4: 8 > max(3, 4), so the inner one is dropped
    assert both == [((100, 100, 50, 50), 8)]
    assert hc.group_rectangles(cluster, min_neighbors=4) == []  # 4 boxes are not more than 4


def test_eye_centres_pick_one_eye_per_side_in_the_upper_half():
    face = (100, 50, 80, 80)
    eyes = [((10, 15, 20, 20), 6), ((48, 14, 22, 22), 9), ((45, 10, 30, 30), 9), ((30, 55, 20, 10), 12)]
    out = hc.eye_centres(face, eyes)
    # right eye (image left): (100 + 20, 50 + 25); left: the smaller of the two 9-neighbour boxes,
    # (100 + 59, 50 + 25); the box at y 55-65 is below the middle (a mouth corner) and ignored
    assert out.tolist() == [[120.0, 75.0], [159.0, 75.0]]
    assert np.isnan(hc.eye_centres(face, eyes[:1])).all()  # one side only: no eyes


def test_opencvs_cascades_find_a_drawn_face_and_its_eyes_not_noise():
    from tests.gaze_factory import drawn_face

    finder = hc.HaarFaceFinder()
    for scale, centre in ((1.0, (160, 120)), (0.8, (100, 110))):
        image, eyes = drawn_face((320, 240), centre, scale)
        faces = finder.find(image)
        assert len(faces.boxes) == 1 and faces.neighbours[0] > hc.MIN_NEIGHBORS
        x1, y1, x2, y2 = faces.boxes[0]
        cx, cy = centre
        # the cascade's box covers the inner face: centred on the drawing within 10 %, about its width
        assert abs((x1 + x2) / 2 - cx) < 10 * scale and abs((y1 + y2) / 2 - cy) < 16 * scale
        assert 100 * scale < x2 - x1 < 200 * scale
        assert np.abs(faces.eyes[0] - eyes).max() < 3.0 * scale + 1
    # a 1280x960 frame is read at 640x480: the same face, twice as big, at twice the coordinates
    big, big_eyes = drawn_face((1280, 960), (320, 240), 2.0)
    small = finder.find(cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA))
    found = finder.find(big)
    assert np.allclose(found.boxes, small.boxes * 2) and np.allclose(found.eyes, small.eyes * 2, equal_nan=True)
    assert len(found.boxes) == 1 and np.abs(found.eyes[0] - big_eyes).max() < 8
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    assert len(finder.find(noise).boxes) == 0
    assert len(finder.find(np.full((240, 320, 3), 128, np.uint8)).boxes) == 0


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV 5 has no CascadeClassifier to compare with")
def test_same_faces_as_opencv_4():
    from tests.gaze_factory import drawn_face

    image, _ = drawn_face()
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    theirs = cv2.CascadeClassifier(str(hc.FRONTAL_FACE)).detectMultiScale(grey)
    ours = hc.detect(hc.load_cascade(hc.FRONTAL_FACE), grey)
    assert [list(r) for r, _ in ours] == np.asarray(theirs).tolist()
