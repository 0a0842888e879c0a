"""What a stream URL points at, decided once from its text.

Accepted forms::

    rtsp://[user:pass@]host[:port]/path     RTSP camera (rtsps:// for RTSP over TLS)
    /dev/video0, /dev/v4l/by-id/...         USB / V4L2 camera (also v4l2:///dev/video0, v4l2://0)
    http(s)://host/path[.m3u8]              HTTP stream, HLS playlist or a file served over HTTP
    /path/clip.mp4, file:///path/clip.mp4   local video file (relative paths too)

A missing camera is not an error here (it may be plugged in later, the runner keeps retrying),
but a missing file is: it will not appear by itself. A device node that exists but is not a
video capture device (``/dev/null``, a disk) is refused: it is not a camera.

Every URL in an error message or a display goes through ``models.redaction``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from edge_agent.models.common.redaction import redact_text, redact_url, url_secrets
from edge_agent.pipelines.errors import SourceConfigError

SourceKind = Literal["rtsp", "v4l2", "http", "file"]

ACCEPTED_FORMS = (
    "rtsp://[user:pass@]host[:port]/path (rtsps:// for TLS), "
    "/dev/videoN or v4l2:///dev/videoN (USB/V4L2 camera), "
    "http(s)://host/path (HTTP stream or HLS .m3u8 playlist), "
    "a video file path or file:///path/to/file"
)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Linux's character-device major number of V4L2 (videodev) nodes.
V4L2_MAJOR = 81


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
        """``text`` with this source's credentials masked (FFmpeg errors quote the full URL, or
        parts of it, percent-decoded or not)."""
        if self.display != self.url:
            text = text.replace(self.url, self.display)
            if self.target != self.url:
                text = text.replace(self.target, redact_url(self.target))
        return redact_text(text, url_secrets(self.url) + url_secrets(self.target))

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
        if scheme in ("rtsp", "rtsps", "http", "https"):
            _check_characters(text)
        if scheme in ("rtsp", "rtsps"):
            parts = urlsplit(text)
            if not parts.hostname:
                raise SourceConfigError(
                    f"RTSP URL {redact_url(text)!r} has no host; expected {scheme}://host[:port]/path"
                )
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
                    f"file URL {redact_url(text)!r} names a host; only local files work (file:///path)"
                )
            return _from_path(unquote(parts.path), text)
        raise SourceConfigError(
            f"unsupported stream URL scheme {scheme!r} in {redact_url(text)!r}; accepted forms: {ACCEPTED_FORMS}"
        )


_CHARACTER_NAMES = {
    " ": "a space",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a carriage return",
    "\u00a0": "a no-break space",
}


def _character_name(ch: str) -> str:
    return _CHARACTER_NAMES.get(ch, f"the character U+{ord(ch):04X}")


def _check_characters(text: str) -> None:
    """A network URL holds no white space or control character: FFmpeg sends it as is and the camera
    or the resolver answers with an I/O error forever. Which part holds it says how to fix it."""
    for index, ch in enumerate(text):
        if not (ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F):
            continue
        authority_start = text.index("//") + 2
        # as the redactor reads it: userinfo runs to the last '@' (a password may hold '/' or '@')
        userinfo_end = max(text.rfind("@"), authority_start)
        host_end = text.find("/", userinfo_end)
        host_end = len(text) if host_end < 0 else host_end
        encode = f"percent-encode it: %{ord(ch):02X}"
        if index < userinfo_end:
            where = f"its user name or password ({encode})"
        elif index < host_end:
            where = "its host (a host name or address has none)"
        else:
            where = f"its path or query ({encode})"
        raise SourceConfigError(
            f"the URL {redact_url(text)!r} has {_character_name(ch)} (character {index + 1}) in {where}"
        )


def _check_port(text: str, parts: SplitResult) -> None:
    _check_userinfo(text, parts)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SourceConfigError(f"bad port in {redact_url(text)!r}") from None


def _check_userinfo(text: str, parts: SplitResult) -> None:
    """A '/', '?' or '#' in a password ends the host part for FFmpeg as for every URL parser:
    the camera would get a wrong password and a wrong host. Say so instead of trying."""
    if "@" in parts.netloc:
        return
    port = parts.netloc.rpartition("]")[2].rpartition(":")[2] if ":" in parts.netloc else ""
    # '@' in the path, or in the query of a URL whose "port" is not a number (admin:pa?ss@host):
    # an '@' in the query of a well-formed URL is a query value (?password=a@b), not userinfo.
    if "@" in parts.path or ("@" in parts.query + parts.fragment and port and not port.isdigit()):
        raise SourceConfigError(
            f"stream URL {redact_url(text)!r}: the user name or password seems to contain '/', '?' or '#', "
            "which end the host part of a URL; percent-encode them (/ as %2F, ? as %3F, # as %23, @ as %40)"
        )


def _from_path(path: str, url: str) -> SourceSpec:
    if not path:
        raise SourceConfigError(f"empty file path in {redact_url(url)!r}; accepted forms: {ACCEPTED_FORMS}")
    if path.startswith("/dev/"):
        _check_video_device(path)
        # Device nodes (and their /dev/v4l/by-id/... links) are cameras; they may be unplugged now.
        return SourceSpec(url=url, kind="v4l2", target=path, av_format="v4l2")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise SourceConfigError(
            f"video file {redact_url(str(resolved))!r} does not exist; accepted forms: {ACCEPTED_FORMS}"
        )
    if resolved.is_dir():
        raise SourceConfigError(f"{redact_url(str(resolved))!r} is a directory, not a video file")
    if not resolved.is_file():
        raise SourceConfigError(
            f"{redact_url(str(resolved))!r} is not a regular file (a device, pipe or socket); "
            f"accepted forms: {ACCEPTED_FORMS}"
        )
    return SourceSpec(url=url, kind="file", target=str(resolved))


def _check_video_device(path: str) -> None:
    """A /dev path that exists must be a V4L2 node; one that does not may be plugged in later
    (or be a udev link such as /dev/cam-door that appears with its camera)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SourceConfigError(f"cannot access the device {path!r}: {exc.strerror or exc}") from None
    if not stat.S_ISCHR(info.st_mode) or os.major(info.st_rdev) != V4L2_MAJOR:
        raise SourceConfigError(
            f"{path!r} is not a video capture device (V4L2 nodes are /dev/videoN or links to them under "
            f"/dev/v4l/); accepted forms: {ACCEPTED_FORMS}"
        )
