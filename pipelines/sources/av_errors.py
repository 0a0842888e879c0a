"""FFmpeg's and the OS's error codes in words a camera's owner can act on.

PyAV raises ``InvalidDataError(1094995529, 'Invalid data found when processing input', url)``:
printed as is, the number is FFmpeg's AVERROR tag and means nothing to a user. The common ones
are said here with what usually causes them; anything else keeps FFmpeg's own text, never a bare
number. The URL PyAV appends is left out (the stream is named by whoever prints this).
"""

from __future__ import annotations

import errno

import av

from edge_agent.models.common.errors import EdgeAgentError

# PyAV's classes for FFmpeg's own codes (AVERROR_*), most specific first.
_AV_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (
        av.error.HTTPUnauthorizedError,
        "HTTP 401 unauthorized: the server refused the credentials; check the user name and password in the URL",
    ),
    (av.error.HTTPForbiddenError, "HTTP 403 forbidden: this account may not read the stream; check its rights"),
    (av.error.HTTPNotFoundError, "HTTP 404 not found: the server has no such stream; check the path in the URL"),
    (av.error.HTTPBadRequestError, "HTTP 400 bad request: the server refused the request; check the URL"),
    (av.error.HTTPOtherClientError, "the server refused the request (HTTP 4xx); check the URL and the credentials"),
    (av.error.HTTPServerError, "the server failed (HTTP 5xx); the camera or server is in trouble"),
    (
        av.error.InvalidDataError,
        "invalid data: what came back is not a video FFmpeg can read (a wrong path or port, a server that is not "
        "a video server, refused credentials on some cameras, or a damaged file)",
    ),
    (av.error.ProtocolNotFoundError, "this FFmpeg build cannot read that protocol"),
    (av.error.DemuxerNotFoundError, "this FFmpeg build has no reader for that container"),
    (av.error.DecoderNotFoundError, "this FFmpeg build has no decoder for that video"),
    (av.error.ExitError, "interrupted: no answer in time (timeout)"),
)

# errno values (from FFmpeg's network code or the OS), with the usual cause.
_ERRNO_HINTS: dict[int, str] = {
    errno.ECONNREFUSED: "nothing listens on that host and port: is the camera on, the port right?",
    errno.ETIMEDOUT: "the host did not answer: is it on this network, the address right?",
    errno.EHOSTUNREACH: "no route to the host: is the address right and on this network?",
    errno.ENETUNREACH: "this machine has no network to that address",
    errno.ECONNRESET: "the camera or server dropped the connection",
    errno.EPIPE: "the camera or server dropped the connection",
    errno.EIO: "FFmpeg's answer for a host name it cannot resolve or a connection the camera dropped",
    errno.ENOENT: "is the path right, the device plugged in?",
    errno.EACCES: "this user may not read it (for a camera: the video group)",
    errno.EPERM: "this user may not read it (for a camera: the video group)",
    errno.EBUSY: "another program is using the device",
    errno.ENODEV: "no such device: is the camera plugged in?",
    errno.ENXIO: "no such device: is the camera plugged in?",
}


# FFmpeg demuxers and decoders that render text as pictures (a .txt or .nfo file "plays" as
# 640x400 frames of ANSI art through the tty demuxer): no camera or recording ever uses them.
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def not_a_video(format_name: str, codec_name: str) -> str | None:
    """Why an opened source is not a video (a text file rendered as pictures), or None."""
    formats = set(format_name.split(","))
    if formats & TEXT_FORMATS or codec_name in TEXT_CODECS:
        return (
            f"not a video: FFmpeg reads it as text rendered into pictures (container {format_name}, codec "
            f"{codec_name}); give a video file, a camera or a stream URL"
        )
    return None


def describe_error(exc: BaseException) -> str:
    """One line for a failure to open or read a source: words, not ``[Errno 1094995529]``."""
    if isinstance(exc, EdgeAgentError):
        return str(exc)  # our own message says it already
    for kind, words in _AV_WORDS:
        if isinstance(exc, kind):
            return words
    code = getattr(exc, "errno", None)
    strerror = getattr(exc, "strerror", None)
    if isinstance(code, int) and code in _ERRNO_HINTS:
        said = strerror or errno.errorcode.get(code, "error")
        return f"{said} ({_ERRNO_HINTS[code]})"
    if strerror:  # FFmpeg's or the OS's own words, without the number and the URL
        return f"{type(exc).__name__}: {strerror}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["describe_error", "not_a_video"]
