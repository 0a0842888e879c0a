"""What to decode of a stream: every frame, or its keyframes only; and how many decoder threads.

``STREAM_<NAME>_DECODE``:

* ``all`` (default): every frame is decoded; ``MAX_FPS`` then keeps some of them.
* ``keyframes``: FFmpeg's decoder is told to skip every non-key frame (``skip_frame=NONKEY``), so
  only keyframes are decoded and handed on. A 1080p H.264 camera with a keyframe every 2 s costs
  about a thirteenth of its full decode. A stream then gives one frame per keyframe interval (its
  GOP), and a frame can be up to one interval older than the newest picture the camera took.
* ``auto``: ``keyframes`` when the stream's ``MAX_FPS`` is at or below its measured keyframe rate
  (the user asked for no more frames than the keyframes give), else ``all``. Until two keyframes
  have been seen, the rate is unknown and every frame is decoded.

Where skipping cannot work the reader falls back to ``all`` and logs why: intra-only codecs
(MJPEG, raw video: every frame already is a keyframe, there is nothing to skip), and decoders that
do not implement FFmpeg's ``skip_frame`` (VP9 here: it keeps returning inter frames), found out by
the first non-key frame the decoder returns. A stream whose keyframes never come (intra refresh
cameras send none) falls back after ``keyframe_wait`` seconds.

Everything here is pure (or a small stateful helper without I/O) and unit-tested; the reader
(``reader.py``) applies it to the codec context.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections import deque
from typing import Literal

from edge_agent.pipelines.sources.options import Decode

Effective = Literal["all", "keyframes"]

#: A keyframe interval above this many seconds is warned about in ``keyframes`` mode: results come
#: only that often. Cameras default to 1-4 s; "smart" codecs (H.264+, Zipstream) stretch to 10 s+.
LONG_GOP_S = 4.0
#: Gaps between keyframes kept for the interval estimate (the median of them is reported).
_GAPS_KEPT = 8
#: A gap shorter than this is a timestamp glitch or an extra keyframe at a scene cut, not the GOP.
_MIN_GAP_S = 0.01


class KeyframeClock:
    """Measures a stream's keyframe interval from the timestamps of the keyframes it decodes.

    The median of the last few gaps, so one scene-cut keyframe or one lost keyframe does not
    swing the figure. Timestamps going backwards (a file looping, a reconnect) start afresh.
    Written by the reader thread; :attr:`interval` is a plain float computed there, so the event
    loop reads it without touching the gaps while they change.
    """

    def __init__(self) -> None:
        self._last_pts: float | None = None
        self._gaps: deque[float] = deque(maxlen=_GAPS_KEPT)
        self._interval: float | None = None
        self.keyframes = 0

    def observe(self, pts: float | None) -> None:
        """One keyframe came out of the decoder, stamped ``pts`` seconds (None: no timestamp)."""
        self.keyframes += 1
        if pts is None:
            return
        last = self._last_pts
        self._last_pts = pts
        if last is None:
            return
        gap = pts - last
        if gap < 0:
            self._gaps.clear()  # time went backwards: a new timeline
        elif gap >= _MIN_GAP_S:
            self._gaps.append(gap)
        self._interval = float(statistics.median(self._gaps)) if self._gaps else None

    def restart(self) -> None:
        """A new connection: its timestamps need not continue the old ones (the gaps stay)."""
        self._last_pts = None

    @property
    def interval(self) -> float | None:
        """Seconds between keyframes (median of the recent gaps), None until two were seen."""
        return self._interval


def intra_only_reason(codec: str, intra_only: bool) -> str | None:
    """Why ``keyframes`` cannot help for this codec, or None when it can."""
    if intra_only:
        return (
            f"every frame of {codec} is a keyframe, so there is nothing to skip; "
            "decoding all frames (MAX_FPS still thins them)"
        )
    return None


def auto_choice(max_fps: float | None, interval: float | None) -> tuple[Effective, str]:
    """The ``auto`` rule: keyframes when the rate cap is at or below the keyframe rate.

    Returns the mode and the reason shown in logs and stats.
    """
    if max_fps is None:
        return "all", "no MAX_FPS: every frame may be wanted"
    if interval is None:
        return "all", "keyframe rate not measured yet"
    keyframe_rate = 1.0 / interval
    # a hair of tolerance: a 0.5 fps cap on a 2.0 s GOP measured as 2.0001 s is "at" the rate
    if max_fps <= keyframe_rate * 1.02:
        return "keyframes", f"MAX_FPS {max_fps:g} <= keyframe rate {keyframe_rate:.3g}/s"
    return "all", f"MAX_FPS {max_fps:g} > keyframe rate {keyframe_rate:.3g}/s"


def long_gop(interval: float | None, max_fps: float | None = None) -> bool:
    """Is this keyframe interval too long for ``keyframes`` mode? Over :data:`LONG_GOP_S`, unless
    the stream's MAX_FPS asks for frames even more rarely than the keyframes come."""
    if interval is None or interval <= LONG_GOP_S:
        return False
    return max_fps is None or interval > 1.02 / max_fps


def long_gop_warning(name: str, interval: float, max_fps: float | None = None) -> str | None:
    """The log line for a keyframe interval too long for ``keyframes`` mode, or None."""
    if not long_gop(interval, max_fps):
        return None
    return (
        f"{name}: keyframes come every {interval:.1f} s, so in DECODE=keyframes this stream gives one "
        f"result every {interval:.1f} s and a frame up to {interval:.1f} s old; set the camera's "
        "keyframe (I-frame / GOP) interval to 1-2 s in its video encoding settings (and turn off "
        "'smart' codecs such as H.264+ or Zipstream), or use DECODE=all with MAX_FPS"
    )


# -- decoder threads ---------------------------------------------------------------------------


def decoder_thread_budget(streams: int, cores: int, *, keyframes: bool = False) -> int:
    """Threads for one stream's decoder when DECODER_THREADS is left at 0 (auto).

    FFmpeg's own default is one thread per core per decoder (plus one), so 64 cameras on 2 cores
    start ~200 decoder threads whose only effect is memory (each keeps its own slice context) and
    scheduler churn: with more streams than cores, the streams already decode in parallel, one
    per reader thread. So the cores are shared out: ``cores // streams``, at least one. A stream
    that decodes keyframes only decodes one picture per GOP and has nothing to parallelise
    (cameras send one slice per frame, and slice threads need several): one thread.
    """
    if keyframes:
        return 1
    return max(1, max(1, cores) // max(1, streams))


class DecoderBudget:
    """Counts the readers of this process, so each sizes its decoder by the number of streams.

    A reader registers when it starts (so streams that start together see each other) and leaves
    when it ends; the budget is read when a connection opens.
    """

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._streams = 0

    def join(self) -> None:
        with self._lock:
            self._streams += 1

    def leave(self) -> None:
        with self._lock:
            self._streams = max(0, self._streams - 1)

    @property
    def streams(self) -> int:
        return self._streams

    def threads(self, *, keyframes: bool = False) -> int:
        return decoder_thread_budget(self._streams, self.cores, keyframes=keyframes)


#: The process-wide budget every reader uses.
DECODER_BUDGET = DecoderBudget()

__all__ = [
    "DECODER_BUDGET",
    "LONG_GOP_S",
    "Decode",
    "DecoderBudget",
    "Effective",
    "KeyframeClock",
    "auto_choice",
    "decoder_thread_budget",
    "intra_only_reason",
    "long_gop",
    "long_gop_warning",
]
