"""The blocking side of a stream: one PyAV connection, read in its own thread.

A :class:`FrameReader` opens the source once, demuxes and decodes it (slice-threaded decoding),
and hands the frames it keeps to the stream's :class:`~pipelines.slot.LatestFrameSlot` (live:
still decoded, converted to BGR only if inference takes them; every-frame: converted here).
With ``decode=keyframes`` (or ``auto``'s choice) the decoder skips every non-key frame and only
keyframes come out; what decides that, and the fallbacks, are in ``decoding.py``.
It never retries: when the connection fails or
ends it records why in its :class:`ReaderStatus` and returns; reconnecting, stall detection and
backoff are the runner's job (``runner.py``), one level up, on the event loop.

Nothing here blocks for long without a bound: PyAV's interrupt callback (``av.open(...,
timeout=(open, read))``) cuts a hung connect or probe, and a hung read of HTTP/HLS and devices;
for RTSP FFmpeg's socket ``timeout`` bounds every read inside the protocol, so PyAV's read timeout
is left off there (see ``open_kwargs``: it costs a GIL round trip per socket read). What still
cannot be interrupted (a wedged device driver, an RTSP session kept alive by RTCP reports alone) is
handled by the runner abandoning the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import av

from edge_agent.pipelines.errors import SourceConfigError
from edge_agent.pipelines.frames import Frame, to_bgr
from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources.av_errors import describe_error, not_a_video
from edge_agent.pipelines.sources.decoding import (
    DECODER_BUDGET,
    DecoderBudget,
    Effective,
    KeyframeClock,
    auto_choice,
    intra_only_reason,
    long_gop_warning,
)
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.spec import SourceSpec

EndReason = Literal["stopped", "eof", "error", "timeout"]

# Probe budget for live sources when the options leave it open: enough for a camera's SPS/PPS and a
# frame-rate estimate, a fifth of FFmpeg's default (which it rarely needs but may wait for).
_LIVE_ANALYZE_S = 1.0
# UDP socket receive buffer for RTSP over UDP: room for a burst of ~1 s of a 16 Mbit/s camera, so a
# big keyframe is not cut short by the kernel; this is kernel memory, not a frame queue.
_RTSP_UDP_BUFFER = 2 * 1024 * 1024
# Reorder window for RTP over UDP (microseconds); FFmpeg's own default is 0.1 s too, set explicitly
# so a change of default upstream cannot add latency here.
_RTSP_MAX_DELAY_US = 100_000
# A paced file that falls this far behind its own clock (slow decode, machine suspended) re-anchors
# instead of rushing through the backlog.
_PACE_RESYNC_S = 1.0
# A live frame whose stream timestamp says it is this much older than its arrival suggests (it
# was held up: a stalled camera's last frame comes out of FFmpeg only at the read timeout) is
# stamped with the time it was really captured.
_LATE_S = 1.0


def ffmpeg_options(spec: SourceSpec, options: SourceOptions) -> dict[str, str]:
    """The FFmpeg (demuxer + protocol) options for ``spec``; pure, so it is unit-tested.

    Deliberately absent: ``fflags=nobuffer``. It drops the packets read while probing, which
    include the first keyframe, so the first picture comes a whole GOP later (measured: +1 s with
    a 1 s GOP, up to 10 s on cameras with long GOPs) for no steady-state gain: after the probe
    nothing is buffered anyway. ``stimeout`` is gone from FFmpeg >= 5 (``timeout`` replaced it).
    """
    read_us = str(int(options.read_timeout * 1_000_000))
    opts: dict[str, str] = {}
    analyze = options.analyze_duration
    if analyze is None and spec.kind != "file":
        analyze = _LIVE_ANALYZE_S
    if analyze is not None:
        opts["analyzeduration"] = str(int(analyze * 1_000_000))
    if spec.kind == "rtsp":
        opts["rtsp_transport"] = options.rtsp_transport
        opts["timeout"] = read_us  # socket I/O timeout, microseconds
        opts["allowed_media_types"] = "video"  # don't set up audio we would only throw away
        opts["max_delay"] = str(_RTSP_MAX_DELAY_US)
        if options.rtsp_transport == "udp":
            opts["buffer_size"] = str(_RTSP_UDP_BUFFER)
    elif spec.kind == "http":
        opts["timeout"] = read_us  # http protocol: socket I/O timeout, microseconds
        opts["rw_timeout"] = read_us  # generic protocol option; reaches HLS segment requests too
        # The runner owns reconnection (with backoff and stall detection); FFmpeg's own retry loop
        # would hide outages from it.
        opts["reconnect"] = "0"
    elif spec.kind == "v4l2":
        if options.video_size:
            opts["video_size"] = options.video_size
        if options.framerate:
            opts["framerate"] = _fraction_text(options.framerate)
        if options.input_format:
            opts["input_format"] = options.input_format
    if spec.is_tls:
        # FFmpeg's TLS layer does not check certificates unless told to
        opts["tls_verify"] = "1" if options.tls_verify else "0"
        if options.tls_ca_file:
            opts["ca_file"] = options.tls_ca_file
    opts.update(options.ffmpeg_options)
    return opts


#: Sources whose reads FFmpeg's own socket timeout bounds (``ffmpeg_options``): PyAV's read
#: timeout is left off for them. Its interrupt callback takes the GIL on every check, and FFmpeg
#: checks on every socket read: about a thousand times a second per 1080p camera, so with tens of
#: cameras the reader threads queue for the GIL behind each other and the model (at 32 cameras a
#: sampling profile found 40% of reader time in that callback). Not HTTP: an HLS demuxer waiting
#: on a playlist that stopped growing reloads it forever, and only the interrupt ends that.
_SOCKET_TIMED_KINDS = frozenset({"rtsp"})


def open_kwargs(spec: SourceSpec, options: SourceOptions) -> dict[str, Any]:
    """Keyword arguments for ``av.open`` (besides the target)."""
    read_timeout = None if spec.kind in _SOCKET_TIMED_KINDS else options.read_timeout
    return {
        "format": spec.av_format,
        "container_options": ffmpeg_options(spec, options),
        "timeout": (options.open_timeout, read_timeout),
    }


def _fraction_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class FpsCap:
    """Keeps at most ``max_fps`` frames per second of stream time, evenly spaced.

    Decides on the frame's timestamp (pts when it increases, else the monotonic clock) before
    the frame is converted to numpy, so a skipped frame costs only its decode. The schedule moves
    on a fixed grid, so a 30 fps source capped at 10 keeps exactly every third frame, and the
    long-run rate never exceeds the cap.
    """

    def __init__(self, max_fps: float) -> None:
        if max_fps <= 0:
            raise ValueError("max_fps must be > 0")
        self.interval = 1.0 / max_fps
        # tolerate timestamps landing a little before the grid point (pts rounding, jitter)
        self._slack = self.interval * 0.25
        self._next: float | None = None

    def accept(self, t: float) -> bool:
        if self._next is None or t < self._next - 2 * self.interval - 1.0:
            # first frame, or time went backwards (new file loop, reconnect): restart the grid
            self._next = t + self.interval
            return True
        if t + self._slack < self._next:
            return False
        self._next += self.interval
        if self._next <= t:
            # a gap in the stream: don't burst to catch up
            self._next = t + self.interval
        return True

    def reset(self) -> None:
        self._next = None


class Pacer:
    """Releases file frames at their native rate, by pts, like a camera would."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._anchor: tuple[float, float] | None = None  # (monotonic, pts)

    def delay(self, pts: float | None) -> float:
        """Seconds to wait before releasing a frame stamped ``pts`` (0 when late or unknown)."""
        if pts is None:
            return 0.0
        now = self._clock()
        if self._anchor is None or pts < self._anchor[1]:
            self._anchor = (now, pts)
            return 0.0
        due = self._anchor[0] + (pts - self._anchor[1])
        if now - due > _PACE_RESYNC_S or due - now > 10.0:
            # far behind (slow decode) or a pts jump forward: restart the clock here
            self._anchor = (now, pts)
            return 0.0
        return max(0.0, due - now)

    def reset(self) -> None:
        self._anchor = None


class CaptureClock:
    """Capture times of live frames: now, unless the stream's own clock shows the frame is late.

    Each frame is compared with the previous one: when more wall time than stream time passed
    between them (by over ``late_s``), the frame sat somewhere (a stalled connection, a burst
    after a network hiccup) and gets the previous frame's time plus the stream time between
    them, its true capture time. Re-anchored on every frame, so camera clock drift never
    accumulates; a camera that pauses and resumes advances its timestamps and stays fresh.
    """

    def __init__(self, late_s: float = _LATE_S) -> None:
        self.late_s = late_s
        self._anchor: tuple[float, float, float] | None = None  # (wall, monotonic, pts)

    def stamp(self, pts: float | None, wall: float, mono: float) -> tuple[float, float]:
        if pts is None:
            self._anchor = None
            return wall, mono
        if self._anchor is not None:
            wall0, mono0, pts0 = self._anchor
            elapsed = pts - pts0
            if elapsed >= 0 and (mono - mono0) - elapsed > self.late_s:
                wall, mono = wall0 + elapsed, mono0 + elapsed
        self._anchor = (wall, mono, pts)
        return wall, mono


class FrameCounter:
    """Per-stream counts that keep counting across reconnects: ``next_id`` numbers every decoded
    frame (so a gap in the ids a consumer sees is frames not processed: replaced in the slot or
    skipped by the rate cap), ``delivered`` counts the frames handed to the slot."""

    def __init__(self) -> None:
        self.next_id = 0
        self.delivered = 0


class DecodeMemory:
    """What a stream's decoding learnt that outlives one connection: its keyframe interval (so
    ``auto`` decides at once on a reconnect) and the log lines already said (so a camera that
    reconnects every minute does not repeat them)."""

    def __init__(self) -> None:
        self.keyframes = KeyframeClock()
        self._said: set[str] = set()

    def first_time(self, line: str) -> bool:
        if line in self._said:
            return False
        self._said.add(line)
        return True


@dataclass
class ReaderStatus:
    """What the reader thread reports to its runner; written by the thread, read on the loop.

    Plain attribute writes are atomic under the GIL, which is all the runner needs: it samples.
    """

    phase: Literal["opening", "streaming", "ended"] = "opening"
    started_mono: float = 0.0
    opened_mono: float | None = None
    first_frame_mono: float | None = None
    last_frame_mono: float | None = None
    # True while the thread waits on purpose (pacing a file, or ``every`` mode waiting for
    # inference): no frames then is not a stall.
    waiting: bool = False
    wait_ended_mono: float = 0.0
    io_mono: float = 0.0  # last time the source gave us something (open started, packet read)
    frames_decoded: int = 0
    frames_delivered: int = 0  # handed to the slot by this connection
    skipped_by_fps_cap: int = 0
    corrupt_packets: int = 0  # packets of a file the decoder refused (skipped)
    end_reason: EndReason | None = None
    error: str | None = None
    permanent: bool = False  # the error is one no new attempt can change (a text file, not a video)
    finite: bool = False  # the source has an end (file, HTTP video with a duration)
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    # decoding (see sources.decoding): what is decoded now, why, and what was measured
    decode: Effective = "all"
    decode_reason: str | None = None
    keyframes: int = 0  # keyframes decoded by this connection
    last_keyframe_mono: float | None = None
    keyframe_interval_s: float | None = None
    decoder_threads: int | None = None

    def progress_mono(self) -> float:
        """Latest moment the stream showed life (or was legitimately idle)."""
        marks = [self.started_mono, self.wait_ended_mono]
        if self.decode == "keyframes":
            # a frame per keyframe interval only: packets arriving are the sign of life (a
            # camera sending packets but never a keyframe falls back after keyframe_wait)
            marks.append(self.io_mono)
        if self.opened_mono is not None:
            marks.append(self.opened_mono)
        if self.last_frame_mono is not None:
            marks.append(self.last_frame_mono)
        return max(marks)


class FrameReader:
    """One connection to one source, run by :meth:`run` in a dedicated thread."""

    def __init__(
        self,
        name: str,
        spec: SourceSpec,
        options: SourceOptions,
        slot: LatestFrameSlot,
        counter: FrameCounter,
        *,
        on_change: Callable[[], None] | None = None,
        logger: logging.Logger | None = None,
        memory: DecodeMemory | None = None,
        budget: DecoderBudget = DECODER_BUDGET,
    ) -> None:
        self.name = name
        self.spec = spec
        self.options = options
        self.slot = slot
        self.counter = counter
        self.stop_event = threading.Event()
        self.status = ReaderStatus(started_mono=time.monotonic())
        self._on_change = on_change
        self._log = logger or logging.getLogger(f"edge_agent.stream.{name}")
        self._cap = FpsCap(options.max_fps) if options.max_fps else None
        self._pacer = Pacer()
        self._clock = CaptureClock()
        self._memory = memory or DecodeMemory()
        self._budget = budget
        self._codec: Any = None  # the open stream's codec context, for switching skip_frame
        self._cannot_skip = False  # this connection found that skipping does not work
        self._keyed = False  # a keyframe came out since skipping started
        self._connected_mono = 0.0
        self.thread: threading.Thread | None = None

    # -- thread control (any thread) -------------------------------------------------------------

    def start(self) -> threading.Thread:
        # daemon: a thread wedged in a C call must never keep the process from exiting
        self.thread = threading.Thread(target=self.run, name=f"reader-{self.name}", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        self.stop_event.set()
        self.slot.wake_blocked()

    # -- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        status = self.status
        self._budget.join()
        try:
            status.end_reason = self._read()
        except Exception as exc:  # every failure of a camera is data for the runner
            if self._timed_out(exc):
                status.end_reason = "timeout"
                status.error = self._timeout_text(exc)
            else:
                status.end_reason = "error"
                status.error = self.spec.redact(_describe(exc))
                status.permanent = isinstance(exc, SourceConfigError)
        finally:
            self._budget.leave()
            if self.stop_event.is_set() and status.end_reason != "eof":
                status.end_reason = "stopped"
            status.phase = "ended"
            self._notify()

    def _timed_out(self, exc: Exception) -> bool:
        """Was this failure a timeout? PyAV's interrupt surfaces as ExitError, a socket timeout as
        TimeoutError, but FFmpeg's RTSP code turns an interrupted reply into InvalidDataError; so
        any failure that comes after the I/O had been silent for (nearly) the timeout counts."""
        if isinstance(exc, (av.error.ExitError, TimeoutError)):
            return True
        status = self.status
        opening = status.phase == "opening"
        limit = self.options.open_timeout if opening else self.options.read_timeout
        since = status.io_mono if status.io_mono else status.started_mono
        return time.monotonic() - since >= 0.9 * limit

    def _timeout_text(self, exc: Exception) -> str:
        if self.status.phase == "opening":
            text = f"no answer within the open timeout ({self.options.open_timeout:g} s)"
        else:
            text = f"no data for {self.options.read_timeout:g} s (read timeout)"
        if not isinstance(exc, av.error.ExitError):
            text += f" ({self.spec.redact(_describe(exc))})"
        return text

    def _notify(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a closed loop at shutdown: nobody is listening any more
                pass

    def _read(self) -> EndReason:
        spec, options, status = self.spec, self.options, self.status
        kwargs = open_kwargs(spec, options)
        is_file = spec.kind == "file"
        while True:
            decoded_before = status.frames_decoded
            if self.stop_event.is_set():
                return "stopped"
            status.io_mono = time.monotonic()
            container = av.open(spec.target, **kwargs)
            try:
                if not container.streams.video:
                    raise ValueError("the source has no video stream")
                stream = container.streams.video[0]
                refused = not_a_video(container.format.name, stream.codec_context.name)
                if refused is not None:
                    raise SourceConfigError(refused)
                status.finite = spec.kind == "file" or (spec.kind == "http" and bool(container.duration))
                # Slice threads, not frame threads ("AUTO"): frame threading holds each picture
                # back by (threads - 1) frames (~70 ms on a 30 fps camera), and when the model
                # already keeps every core busy its extra hand-offs cost more than they bring
                # (every-frame file throughput here: 17.7 fps AUTO with run-to-run dips to 14.9,
                # 17.7 fps SLICE without). Several streams still decode in parallel threads.
                stream.thread_type = "SLICE"
                self._start_decoding(stream.codec_context)
                status.width = stream.codec_context.width or None
                status.height = stream.codec_context.height or None
                status.codec = stream.codec_context.name
                if status.opened_mono is None:
                    status.opened_mono = time.monotonic()
                status.phase = "streaming"
                self._notify()
                pace = options.mode == "live" and status.finite
                self._pacer.reset()
                if self._cap is not None:
                    self._cap.reset()
                packets = container.demux(stream)
                while True:
                    try:
                        packet = next(packets)
                    except StopIteration:
                        break
                    except av.error.FFmpegError as exc:
                        if not is_file or status.frames_decoded == decoded_before:
                            raise
                        # A truncated or damaged recording: what could be decoded has been
                        # played; the rest is not there. That is the file's end, not a reason
                        # to start it again from the top.
                        self._log.warning(
                            "%s: the file is damaged or truncated after %d frame(s) (%s); treating that as its end",
                            self.name,
                            status.frames_decoded - decoded_before,
                            self.spec.redact(_describe(exc)),
                        )
                        break
                    status.io_mono = time.monotonic()
                    if self.stop_event.is_set():
                        return "stopped"
                    if status.decode == "keyframes":
                        self._check_keyframes_come(status.io_mono)
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError as exc:
                        if not is_file:
                            raise
                        # one bad packet of a file (the cut-off last one of a truncated recording)
                        status.corrupt_packets += 1
                        if status.corrupt_packets == 1:
                            why = self.spec.redact(_describe(exc))
                            self._log.warning("%s: skipping a packet the decoder refused (%s)", self.name, why)
                        continue
                    for frame in frames:
                        if not self._handle(frame, pace):
                            return "stopped"
                    # the read timeout runs from here, not from before a long wait for the consumer
                    status.io_mono = time.monotonic()
            finally:
                self._codec = None
                container.close()
            if self.stop_event.is_set():
                return "stopped"
            silent = time.monotonic() - (status.io_mono or status.started_mono)
            if not status.finite and silent >= 0.9 * options.read_timeout:
                # FFmpeg sometimes ends a timed-out live read as a plain end of stream: a camera
                # that went quiet and then "ended" is a stall, not a clean disconnect.
                status.error = f"no data for {options.read_timeout:g} s (read timeout)"
                return "timeout"
            if status.finite and options.loop:
                if status.frames_decoded == decoded_before:
                    # looping a video without a single decodable frame would spin forever
                    raise ValueError("the video has no decodable frame")
                self._log.debug("%s: end of video, looping", self.name)
                continue
            return "eof"

    def _handle(self, frame: av.VideoFrame, pace: bool) -> bool:
        """Pace, cap, convert and hand over one decoded frame; False when told to stop."""
        status = self.status
        now = time.monotonic()
        if status.first_frame_mono is None:
            # the decoded picture is the truth (a V4L2 driver may not grant the size asked for)
            status.width, status.height = frame.width, frame.height
            status.first_frame_mono = now
        status.frames_decoded += 1
        status.last_frame_mono = now
        frame_id = self.counter.next_id  # every decoded frame has its number, delivered or not
        self.counter.next_id += 1
        pts = frame.time  # seconds, None without a timestamp
        if frame.key_frame:
            self._keyframe(pts, now)
        elif status.decode == "keyframes" and self._keyed:
            # (frames the decoder held back from before a switch come out first, so only a
            # non-key frame after a keyframe decoded in this mode shows the skip is ignored)
            self._fall_back(
                f"the {status.codec} decoder does not skip non-key frames (it ignores FFmpeg's "
                "skip_frame); decoding all frames"
            )
        if pace:
            delay = self._pacer.delay(pts)
            if delay > 0:
                status.waiting = True
                try:
                    if self.stop_event.wait(delay):
                        return False
                finally:
                    status.waiting = False
                    status.wait_ended_mono = time.monotonic()
        if self._cap is not None and not self._cap.accept(pts if pts is not None else now):
            status.skipped_by_fps_cap += 1
            return True
        wall, mono = time.time(), time.monotonic()
        if not status.finite:
            wall, mono = self._clock.stamp(pts, wall, mono)
        if self.stop_event.is_set():
            return False
        # Live: pixels are converted by whoever looks at them (see Frame), so a frame replaced in
        # its slot before inference takes it never pays for the colour conversion. Every-frame
        # mode drops nothing, so convert here, in parallel with the inference of the last frame.
        if self.slot.wait_for_consumer:
            image, decoded = to_bgr(frame), None
        else:
            image, decoded = None, frame
        handed = Frame(
            stream=self.name,
            frame_id=frame_id,
            capture_time=wall,
            pts=pts,
            image=image,
            monotonic=mono,
            decoded=decoded,
        )
        if self.slot.wait_for_consumer:
            status.waiting = True
            try:
                ok = self.slot.put(handed, cancel=self.stop_event)
            finally:
                status.waiting = False
                status.wait_ended_mono = time.monotonic()
        else:
            ok = self.slot.put(handed, cancel=self.stop_event)
        if ok:
            self.counter.delivered += 1
            status.frames_delivered += 1
            return True
        return not (self.stop_event.is_set() or self.slot.closed)

    # -- decoding: keyframes only, or all ---------------------------------------------------------

    def _start_decoding(self, codec: Any) -> None:
        """Decide what this connection decodes, and size the decoder's threads."""
        status, options = self.status, self.options
        self._codec = codec
        self._memory.keyframes.restart()
        self._cannot_skip = False
        self._connected_mono = time.monotonic()
        status.keyframes = 0
        status.last_keyframe_mono = None
        status.keyframe_interval_s = self._memory.keyframes.interval
        mode: Effective = "all"
        reason: str | None = None
        if options.decode != "all":
            impossible = intra_only_reason(codec.name, bool(getattr(codec.codec, "intra_only", False)))
            if impossible is not None:
                reason = impossible
                self._cannot_skip = True
                self._say(logging.WARNING if options.decode == "keyframes" else logging.INFO, impossible)
            elif options.decode == "keyframes":
                mode = "keyframes"
            else:
                mode, reason = auto_choice(options.max_fps, self._memory.keyframes.interval)
        threads = options.decoder_threads or self._budget.threads(keyframes=mode == "keyframes")
        codec.thread_count = threads
        status.decoder_threads = threads
        self._apply(mode, reason)

    def _apply(self, mode: Effective, reason: str | None) -> None:
        status = self.status
        status.decode_reason = reason
        if self._codec is not None:
            # read by the decoder on every packet, so a switch takes effect at the next one
            self._codec.skip_frame = "NONKEY" if mode == "keyframes" else "DEFAULT"
        if mode != status.decode:
            status.decode = mode
            self._keyed = False
            if self.options.decode == "auto":
                self._say(logging.INFO, f"decoding {mode} (auto: {reason})")

    def _fall_back(self, why: str) -> None:
        """Skipping does not work for this connection: decode everything, and say why."""
        self._cannot_skip = True
        self._say(logging.WARNING, why)
        self._apply("all", why)

    def _say(self, level: int, line: str) -> None:
        if self._memory.first_time(line):
            self._log.log(level, "%s: %s", self.name, line)

    def _keyframe(self, pts: float | None, now: float) -> None:
        status, clock = self.status, self._memory.keyframes
        clock.observe(pts)
        self._keyed = True
        status.keyframes += 1
        status.last_keyframe_mono = now
        interval = clock.interval
        status.keyframe_interval_s = interval
        if interval is None:
            return
        if self.options.decode == "auto" and not self._cannot_skip:
            mode, reason = auto_choice(self.options.max_fps, interval)
            if (mode, reason) != (status.decode, status.decode_reason):
                self._apply(mode, reason)
        if status.decode == "keyframes":
            warning = long_gop_warning(self.name, interval, self.options.max_fps)
            # once per stream and rounded interval: a camera whose GOP changes is news again
            if warning is not None and self._memory.first_time(f"long-gop {interval:.0f}"):
                self._log.warning("%s", warning)

    def _check_keyframes_come(self, now: float) -> None:
        status = self.status
        since = status.last_keyframe_mono or self._connected_mono
        if now - since > self.options.keyframe_wait:
            self._fall_back(
                f"no keyframe for {self.options.keyframe_wait:g} s while packets keep coming (a camera "
                "with intra refresh, or a very long GOP); decoding all frames on this connection"
            )


def _describe(exc: BaseException) -> str:
    return describe_error(exc)
