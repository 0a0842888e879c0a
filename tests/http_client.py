"""Plain HTTP clients for the agent's port (stdlib only): one-shot requests and an MJPEG reader.

The MJPEG reader parses ``multipart/x-mixed-replace`` by hand from the socket, the way a camera
integration or a player does, so it checks the wire format rather than trusting a library.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None, timeout: float = 15
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body), also for 4xx/5xx answers; redirects are not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as response:
            return response.status, _merged(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _merged(exc.headers.items()), exc.read()


def _merged(items: Any) -> dict[str, str]:
    """Headers as a dict; a repeated header (WWW-Authenticate) keeps every value, joined by ', '."""
    out: dict[str, str] = {}
    for key, value in items:
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = request(url, **kwargs)
    return status, json.loads(body) if body else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def decode_jpeg(data: bytes) -> np.ndarray:
    """BGR pixels of a complete JPEG; AssertionError for anything else."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a complete JPEG (SOI/EOI markers)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "JPEG does not decode"
    return image


@dataclass
class Part:
    headers: dict[str, str]
    jpeg: bytes
    arrived: float  # monotonic

    @property
    def seq(self) -> int:
        return int(self.headers["x-picture-seq"])


@dataclass
class MjpegReader:
    """``GET`` an MJPEG URL and read its parts. ``status``/``headers`` are those of the response."""

    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 15.0

    def __post_init__(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.request("GET", self.path, headers=self.headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")

    def boundary(self) -> str:
        assert self.content_type.startswith("multipart/x-mixed-replace"), self.content_type
        return self.content_type.split("boundary=", 1)[1].strip('"')

    def read_part(self) -> Part:
        stream = self.response
        marker = f"--{self.boundary()}".encode()
        line = stream.readline()
        while line in (b"\r\n", b"\n"):
            line = stream.readline()
        assert line.rstrip(b"\r\n") == marker, f"expected the boundary, got {line[:80]!r}"
        headers: dict[str, str] = {}
        while True:
            line = stream.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("ascii").partition(":")
            headers[key.strip().lower()] = value.strip()
        assert headers.get("content-type") == "image/jpeg", headers
        length = int(headers["content-length"])
        data = stream.read(length)
        assert len(data) == length, f"part cut short: {len(data)} of {length} bytes"
        assert stream.read(2) == b"\r\n"
        return Part(headers, data, time.monotonic())

    def read_for(self, seconds: float, limit: int = 10_000) -> list[Part]:
        parts: list[Part] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(parts) < limit:
            parts.append(self.read_part())
        return parts

    def close(self) -> None:
        self.conn.close()


def drop_mid_frame(host: str, port: int, path: str, headers: dict[str, str], keep: int) -> bytes:
    """Open an MJPEG stream on a raw socket, read ``keep`` bytes (response head and part of the
    first picture) and hang up with a TCP reset. Returns the bytes read."""
    sock = socket.create_connection((host, port), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
    got = b""
    while len(got) < keep:
        chunk = sock.recv(keep - len(got))
        if not chunk:
            break
        got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            break  # refused (e.g. the viewer limit): no picture will come
    # SO_LINGER 0: close() sends RST, the rudest way a viewer can leave.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return got
