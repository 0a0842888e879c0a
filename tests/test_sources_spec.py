"""Source URL parsing, option validation, the FFmpeg option mapping, and the pure helpers of the
reader (FPS cap, file pacing). No I/O beyond a temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.pipelines.errors import SourceConfigError
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.reader import FpsCap, Pacer, ffmpeg_options, open_kwargs
from edge_agent.pipelines.sources.spec import SourceSpec, redact_url

# -- SourceSpec ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "target", "fmt", "hls"),
    [
        ("rtsp://10.0.0.5/live", "rtsp", "rtsp://10.0.0.5/live", None, False),
        ("rtsps://cam.local:322/s1?x=1", "rtsp", "rtsps://cam.local:322/s1?x=1", None, False),
        ("RTSP://user:pw@10.0.0.5:554/a", "rtsp", "RTSP://user:pw@10.0.0.5:554/a", None, False),
        ("/dev/video0", "v4l2", "/dev/video0", "v4l2", False),
        ("/dev/v4l/by-id/usb-cam-video-index0", "v4l2", "/dev/v4l/by-id/usb-cam-video-index0", "v4l2", False),
        ("v4l2:///dev/video2", "v4l2", "/dev/video2", "v4l2", False),
        ("v4l2://3", "v4l2", "/dev/video3", "v4l2", False),
        ("v4l2://video1", "v4l2", "/dev/video1", "v4l2", False),
        ("http://host:8080/stream.mjpg", "http", "http://host:8080/stream.mjpg", None, False),
        ("https://cdn.example/live/index.M3U8", "http", "https://cdn.example/live/index.M3U8", None, True),
    ],
)
def test_parse_kinds(url: str, kind: str, target: str, fmt: str | None, hls: bool) -> None:
    spec = SourceSpec.parse(url)
    assert (spec.kind, spec.target, spec.av_format, spec.is_hls) == (kind, target, fmt, hls)
    assert spec.is_camera == (kind in ("rtsp", "v4l2"))


def test_parse_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tmp_path / "my clip.mp4"
    clip.write_bytes(b"x")
    assert SourceSpec.parse(str(clip)).target == str(clip)
    assert SourceSpec.parse(f"  {clip}  ").kind == "file"
    assert SourceSpec.parse("file://" + str(clip).replace(" ", "%20")).target == str(clip)
    assert SourceSpec.parse(f"file://localhost{clip}").kind == "file"
    monkeypatch.chdir(tmp_path)
    assert SourceSpec.parse("my clip.mp4").kind == "file"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("rtmp://host/app", "unsupported stream URL scheme 'rtmp'"),
        ("srt://host:9000", "accepted forms"),
        ("rtsp:///nohost", "has no host"),
        ("rtsp://host:99999/x", "bad port"),
        ("http:///x.m3u8", "has no host"),
        ("rtsp:/host/typo", "no '://'"),
        ("/no/such/clip.mp4", "does not exist"),
        ("file:///no/such/clip.mp4", "does not exist"),
        ("file://otherhost/clip.mp4", "only local files"),
        ("v4l2://", "needs a device"),
    ],
)
def test_parse_errors_are_clear(url: str, fragment: str) -> None:
    with pytest.raises(SourceConfigError, match=None) as info:
        SourceSpec.parse(url)
    assert fragment in str(info.value)
    assert isinstance(info.value, EdgeAgentError)


def test_unsupported_scheme_lists_accepted_forms() -> None:
    with pytest.raises(SourceConfigError) as info:
        SourceSpec.parse("udp://239.0.0.1:1234")
    text = str(info.value)
    for form in ("rtsp://", "/dev/video", "http(s)://", "file:///"):
        assert form in text


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="directory"):
        SourceSpec.parse(str(tmp_path))


def test_missing_camera_is_not_a_config_error() -> None:
    # cameras may be plugged in later; the runner retries
    assert SourceSpec.parse("/dev/video97").kind == "v4l2"


def test_passwords_never_show() -> None:
    spec = SourceSpec.parse("rtsp://admin:s3cret@10.0.0.5:554/live")
    assert spec.display == "rtsp://admin:***@10.0.0.5:554/live"
    assert "s3cret" not in spec.redact(f"Connection refused: '{spec.url}'")
    assert redact_url("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact_url("http://u:p@[::1]:80/x") == "http://u:***@[::1]:80/x"
    with pytest.raises(SourceConfigError) as info:
        SourceSpec.parse("rtmp://admin:s3cret@host/app")
    assert "s3cret" not in str(info.value)


# -- SourceOptions -----------------------------------------------------------------------------------


def test_defaults_match_the_contract() -> None:
    o = SourceOptions()
    assert (o.mode, o.loop, o.max_fps, o.rtsp_transport) == ("live", False, None, "tcp")
    assert (o.stall_timeout, o.open_timeout, o.read_timeout) == (10.0, 10.0, 5.0)
    assert (o.backoff_initial, o.backoff_max) == (1.0, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "fast"}, "mode must be"),
        ({"loop": "maybe"}, "loop must be"),
        ({"max_fps": 0}, "max_fps must be a positive number of frames per second"),
        ({"max_fps": float("nan")}, "max_fps"),
        ({"stall_timeout": -1}, "stall_timeout"),
        ({"open_timeout": 0}, "open_timeout"),
        ({"read_timeout": True}, "read_timeout"),
        ({"backoff_initial": 5.0, "backoff_max": 2.0}, "backoff_max"),
        ({"backoff_reset_after": -1}, "backoff_reset_after"),
        ({"rtsp_transport": "http"}, "rtsp_transport"),
        ({"video_size": "1280*720"}, "video_size must look like 1280x720"),
        ({"video_size": "0x720"}, "video_size"),
        ({"framerate": -30}, "framerate"),
        ({"input_format": "mjpeg; rm -rf"}, "input_format"),
        ({"decoder_threads": -1}, "decoder_threads"),
        ({"ffmpeg_options": {"probesize": 32}}, "ffmpeg_options"),
    ],
)
def test_options_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SourceConfigError) as info:
        SourceOptions(**kwargs)
    assert fragment in str(info.value)


def test_options_against_source_kind(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    cam = SourceSpec.parse("rtsp://h/x")
    with pytest.raises(SourceConfigError, match="cameras always run 'live'"):
        SourceOptions(mode="every").validate_for(cam)
    with pytest.raises(SourceConfigError, match="loop applies to files"):
        SourceOptions(loop=True).validate_for(SourceSpec.parse("/dev/video0"))
    with pytest.raises(SourceConfigError, match="V4L2 cameras"):
        SourceOptions(video_size="640x480").validate_for(cam)
    SourceOptions(mode="every", loop=True).validate_for(SourceSpec.parse(str(clip)))
    SourceOptions(mode="every").validate_for(SourceSpec.parse("http://h/v.m3u8"))
    SourceOptions(video_size="640x480", framerate=15, input_format="MJPEG").validate_for(
        SourceSpec.parse("/dev/video0")
    )
    assert SourceOptions(input_format=" MJPEG ").input_format == "mjpeg"


# -- FFmpeg option mapping -------------------------------------------------------------------------


def test_rtsp_options_tcp_and_udp() -> None:
    spec = SourceSpec.parse("rtsp://h/x")
    tcp = ffmpeg_options(spec, SourceOptions(read_timeout=5.0))
    assert tcp["rtsp_transport"] == "tcp"
    assert tcp["timeout"] == "5000000"  # microseconds
    assert tcp["analyzeduration"] == "1000000"
    assert tcp["allowed_media_types"] == "video"
    assert "stimeout" not in tcp  # ignored by FFmpeg >= 5
    assert "fflags" not in tcp  # nobuffer would throw away the first keyframe
    assert "buffer_size" not in tcp
    udp = ffmpeg_options(spec, SourceOptions(rtsp_transport="udp", read_timeout=2.5))
    assert udp["rtsp_transport"] == "udp" and udp["timeout"] == "2500000"
    assert int(udp["buffer_size"]) >= 1 << 20
    assert int(udp["max_delay"]) <= 500_000


def test_v4l2_http_file_options() -> None:
    v4l2 = ffmpeg_options(
        SourceSpec.parse("/dev/video0"), SourceOptions(video_size="1280x720", framerate=30, input_format="mjpeg")
    )
    assert v4l2 == {"analyzeduration": "1000000", "video_size": "1280x720", "framerate": "30", "input_format": "mjpeg"}
    assert ffmpeg_options(SourceSpec.parse("/dev/video0"), SourceOptions(framerate=7.5))["framerate"] == "7.5"
    http = ffmpeg_options(SourceSpec.parse("http://h/i.m3u8"), SourceOptions(read_timeout=3))
    assert http["timeout"] == http["rw_timeout"] == "3000000"
    assert http["reconnect"] == "0"


def test_file_options_and_overrides(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    spec = SourceSpec.parse(str(clip))
    assert ffmpeg_options(spec, SourceOptions()) == {}
    assert ffmpeg_options(spec, SourceOptions(analyze_duration=0.5)) == {"analyzeduration": "500000"}
    rtsp = SourceSpec.parse("rtsp://h/x")
    assert ffmpeg_options(rtsp, SourceOptions(ffmpeg_options={"timeout": "1", "probesize": "32"}))["timeout"] == "1"
    kw = open_kwargs(SourceSpec.parse("/dev/video0"), SourceOptions(open_timeout=4, read_timeout=2))
    assert kw["format"] == "v4l2" and kw["timeout"] == (4, 2)
    # RTSP reads are bounded by FFmpeg's socket timeout, not by PyAV's GIL-taking callback
    kw = open_kwargs(SourceSpec.parse("rtsp://h/x"), SourceOptions(open_timeout=4, read_timeout=2))
    assert kw["timeout"] == (4, None) and kw["container_options"]["timeout"] == "2000000"
    # HLS keeps PyAV's: a playlist that stops growing is reloaded forever otherwise
    kw = open_kwargs(SourceSpec.parse("http://h/x.m3u8"), SourceOptions(open_timeout=4, read_timeout=2))
    assert kw["timeout"] == (4, 2)


# -- FPS cap and pacing ----------------------------------------------------------------------------


def _kept(cap: FpsCap, fps: float, seconds: float, jitter: float = 0.0) -> list[int]:
    kept = []
    for i in range(int(fps * seconds)):
        t = i / fps + (jitter if i % 2 else -jitter)
        if cap.accept(t):
            kept.append(i)
    return kept


def test_fps_cap_keeps_an_even_share() -> None:
    assert _kept(FpsCap(10), 30, 2.0) == list(range(0, 60, 3))
    assert len(_kept(FpsCap(15), 30, 4.0)) == 60
    # cap above the source rate: everything passes
    assert len(_kept(FpsCap(60), 30, 1.0)) == 30
    # 25 fps -> 20: never above the cap over the long run, close to it
    n = len(_kept(FpsCap(20), 25, 10.0))
    assert 190 <= n <= 201
    # timestamp jitter does not make it alias to a lower rate
    assert 19 <= len(_kept(FpsCap(10), 30, 2.0, jitter=0.004)) <= 21


def test_fps_cap_restarts_when_time_goes_back_and_skips_gaps() -> None:
    cap = FpsCap(5)
    assert cap.accept(100.0) and not cap.accept(100.1) and cap.accept(100.2)
    assert cap.accept(0.0)  # new loop of a file: pts restarts
    assert cap.accept(50.0)  # long gap: accept, no burst afterwards
    assert not cap.accept(50.05)


def test_pacer_releases_frames_at_their_pts() -> None:
    now = [10.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.delay(0.0) == 0.0
    assert pacer.delay(1 / 30) == pytest.approx(1 / 30)
    now[0] += 0.5
    assert pacer.delay(1.0) == pytest.approx(0.5)
    assert pacer.delay(None) == 0.0
    now[0] += 5.0  # decode fell far behind: re-anchor instead of rushing
    assert pacer.delay(1.1) == 0.0
    assert pacer.delay(1.2) == pytest.approx(0.1)
    assert pacer.delay(0.0) == 0.0  # pts went back (loop): re-anchor


def test_tls_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    rtsps = SourceSpec.parse("rtsps://cam/x")
    assert rtsps.is_tls and SourceSpec.parse("HTTPS://h/i.m3u8").is_tls
    assert not SourceSpec.parse("rtsp://cam/x").is_tls
    assert ffmpeg_options(rtsps, SourceOptions())["tls_verify"] == "0"  # cameras: mostly self-signed
    strict = ffmpeg_options(rtsps, SourceOptions(tls_verify=True, tls_ca_file=str(ca)))
    assert strict["tls_verify"] == "1" and strict["ca_file"] == str(ca)
    assert "tls_verify" not in ffmpeg_options(SourceSpec.parse("rtsp://cam/x"), SourceOptions())
    assert ffmpeg_options(SourceSpec.parse("https://h/v.m3u8"), SourceOptions(tls_verify=True))["tls_verify"] == "1"
    with pytest.raises(SourceConfigError, match="tls_ca_file"):
        SourceOptions(tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(SourceConfigError, match="rtsps:// and https://"):
        SourceOptions(tls_verify=True).validate_for(SourceSpec.parse("rtsp://cam/x"))
