#!/usr/bin/python3
"""A real RTSP server for the tests: gst-rtsp-server looping MP4 clips at real-time pace.

Runs under Debian's ``/usr/bin/python3`` (python3-gi + gir1.2-gst-rtsp-server-1.0), not the
project's interpreter, so it imports nothing from the project and is started as a subprocess by
``tests/fixtures/rtsp.py``.

Each mount serves one H.264 MP4 clip (or an MJPEG Matroska clip, ``.mkv``: a camera whose every
frame is a keyframe, sent as RTP/JPEG). The clip's access units are read once at start-up
(``filesrc ! qtdemux ! h264parse ! appsink``) and pushed into an ``appsrc`` again and again with
shifted timestamps, so the stream loops forever without re-encoding (a 2-core CI box cannot
afford an encoder per camera). Pacing is done here by the wall clock, frame by frame, like a
camera; every client gets its own media (not shared) and therefore starts at frame 0 on a
keyframe.

Usage::

    /usr/bin/python3 tests/rtsp_server.py --port 0 --mount cam1=/tmp/a.mp4 --mount cam2=/tmp/b.mp4

Prints ``READY <port>`` on stdout once it listens (port 0 picks a free one). SIGTERM/SIGINT stop
it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer  # noqa: E402


class Clip:
    """The access units of one MP4's H.264 track (or an MKV's MJPEG track), in decode order, with
    their timing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.caps: Gst.Caps | None = None
        # (data, pts_ns, dts_ns, duration_ns, is_delta)
        self.units: list[tuple[bytes, int, int, int, bool]] = []
        self._load()
        first_dts = min(u[2] for u in self.units)
        last = max(self.units, key=lambda u: u[1])
        self.duration_ns = last[1] + last[3] - first_dts
        self._first_dts = first_dts

    def _load(self) -> None:
        # config-interval=-1 repeats SPS/PPS before every IDR, so a looped or late-joined stream
        # always carries what a decoder needs at each keyframe.
        if self.path.endswith(".mkv"):
            parse = "matroskademux ! jpegparse ! image/jpeg"
        else:
            parse = "qtdemux ! h264parse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au"
        pipeline = Gst.parse_launch(f'filesrc location="{self.path}" ! {parse} ! appsink name=sink sync=false')
        sink = pipeline.get_by_name("sink")
        pipeline.set_state(Gst.State.PLAYING)
        try:
            while True:
                sample = sink.emit("pull-sample")
                if sample is None:
                    break
                if self.caps is None:
                    self.caps = sample.get_caps()
                buf = sample.get_buffer()
                ok, info = buf.map(Gst.MapFlags.READ)
                if not ok:
                    raise RuntimeError(f"cannot map a buffer of {self.path}")
                try:
                    data = bytes(info.data)
                finally:
                    buf.unmap(info)
                pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else 0
                dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else pts
                dur = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 33_333_333
                delta = bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)
                self.units.append((data, pts, dts, dur, delta))
        finally:
            pipeline.set_state(Gst.State.NULL)
        if not self.units:
            raise RuntimeError(f"no H.264 access units found in {self.path}")

    def timing(self, index: int) -> tuple[bytes, int, int, int, bool]:
        """Unit ``index`` of the endless loop, timestamps shifted so they keep increasing from 0."""
        loop, i = divmod(index, len(self.units))
        data, pts, dts, dur, delta = self.units[i]
        shift = loop * self.duration_ns - self._first_dts
        return data, pts + shift, dts + shift, dur, delta


class LoopingFeeder:
    """Feeds one media's appsrc from a :class:`Clip`, paced by the wall clock."""

    def __init__(self, clip: Clip, appsrc: Gst.Element) -> None:
        self.clip = clip
        self.appsrc = appsrc
        self.index = 0
        self.t0: float | None = None
        appsrc.connect("need-data", self._need_data)

    def _need_data(self, src: Gst.Element, _length: int) -> None:
        data, pts, dts, dur, delta = self.clip.timing(self.index)
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        # need-data runs on appsrc's own streaming thread, so sleeping here paces only this media
        delay = self.t0 + dts / 1e9 - now
        if delay > 0:
            time.sleep(delay)
        buf = Gst.Buffer.new_wrapped(data)
        # A live source stamps what it pushes with the pipeline's running time, like a camera: a
        # buffer pushed late (a loaded CI box) is then never "late" for the sinks downstream.
        clock = src.get_clock()
        running = clock.get_time() - src.get_base_time() if clock is not None else dts
        buf.dts = running
        buf.pts = running + (pts - dts)
        buf.duration = dur
        if delta:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        self.index += 1
        src.emit("push-buffer", buf)


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, clip: Clip, shared: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.feeders: list[LoopingFeeder] = []
        # shared: one media for every client, as a camera serves all its viewers from one encoder
        # (a client joining mid-GOP gets its first keyframe at the next GOP)
        self.set_shared(shared)
        # No config-interval on the payloader: the AUs already carry SPS/PPS before every IDR,
        # and rtph264pay config-interval=-1 (GStreamer 1.22) garbles multi-slice frames.
        is_jpeg = clip.caps is not None and clip.caps.get_structure(0).get_name() == "image/jpeg"
        pay = "rtpjpegpay name=pay0 pt=26" if is_jpeg else "rtph264pay name=pay0 pt=96"
        self.set_launch(f"( appsrc name=src is-live=true format=time max-bytes=2000000 ! {pay} )")
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        appsrc.set_property("caps", self.clip.caps)
        feeder = LoopingFeeder(self.clip, appsrc)
        # keep the feeder alive exactly as long as its media
        self.feeders.append(feeder)
        media.connect("unprepared", lambda _m: self.feeders.remove(feeder) if feeder in self.feeders else None)


def _enable_tls(server: GstRtspServer.RTSPServer, factories: list[ClipFactory], cert: str, key: str) -> None:
    """RTSP over TLS, no client authentication: every client gets the anonymous role."""
    auth = GstRtspServer.RTSPAuth()
    auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(cert, key))
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
    auth.set_default_token(token)
    server.set_auth(auth)
    for factory in factories:
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                "anonymous, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mount", action="append", default=[], metavar="NAME=CLIP.mp4")
    parser.add_argument(
        "--shared-mount",
        action="append",
        default=[],
        metavar="NAME=CLIP.mp4",
        help="a mount whose clients all share one media (one camera, many viewers)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate: serve rtsps:// (RTSP over TLS) instead")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = []
    if not args.mount and not args.shared_mount:
        parser.error("give at least one --mount or --shared-mount")
    for spec, shared in [(m, False) for m in args.mount] + [(m, True) for m in args.shared_mount]:
        name, _, path = spec.partition("=")
        if not name or not path:
            parser.error(f"--mount wants NAME=CLIP.mp4, got {spec!r}")
        factory = ClipFactory(Clip(path), shared)
        factories.append(factory)
        mounts.add_factory("/" + name.strip("/"), factory)
    if args.tls_cert:
        _enable_tls(server, factories, args.tls_cert, args.tls_key or args.tls_cert)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {args.host}:{args.port}", flush=True)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda: (loop.quit(), False)[1])

    # Reap idle sessions often so killed clients don't pile up pipelines.
    def cleanup() -> bool:
        server.get_session_pool().cleanup()
        return True

    GLib.timeout_add_seconds(2, cleanup)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "rtsp-server"
    sys.exit(main())
