"""A ByteTrack-style multi-object tracker in frame time (Zhang et al., "ByteTrack", ECCV 2022).

Per frame, with every track predicted to the frame's time by the Kalman filter:

1. tracked and lost tracks are matched to the *high*-confidence detections by IoU;
   1b. lost tracks left over are matched to the high detections of their class still free, by
   centre distance within a reach that grows with the time lost: an object that passed behind
   an occluder comes out ahead of a prediction whose velocity was dragged down (and whose box
   shrank) while it disappeared, so IoU with the prediction is often 0;
2. tracked tracks left over are matched to the *low*-confidence detections (the "byte" step that
   keeps a track through a partial occlusion where the detector's score drops), stricter gate;
3. tentative tracks (seen once) are matched to the detections still free; unmatched ones die;
4. detections still free start tentative tracks (ByteTrack starts them from high detections only;
   here the stream's own CONFIDENCE has already filtered what the tracker sees, so an object the
   stream publishes is tracked even when its score stays under the high threshold).

Every track gets its id when it starts (from ``next_id``: unique per stream and never reused, the
caller persists the counter), so every detection the tracker takes carries a real id from its
first frame and a tracked stream publishes the same detections as an untracked one. A track is
*confirmed* after ``confirm_hits`` matched frames: only confirmed tracks make events (a
detection that flickers for one frame costs an id, never a track.start), and only they are
kept while lost. Lost tracks are kept for ``lost_s`` seconds of frame time, predicted forward, and can
be picked up again in step 1. Association ignores the class (detectors flip classes on hard
frames); a track's class is the confidence-weighted vote of its detections.

A track whose centre stays within ``stationary_radius`` of its box size for ``stationary_s`` is
``stationary``; it becomes active again when it leaves that radius.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_agent.pipelines.tracking import kalman
from edge_agent.pipelines.tracking.association import assign, iou_matrix


@dataclass(frozen=True)
class TrackerParams:
    high_threshold: float = 0.5
    low_threshold: float = 0.0  # the stream's CONFIDENCE already filtered what the tracker sees
    new_track_threshold: float = 0.0  # 0: any detection the stream publishes may start a track
    match_iou: float = 0.2  # step 1 gate
    # step 1b: a lost track takes a free detection of its class whose centre is within
    # size * (1 + lost_reach * seconds lost) of its prediction (size: its largest recent box side)
    lost_reach: float = 2.0
    low_match_iou: float = 0.5  # step 2 gate
    tentative_match_iou: float = 0.3  # step 3 gate
    confirm_hits: int = 2
    lost_s: float = 1.5
    # ... and at least this many frames in a row without it: on a stream decoded at keyframes
    # only (DECODE=keyframes, one frame every few seconds) lost_s alone would end every track
    # between two frames
    lost_frames: int = 2
    stationary_s: float = 5.0
    stationary_radius: float = 0.1  # fraction of the box's larger side


@dataclass(eq=False)
class Track:
    """One object followed over frames."""

    uid: int  # internal, never published
    mean: np.ndarray
    cov: np.ndarray
    t: float  # frame time of ``mean``
    first_seen: float
    last_seen: float
    box: np.ndarray  # last observed xyxy
    confidence: float
    best_confidence: float
    hits: int = 1
    track_id: int = 0  # published id, from the start
    lost: bool = False
    misses: int = 0  # frames in a row without a match
    votes: dict[int, float] = field(default_factory=dict)
    stationary: bool = False
    ref_point: tuple[float, float] = (0.0, 0.0)
    ref_time: float = 0.0
    sizes: deque[float] = field(default_factory=lambda: deque(maxlen=15))  # recent larger box sides

    confirmed: bool = False  # matched in confirm_hits frames

    class_id: int = 0  # the class with the most confidence-weighted votes (lowest id on a tie)

    def vote(self, cls: int, score: float) -> None:
        total = self.votes.get(cls, 0.0) + score
        self.votes[cls] = total
        best = self.votes.get(self.class_id, 0.0)
        if cls != self.class_id and (total > best or (total == best and cls < self.class_id)):
            self.class_id = cls

    def predicted_box(self) -> np.ndarray:
        return kalman.cxcywh_to_xyxy(self.mean[None, :4])[0]


@dataclass
class FrameTracks:
    """What one update produced."""

    det_track_ids: list[int | None]  # per input detection: its track's id (None: under low_threshold)
    observed: list[Track]  # confirmed tracks matched in this frame
    started: list[Track]  # confirmed in this frame
    ended: list[Track]  # confirmed tracks dropped in this frame (lost too long)
    moved: list[Track]  # became active again in this frame
    stopped: list[Track]  # became stationary in this frame


class ByteTracker:
    def __init__(self, params: TrackerParams | None = None, next_id: Callable[[], int] | None = None) -> None:
        self.params = params or TrackerParams()
        self._next_id = next_id or _counter()
        self._uid = 0
        self.tracks: list[Track] = []  # tracked + lost, confirmed or not
        self.t: float | None = None

    def _new(self, box: np.ndarray, conf: float, cls: int, t: float) -> Track:
        self._uid += 1
        mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(box[None]))
        c = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        track = Track(
            uid=self._uid,
            track_id=self._next_id(),
            mean=mean[0],
            cov=cov[0],
            t=t,
            first_seen=t,
            last_seen=t,
            box=box.copy(),
            confidence=conf,
            best_confidence=conf,
            votes={cls: conf},
            class_id=cls,
            ref_point=c,
            ref_time=t,
        )
        track.sizes.append(float(max(box[2] - box[0], box[3] - box[1])))
        return track

    def reset(self) -> list[Track]:
        """Forget every track (time went backwards: a looped file); returns the confirmed ones."""
        ended = [tr for tr in self.tracks if tr.confirmed]
        self.tracks = []
        self.t = None
        return ended

    def update(
        self,
        boxes: np.ndarray,
        confidences: np.ndarray,
        class_ids: np.ndarray,
        t: float,
        frame_size: tuple[int, int] | None = None,
    ) -> FrameTracks:
        """One frame's detections at frame time ``t``. With ``frame_size`` (width, height), a lost
        track predicted to have left the frame ends at once instead of waiting out ``lost_s``
        (and cannot take an object entering where it left)."""
        p = self.params
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
        cls = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        self.t = t
        tracks = self.tracks
        # predict every track to this frame's time
        if tracks:
            for tr in tracks:
                if tr.lost:
                    # no size change while unseen (ByteTrack does the same): a box that shrank
                    # into an occluder must not be predicted down to nothing
                    tr.mean[6:8] = 0.0
            means = np.stack([tr.mean for tr in tracks])
            covs = np.stack([tr.cov for tr in tracks])
            dt = np.array([max(t - tr.t, 0.0) for tr in tracks])
            means, covs = kalman.predict(means, covs, dt)
            for i, tr in enumerate(tracks):
                tr.mean, tr.cov, tr.t = means[i], covs[i], t
            pred = kalman.cxcywh_to_xyxy(means[:, :4])
        else:
            pred = np.zeros((0, 4))

        high = np.flatnonzero(conf >= p.high_threshold)
        low = np.flatnonzero((conf >= p.low_threshold) & (conf < p.high_threshold))
        confirmed_idx = [i for i, tr in enumerate(tracks) if tr.confirmed]
        tentative_idx = [i for i, tr in enumerate(tracks) if not tr.confirmed]
        det_track: dict[int, Track] = {}

        # 1. confirmed (tracked and lost) vs high detections
        cost = 1.0 - iou_matrix(pred[confirmed_idx], boxes[high])
        m1, free_tracks, free_high = assign(cost, 1.0 - p.match_iou)
        for r, c in m1:
            det_track[int(high[c])] = tracks[confirmed_idx[r]]
        rest = [confirmed_idx[r] for r in free_tracks]
        # 1b. lost leftovers vs the free high detections, on buffered boxes
        lost_rest = [i for i in rest if tracks[i].lost]
        if lost_rest and free_high:
            free_idx = high[free_high]
            cost = _reach_cost([tracks[i] for i in lost_rest], boxes[free_idx], cls[free_idx], t, p.lost_reach)
            m1b, _, still_free = assign(cost, 1.0)
            for r, c in m1b:
                det_track[int(free_idx[c])] = tracks[lost_rest[r]]
            taken = {lost_rest[r] for r, _ in m1b}
            rest = [i for i in rest if i not in taken]
            free_high = [free_high[c] for c in still_free]
        # 2. tracked (not lost) leftovers vs low detections
        tracked_rest = [i for i in rest if not tracks[i].lost]
        cost = 1.0 - iou_matrix(pred[tracked_rest], boxes[low])
        m2, _, low_free = assign(cost, 1.0 - p.low_match_iou)
        for r, c in m2:
            det_track[int(low[c])] = tracks[tracked_rest[r]]
        # 3. tentative tracks vs the detections still free (low ones too: every detection the
        # stream publishes passed its CONFIDENCE, and an object steadily scored under the high
        # threshold must still be tracked)
        high_free = np.sort(np.concatenate([high[free_high], low[low_free]])).astype(np.int64)
        cost = 1.0 - iou_matrix(pred[tentative_idx], boxes[high_free])
        m3, _, free_high2 = assign(cost, 1.0 - p.tentative_match_iou)
        for r, c in m3:
            det_track[int(high_free[c])] = tracks[tentative_idx[r]]

        matched = set()
        started: list[Track] = []
        moved: list[Track] = []
        stopped: list[Track] = []
        if det_track:
            order = sorted(det_track)
            mt = [det_track[d] for d in order]
            means, covs = kalman.update(
                np.stack([tr.mean for tr in mt]), np.stack([tr.cov for tr in mt]), kalman.xyxy_to_cxcywh(boxes[order])
            )
            rows = boxes[order]
            rows_l = rows.tolist()
            conf_l = conf[order].tolist()
            cls_l = cls[order].tolist()
            for k, tr in enumerate(mt):
                tr.mean, tr.cov = means[k], covs[k]
                tr.box = rows[k]
                x1, y1, x2, y2 = rows_l[k]
                tr.sizes.append(max(x2 - x1, y2 - y1))
                tr.last_seen = t
                tr.lost = False
                tr.misses = 0
                tr.hits += 1
                score = conf_l[k]
                tr.confidence = score
                if score > tr.best_confidence:
                    tr.best_confidence = score
                tr.vote(cls_l[k], score)
                matched.add(tr.uid)
                if not tr.confirmed and tr.hits >= p.confirm_hits:
                    tr.confirmed = True
                    started.append(tr)
                change = self._motion(tr, t, x1, y1, x2, y2)
                if change == "moved":
                    moved.append(tr)
                elif change == "stopped":
                    stopped.append(tr)

        survivors: list[Track] = []
        ended: list[Track] = []
        for tr in tracks:
            if tr.uid in matched:
                survivors.append(tr)
            elif not tr.confirmed:
                continue  # a tentative track that missed a frame dies quietly
            elif (tr.misses + 1 >= p.lost_frames and t - tr.last_seen > p.lost_s) or (
                frame_size is not None and _outside(tr, frame_size)
            ):
                ended.append(tr)
            else:
                tr.lost = True
                tr.misses += 1
                survivors.append(tr)
        # 4. new tentative tracks
        for c in free_high2:
            d = int(high_free[c])
            if conf[d] >= p.new_track_threshold:
                tr = self._new(boxes[d], float(conf[d]), int(cls[d]), t)
                if p.confirm_hits <= 1:
                    tr.confirmed = True
                    started.append(tr)
                det_track[d] = tr
                survivors.append(tr)
        self.tracks = survivors

        det_ids: list[int | None] = [None] * len(boxes)
        for d, tr in det_track.items():
            det_ids[d] = tr.track_id
        observed = [tr for tr in survivors if tr.uid in matched and tr.confirmed]
        if p.confirm_hits <= 1:
            observed += [tr for tr in started if tr.uid not in matched]
        return FrameTracks(det_ids, observed, started, ended, moved, stopped)

    def _motion(self, tr: Track, t: float, x1: float, y1: float, x2: float, y2: float) -> str | None:
        p = self.params
        cx = (x1 + x2) / 2
        cy = (y1 + y2) / 2
        size = max(x2 - x1, y2 - y1, 1.0)
        if math.hypot(cx - tr.ref_point[0], cy - tr.ref_point[1]) > p.stationary_radius * size:
            tr.ref_point, tr.ref_time = (cx, cy), t
            if tr.stationary:
                tr.stationary = False
                return "moved"
            return None
        if not tr.stationary and t - tr.ref_time >= p.stationary_s:
            tr.stationary = True
            return "stopped"
        return None


MAX_SIZE_RATIO = 3.0


def _outside(tr: Track, frame_size: tuple[int, int]) -> bool:
    x, y = tr.mean[0], tr.mean[1]
    return bool(x < 0 or y < 0 or x >= frame_size[0] or y >= frame_size[1])


def _reach_cost(tracks: list[Track], boxes: np.ndarray, classes: np.ndarray, t: float, reach: float) -> np.ndarray:
    """(T, D) centre distance over the allowed reach (> 1: out of reach).

    Another class costs a quarter of the reach (partly hidden shapes are often classed wrong); a
    detection more than ``MAX_SIZE_RATIO`` times larger or smaller than the track's recent boxes is
    out of reach (a large, lost false positive must not take a small object entering near it).
    """
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    pred = np.stack([tr.mean[:2] for tr in tracks])
    size = np.array([max(tr.sizes) for tr in tracks])
    allowed = size * (1.0 + reach * np.array([t - tr.last_seen for tr in tracks]))
    dist = np.linalg.norm(pred[:, None, :] - centres[None, :, :], axis=2)
    same = np.array([[tr.class_id == c for c in classes.tolist()] for tr in tracks], dtype=bool).reshape(dist.shape)
    det_size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ratio = det_size[None, :] / np.maximum(size[:, None], 1e-9)
    comparable = (ratio >= 1.0 / MAX_SIZE_RATIO) & (ratio <= MAX_SIZE_RATIO)
    cost = dist / allowed[:, None] + np.where(same, 0.0, 0.25)
    return np.where(comparable, cost, 2.0)


def _counter() -> Callable[[], int]:
    n = [0]

    def nxt() -> int:
        n[0] += 1
        return n[0]

    return nxt


__all__ = ["ByteTracker", "FrameTracks", "Track", "TrackerParams"]
