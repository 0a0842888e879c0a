"""What a stream URL points at, decided once from its text.

Accepted forms::

    rtsp://[user:pass@]host[:port]/path     RTSP camera (rtsps:// for RTSP over TLS)
    /dev/video0, /dev/v4l/by-id/...         USB / V4L2 camera (also v4l2:///dev/video0, v4l2://0)
    http(s)://host/path[.m3u8]              HTTP stream, HLS playlist or a file served over HTTP
    /path/clip.mp4, file:///path/clip.mp4   local video file (relative paths too)

A missing camera is not an error here (it may be plugged in later, the runner keeps retrying),
but a missing file is: it will not appear by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pipelines.errors import SourceConfigError

SourceKind = Literal["rtsp", "v4l2", "http", "file"]

ACCEPTED_FORMS = (
    "rtsp://[user:pass@]host[:port]/path (rtsps:// for TLS), "
    "/dev/videoN or v4l2:///dev/videoN (USB/V4L2 camera), "
    "http(s)://host/path (HTTP stream or HLS .m3u8 playlist), "
    "a video file path or file:///path/to/file"
)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed stream URL.

    ``target`` is what PyAV opens (URL, device node or file path); ``av_format`` is the FFmpeg
    input format to force (``"v4l2"`` for cameras, else None to let FFmpeg probe). ``display`` is
    the URL with any password masked, for logs and stats.
    """

    url: str
    kind: SourceKind
    target: str
    av_format: str | None = None
    is_hls: bool = False

    @property
    def is_camera(self) -> bool:
        """Cameras are live by nature: always paced by the device, never played frame by frame."""
        return self.kind in ("rtsp", "v4l2")

    @property
    def is_tls(self) -> bool:
        """rtsps:// or https:// (certificate checks: ``SourceOptions.tls_verify``)."""
        return self.url.lower().startswith(("rtsps://", "https://"))

    @property
    def is_network(self) -> bool:
        return self.kind in ("rtsp", "http")

    @property
    def display(self) -> str:
        return redact_url(self.url)

    def redact(self, text: str) -> str:
        """``text`` with this source's credentials masked (FFmpeg errors quote the full URL)."""
        if self.display != self.url:
            text = text.replace(self.url, self.display)
            if self.target != self.url:
                text = text.replace(self.target, redact_url(self.target))
        return text

    @classmethod
    def parse(cls, url: str) -> SourceSpec:
        if not isinstance(url, str) or not url.strip():
            raise SourceConfigError(f"empty stream URL; accepted forms: {ACCEPTED_FORMS}")
        text = url.strip()
        match = _SCHEME.match(text)
        if match is None:
            if ":" in text.split("/", 1)[0] and not Path(text).exists():
                # "rtsp:/host" or "host:554/x": a URL with a typo rather than a file name
                raise SourceConfigError(
                    f"cannot read stream URL {redact_url(text)!r} (no '://' after the scheme?); "
                    f"accepted forms: {ACCEPTED_FORMS}"
                )
            return _from_path(text, text)
        scheme = match.group(1).lower()
        if scheme in ("rtsp", "rtsps"):
            parts = urlsplit(text)
            if not parts.hostname:
                raise SourceConfigError(f"RTSP URL {redact_url(text)!r} has no host; expected {scheme}://host[:port]/path")
            _check_port(text, parts)
            return cls(url=text, kind="rtsp", target=text)
        if scheme in ("http", "https"):
            parts = urlsplit(text)
            if not parts.hostname:
                raise SourceConfigError(f"HTTP URL {redact_url(text)!r} has no host; expected {scheme}://host/path")
            _check_port(text, parts)
            return cls(url=text, kind="http", target=text, is_hls=parts.path.lower().endswith(".m3u8"))
        if scheme == "v4l2":
            rest = text[len(match.group(0)) :]
            if not rest:
                raise SourceConfigError("v4l2:// needs a device, e.g. v4l2:///dev/video0 or v4l2://0")
            if rest.isdigit():
                device = f"/dev/video{rest}"
            elif rest.startswith("/"):
                device = rest
            else:
                device = f"/dev/{rest}"
            return cls(url=text, kind="v4l2", target=device, av_format="v4l2")
        if scheme == "file":
            parts = urlsplit(text)
            if parts.netloc not in ("", "localhost"):
                raise SourceConfigError(
                    f"file URL {text!r} names host {parts.netloc!r}; only local files work (file:///path)"
                )
            return _from_path(unquote(parts.path), text)
        raise SourceConfigError(
            f"unsupported stream URL scheme {scheme!r} in {redact_url(text)!r}; accepted forms: {ACCEPTED_FORMS}"
        )


def _check_port(text: str, parts) -> None:  # type: ignore[no-untyped-def]
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SourceConfigError(f"bad port in {redact_url(text)!r}") from None


def _from_path(path: str, url: str) -> SourceSpec:
    if not path:
        raise SourceConfigError(f"empty file path in {url!r}; accepted forms: {ACCEPTED_FORMS}")
    if path.startswith("/dev/"):
        # Device nodes (and their /dev/v4l/by-id/... links) are cameras; they may be unplugged now.
        return SourceSpec(url=url, kind="v4l2", target=path, av_format="v4l2")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise SourceConfigError(
            f"video file {str(resolved)!r} does not exist; accepted forms: {ACCEPTED_FORMS}"
        )
    if resolved.is_dir():
        raise SourceConfigError(f"{str(resolved)!r} is a directory, not a video file")
    return SourceSpec(url=url, kind="file", target=str(resolved))


def redact_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
