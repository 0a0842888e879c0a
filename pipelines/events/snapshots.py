"""Best snapshot per track: which frame to keep, the JPEG, and a bounded store on disk.

The choice (:class:`SnapshotChoice`) takes a sighting only when the box keeps clear of the frame
edge (a cut-off object is a poor picture) and is *clearly* better than the one kept: a
confidence higher by ``CONF_STEP``, or an area ``AREA_GAIN`` times larger at a confidence not
lower by more than ``CONF_STEP``. Small wobbles therefore do not re-encode and re-publish a
picture every frame. At most one new picture per ``MIN_INTERVAL_S`` of frame time per track.

The JPEG is a crop around the box (the box and a margin of half its size each side), scaled to
at most ``MAX_SIDE`` pixels, with the box and its label drawn: small enough for MQTT (a few tens
of kB) and quick to encode on the event loop (well under a millisecond for a 320 px crop).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("edge_agent.snapshots")

EDGE_MARGIN_PX = 2.0
CONF_STEP = 0.05
AREA_GAIN = 1.2
MIN_INTERVAL_S = 1.0
MAX_SIDE = 320
JPEG_QUALITY = 80


def touches_edge(box: np.ndarray, size: tuple[int, int], margin: float = EDGE_MARGIN_PX) -> bool:
    w, h = size
    return bool(box[0] <= margin or box[1] <= margin or box[2] >= w - margin or box[3] >= h - margin)


def clearly_better(conf: float, area: float, best_conf: float, best_area: float) -> bool:
    """Whether a sighting (conf, area) should replace the kept one (see the module doc)."""
    eps = 1e-9  # 0.80 + 0.05 is 0.8500000000000001 in floating point
    if conf >= best_conf + CONF_STEP - eps:
        return True
    return area >= AREA_GAIN * best_area - eps and conf > best_conf - CONF_STEP


@dataclass
class SnapshotChoice:
    """The kept sighting of one track; ``version`` grows with each replacement."""

    confidence: float = -1.0
    area: float = 0.0
    t: float = -1e18
    version: int = 0
    jpeg: bytes | None = None

    def offer(self, box: np.ndarray, confidence: float, t: float, size: tuple[int, int]) -> bool:
        """True when this sighting replaces the kept one (the caller then renders it)."""
        if touches_edge(box, size):
            return False
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        if self.version:
            if t - self.t < MIN_INTERVAL_S or not clearly_better(confidence, area, self.confidence, self.area):
                return False
        self.confidence, self.area, self.t = confidence, area, t
        self.version += 1
        return True


def render_snapshot(image: np.ndarray, box: np.ndarray, label: str) -> bytes:
    """A JPEG of the crop around ``box`` with the box and ``label`` drawn."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) / 2, (y2 - y1) / 2
    cx1, cy1 = max(int(x1 - mx), 0), max(int(y1 - my), 0)
    cx2, cy2 = min(int(np.ceil(x2 + mx)), w), min(int(np.ceil(y2 + my)), h)
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    scale = min(1.0, MAX_SIDE / max(crop.shape[0], crop.shape[1], 1))
    if scale < 1.0:
        crop = cv2.resize(crop, (max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1)))
    p1 = (int((x1 - cx1) * scale), int((y1 - cy1) * scale))
    p2 = (int((x2 - cx1) * scale), int((y2 - cy1) * scale))
    cv2.rectangle(crop, p1, p2, (0, 255, 0), 2)
    cv2.putText(crop, label, (p1[0] + 2, max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # cannot happen for a non-empty uint8 BGR crop
        raise ValueError("JPEG encoding failed")
    return bytes(buf)


_KEY = re.compile(r"^[0-9a-f]{8,32}$")


class SnapshotStore:
    """JPEGs on disk by track key, at most ``max_bytes`` in all, the oldest dropped first.

    Writes happen on a thread of its own (the event loop only enqueues); reads are plain file
    reads (the HTTP handler runs them in an executor).
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, int] = OrderedDict()
        entries = []
        for path in self.directory.glob("*.jpg"):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, path.stem, st.st_size))
        for _, key, size in sorted(entries):
            self._files[key] = size
        self._total = sum(self._files.values())
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=256)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="snapshot-store", daemon=True)
        self._thread.start()

    @staticmethod
    def key_of(event_id: str) -> str | None:
        """The track key of an event id (``<key>-<n>``), or None for a malformed one."""
        key = event_id.rsplit("-", 1)[0]
        return key if _KEY.match(key) else None

    def put(self, key: str, jpeg: bytes) -> None:
        try:
            self._queue.put_nowait((key, jpeg))
        except queue.Full:
            log.warning("snapshot store is behind; snapshot %s not saved", key)

    def get(self, key: str) -> bytes | None:
        if not _KEY.match(key):
            return None
        try:
            return (self.directory / f"{key}.jpg").read_bytes()
        except OSError:
            return None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            key, jpeg = item
            path = self.directory / f"{key}.jpg"
            tmp = path.with_suffix(".tmp")
            try:
                tmp.write_bytes(jpeg)
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("cannot save snapshot %s: %s", path, exc)
                continue
            with self._lock:
                self._total += len(jpeg) - self._files.pop(key, 0)
                self._files[key] = len(jpeg)
                while self._total > self.max_bytes and len(self._files) > 1:
                    old, size = self._files.popitem(last=False)
                    self._total -= size
                    try:
                        (self.directory / f"{old}.jpg").unlink()
                    except OSError:
                        pass

    @property
    def total_bytes(self) -> int:
        return self._total

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


__all__ = ["SnapshotChoice", "SnapshotStore", "clearly_better", "render_snapshot", "touches_edge"]
