"""One stream's life on the event loop: connect, watch, reconnect, report.

A :class:`StreamRunner` starts a :class:`~pipelines.sources.reader.FrameReader` thread per
connection attempt and supervises it from the loop: it notices when frames stop (stall), when
the source ends or fails, and retries with exponential backoff and jitter until it is cancelled.
Camera trouble never escapes ``run()``; it shows in :attr:`StreamRunner.stats` and in the log
(one line per state change, not one per retry). A file that ends without ``loop`` finishes the
runner normally.

Files are not cameras: a file that cannot be opened or decoded is tried
``options.file_attempts`` times and then the runner ends in state ``failed`` (it will not heal
by itself); a damaged or truncated file plays what can be decoded once (or loops it, with
``frame_id`` still counting up) and finishes, instead of being "reconnected" from the top.

Each attempt gets a fresh thread. A thread that does not stop within ``thread_join_timeout``
(stuck in a C call PyAV cannot interrupt, e.g. a wedged V4L2 driver) is abandoned: it is a
daemon, its stop flag stays set so it can never hand over another frame, and it is counted in
``abandoned_threads`` so a leak is visible rather than silent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from edge_agent.pipelines.backoff import Backoff
from edge_agent.pipelines.slot import LatestFrameSlot
from edge_agent.pipelines.sources.decoding import DECODER_BUDGET, DecoderBudget, long_gop
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.reader import DecodeMemory, FrameCounter, FrameReader, ReaderStatus
from edge_agent.pipelines.sources.spec import SourceSpec

State = Literal["connecting", "streaming", "backoff", "stalled", "finished", "failed"]
# States of a runner that has ended and will produce no more frames.
ENDED_STATES: frozenset[str] = frozenset({"finished", "failed"})

_TICK_S = 0.25  # longest the monitor sleeps: bounds stall-detection lag and fps sampling
_FPS_WINDOW_S = 5.0
_REMINDER_S = 300.0  # while a stream stays down, say so again this often (not on every retry)


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of one stream, cheap to take; plain values only (``dataclasses.asdict`` works)."""

    name: str
    url: str  # credentials masked
    kind: str
    state: State
    frames_decoded: int
    frames_delivered: int  # handed to the slot
    fps_in: float  # decoded frames per second over the last few seconds
    reconnects: int  # connection attempts after the first one
    last_error: str | None
    last_frame_age_s: float | None
    dropped: int  # replaced in the slot before inference took them
    skipped_by_fps_cap: int
    stalls: int
    abandoned_threads: int
    width: int | None
    height: int | None
    # decoding (see sources.decoding)
    codec: str | None = None  # FFmpeg's name of the video codec (h264, hevc, mjpeg, ...)
    decode: str = "all"  # as configured: all / keyframes / auto
    decoding: str = "all"  # what the current connection decodes: all / keyframes
    decode_reason: str | None = None  # why ``decoding`` differs from ``decode`` (auto's rule, a fallback)
    keyframe_interval_s: float | None = None  # measured; None until two keyframes were seen
    long_gop: bool = False  # keyframes too rare for DECODE=keyframes (warned in the log)
    decoder_threads: int | None = None


class StreamRunner:
    """Keeps one source flowing into one :class:`LatestFrameSlot` until cancelled or finished."""

    def __init__(
        self,
        name: str,
        spec: SourceSpec,
        options: SourceOptions,
        slot: LatestFrameSlot,
        *,
        rng: random.Random | None = None,
        budget: DecoderBudget = DECODER_BUDGET,
    ) -> None:
        """``budget``: the decoder threads shared out between the streams (the process-wide one
        unless a test brings its own)."""
        options.validate_for(spec)
        if slot.wait_for_consumer != (options.mode == "every"):
            raise ValueError(
                f"stream {name!r}: mode {options.mode!r} needs LatestFrameSlot(wait_for_consumer="
                f"{options.mode == 'every'})"
            )
        self.name = name
        self.spec = spec
        self.options = options
        self.slot = slot
        self.log = logging.getLogger(f"edge_agent.stream.{name}")
        self._backoff = Backoff(
            options.backoff_initial,
            options.backoff_max,
            reset_after=options.backoff_reset_after,
            rng=rng,
        )
        self._counter = FrameCounter()
        self._decode_memory = DecodeMemory()
        self._budget = budget
        self._last_status: ReaderStatus | None = None
        self._reader: FrameReader | None = None
        self._retiring: list[tuple[FrameReader, float]] = []
        self._state: State = "connecting"
        self._past_decoded = 0
        self._past_skipped = 0
        self._last_frame_mono: float | None = None
        self._reconnects = 0
        self._file_failures = 0  # consecutive attempts at a file that yielded no frame
        self._stalls = 0
        self._abandoned = 0
        self._last_error: str | None = None
        self._size: tuple[int | None, int | None] = (None, None)
        self._fps_samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._wake: asyncio.Event | None = None
        # outage bookkeeping for quiet logs
        self._down_since: float | None = None
        self._down_attempts = 0
        self._down_logged_errors: set[str] = set()
        self._down_reminder_at = 0.0

    # -- public ----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def ended(self) -> bool:
        """True once the runner has finished or failed: it will produce no more frames."""
        return self._state in ENDED_STATES

    @property
    def stats(self) -> StreamStats:
        now = time.monotonic()
        decoded, skipped = self._totals()
        last = self._current_last_frame()
        width, height = self._size
        reader = self._reader
        # between connections: what the last one decoded
        status = reader.status if reader is not None else self._last_status
        interval = self._decode_memory.keyframes.interval
        decoding = status.decode if status is not None else "all"
        return StreamStats(
            name=self.name,
            url=self.spec.display,
            kind=self.spec.kind,
            state=self._state,
            frames_decoded=decoded,
            frames_delivered=self._counter.delivered,
            fps_in=round(self._fps(now, decoded), 2),
            reconnects=self._reconnects,
            last_error=self._last_error,
            last_frame_age_s=None if last is None else round(now - last, 3),
            dropped=self.slot.dropped,
            skipped_by_fps_cap=skipped,
            stalls=self._stalls,
            abandoned_threads=self._abandoned,
            width=width,
            height=height,
            codec=status.codec if status is not None else None,
            decode=self.options.decode,
            decoding=decoding,
            decode_reason=status.decode_reason if status is not None else None,
            keyframe_interval_s=None if interval is None else round(interval, 3),
            long_gop=decoding == "keyframes" and long_gop(interval, self.options.max_fps),
            decoder_threads=status.decoder_threads if status is not None else None,
        )

    async def run(self) -> None:
        """Read until cancelled, or until a file ends (state ``finished``). Never raises on
        source trouble; on cancel the reader threads are stopped (bounded wait) before returning."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.log.info("starting %s source %s", self.spec.kind, self.spec.display)
        try:
            while True:
                outcome = await self._session(loop)
                if outcome == "finished":
                    self._set_state("finished")
                    self.log.info("finished: end of %s", "file" if self.spec.kind == "file" else "stream")
                    return
                if outcome == "failed":
                    self._set_state("failed")
                    self.log.error(
                        "failed: %s (%d attempt(s)); a file that cannot be read is not tried again",
                        self._last_error,
                        self._file_failures,
                    )
                    return
                delay = self._backoff.next_delay()
                self._note_failure(delay, stalled=outcome == "stalled")
                self._set_state("stalled" if outcome == "stalled" else "backoff")
                await asyncio.sleep(delay)
                self._prune_retiring(time.monotonic())
                self._reconnects += 1
        finally:
            await self._stop_all()

    # -- one connection ----------------------------------------------------------------------------

    async def _session(self, loop: asyncio.AbstractEventLoop) -> Literal["finished", "failed", "retry", "stalled"]:
        wake = self._wake
        assert wake is not None

        def on_change() -> None:
            loop.call_soon_threadsafe(wake.set)

        reader = FrameReader(
            self.name,
            self.spec,
            self.options,
            self.slot,
            self._counter,
            on_change=on_change,
            logger=self.log,
            memory=self._decode_memory,
            budget=self._budget,
        )
        self._reader = reader
        self._set_state("connecting")
        reader.start()
        status = reader.status
        opts = self.options
        while True:
            wake.clear()
            now = time.monotonic()
            self._sample_fps(now)
            self._prune_retiring(now)
            if status.last_frame_mono is not None and self._state != "streaming":
                self._size = (status.width, status.height)
                self._note_streaming()
                self._set_state("streaming")
            if status.phase == "ended":
                break
            if status.waiting:
                deadline = now + opts.stall_timeout
            elif status.phase == "opening":
                # PyAV's own open timeout fires first; this only catches an open that ignores it
                deadline = status.started_mono + opts.open_timeout + opts.read_timeout + opts.thread_join_timeout
            else:
                deadline = status.progress_mono() + opts.stall_timeout
            if now >= deadline:
                hung_open = status.phase == "opening"
                # Don't wait for the thread: it may sit in a blocking read until its read timeout.
                # It retires in the background (its stop flag keeps it from handing over frames)
                # while the next attempt starts.
                self._retire(reader, background=True)
                if hung_open:
                    self._last_error = f"connecting did not finish within {opts.open_timeout:g} s"
                    return "retry"
                self._stalls += 1
                self._last_error = f"no frame for {opts.stall_timeout:g} s"
                self._set_state("stalled")
                return "stalled"
            # Not asyncio.wait_for: before Python 3.12 it can swallow a cancellation that lands
            # as the wait completes, and the runner would then never stop.
            tick = loop.call_later(max(0.0, min(_TICK_S, deadline - now)), wake.set)
            try:
                await wake.wait()
            finally:
                tick.cancel()

        self._retire(reader)
        reason = status.end_reason
        if self.spec.kind == "file" and reason != "stopped":
            return self._file_outcome(status)
        if reason == "eof":
            if status.finite:
                return "finished"
            self._last_error = "the stream ended (the camera or server closed it)"
            return "retry"
        if reason == "stopped":
            # nobody stopped it but the slot: the consumer closed it, so there is nothing to feed
            return "finished"
        if reason == "timeout" and status.opened_mono is not None:
            self._stalls += 1
            self._last_error = status.error
            self._set_state("stalled")
            return "stalled"
        self._last_error = status.error or "the reader stopped without saying why"
        return "retry"

    def _file_outcome(self, status: ReaderStatus) -> Literal["finished", "failed", "retry"]:
        """How a file session ended: played (finished), unreadable (retry, then failed)."""
        if status.frames_decoded == 0:
            self._file_failures += 1
            self._last_error = status.error or "the file has no decodable video frame"
            if status.permanent:  # the same file says the same again: no second attempt
                return "failed"
            return "failed" if self._file_failures >= self.options.file_attempts else "retry"
        self._file_failures = 0
        if status.end_reason == "eof":
            return "finished"
        # It played for a while, then broke off: starting it again would replay the same frames.
        self._last_error = status.error or "the reader stopped without saying why"
        self.log.warning("the file broke off after %d frame(s): %s", status.frames_decoded, self._last_error)
        return "retry" if self.options.loop else "finished"

    def _retire(self, reader: FrameReader, *, background: bool = False) -> None:
        """Fold a reader's counters into the runner's totals and let it go; a thread still alive
        is watched until its deadline (and, with ``background``, told to stop first)."""
        if self._reader is not reader:
            return
        status = reader.status
        self._last_status = status
        self._past_decoded += status.frames_decoded
        self._past_skipped += status.skipped_by_fps_cap
        if status.last_frame_mono is not None:
            self._last_frame_mono = status.last_frame_mono
            self._backoff.record_session(status.last_frame_mono - (status.first_frame_mono or status.last_frame_mono))
        self._reader = None
        thread = reader.thread
        # A reader that has said "ended" can still be alive for a moment, closing its container;
        # it is watched too, so that stopping the runner waits for it like for any other.
        if background or (thread is not None and thread.is_alive()):
            if background:
                reader.stop()
            opts = self.options
            # a blocked read or open returns by its own timeout; past that, the thread is stuck
            grace = max(opts.open_timeout, opts.read_timeout) + opts.thread_join_timeout
            self._retiring.append((reader, time.monotonic() + grace))

    def _prune_retiring(self, now: float) -> None:
        keep = []
        for reader, deadline in self._retiring:
            thread = reader.thread
            if thread is None or not thread.is_alive():
                continue
            if now >= deadline:
                self._abandon(reader)
                continue
            keep.append((reader, deadline))
        self._retiring = keep

    def _abandon(self, reader: FrameReader) -> None:
        self._abandoned += 1
        self.log.warning(
            "a reader thread did not stop (blocked in the decoder, network or driver); abandoned it "
            "as a daemon thread (%d so far)",
            self._abandoned,
        )

    async def _stop_all(self) -> None:
        """Stop the current and retiring readers; wait ``thread_join_timeout`` at most, together."""
        readers = [reader for reader, _ in self._retiring]
        if self._reader is not None:
            readers.append(self._reader)
            self._retire(self._reader)
        self._retiring = []
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + self.options.thread_join_timeout
        pending = [r for r in readers if r.thread is not None and r.thread.is_alive()]
        while pending and time.monotonic() < deadline:
            # Polled, not awaited on the wake event: this also runs while the task is being
            # cancelled, and threads end on their own schedule. At most thread_join_timeout.
            await asyncio.sleep(0.01)
            pending = [r for r in pending if r.thread is not None and r.thread.is_alive()]
        for reader in pending:
            self._abandon(reader)

    # -- stats helpers -------------------------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        reader = self._reader
        if reader is None:
            return self._past_decoded, self._past_skipped
        status = reader.status
        return self._past_decoded + status.frames_decoded, self._past_skipped + status.skipped_by_fps_cap

    def _current_last_frame(self) -> float | None:
        reader = self._reader
        if reader is not None and reader.status.last_frame_mono is not None:
            return reader.status.last_frame_mono
        return self._last_frame_mono

    def _sample_fps(self, now: float) -> None:
        if not self._fps_samples or now - self._fps_samples[-1][0] >= _TICK_S:
            self._fps_samples.append((now, self._totals()[0]))

    def _fps(self, now: float, decoded: int) -> float:
        for t, count in self._fps_samples:
            if t >= now - _FPS_WINDOW_S:
                span = now - t
                return (decoded - count) / span if span >= 0.2 else 0.0
        return 0.0

    # -- state and logs --------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        if state != self._state:
            self.log.debug("state %s -> %s", self._state, state)
            self._state = state

    def _note_streaming(self) -> None:
        width, height = self._size
        size = f"{width}x{height}" if width and height else "unknown size"
        if self._down_since is not None:
            self.log.info(
                "streaming again (%s) after %d attempt(s), %.1f s down",
                size,
                self._down_attempts,
                time.monotonic() - self._down_since,
            )
        else:
            self.log.info("streaming (%s)", size)
        self._down_since = None
        self._down_attempts = 0
        self._down_logged_errors = set()

    def _note_failure(self, delay: float, *, stalled: bool) -> None:
        now = time.monotonic()
        error = self._last_error or "unknown error"
        self._down_attempts += 1
        if self._down_since is None:
            self._down_since = now
            self._down_logged_errors = {error}
            self._down_reminder_at = now + _REMINDER_S
            self.log.warning("%s: %s; retrying in %.1f s", "stalled" if stalled else "down", error, delay)
        elif error not in self._down_logged_errors and len(self._down_logged_errors) < 8:
            # a new kind of failure is news; the same one again (or a flapping pair) is not
            self._down_logged_errors.add(error)
            self.log.warning("still down: %s; retrying in %.1f s", error, delay)
        elif now >= self._down_reminder_at:
            self._down_reminder_at = now + _REMINDER_S
            self.log.warning(
                "still down after %d attempt(s) over %.0f s: %s", self._down_attempts, now - self._down_since, error
            )
        else:
            self.log.debug("retry %d failed: %s; next in %.1f s", self._down_attempts, error, delay)
