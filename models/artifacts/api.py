"""A small synchronous client of the Roboflow API and of the artifact URLs it hands out.

stdlib only (urllib, so HTTP(S)_PROXY work as usual). Separate connect and read timeouts, a stall
guard for servers that trickle bytes, retries with exponential backoff on transient failures
(timeouts, connection errors, truncated bodies, HTTP 408/425/429/5xx) honouring Retry-After up to
a minute, and downloads streamed to a temp file next to their target with size and md5 checks.
The API key is sent only to the API and never appears in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hashlib
import http.client
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from edge_agent.models.common.errors import ApiAuthError, ModelDownloadError, ModelNotFoundError
from edge_agent.models.common.redaction import redact_url
from edge_agent.models.common.settings import ModelSettings

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]

USER_AGENT = "edge-agent/0.1 (+https://github.com/roboflow/inference compatible)"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0
MAX_BACKOFF_S = 30.0
MAX_JSON_BYTES = 32 << 20
CHUNK = 1 << 16
# A server that sends less than this within one MODEL_DOWNLOAD_TIMEOUT window counts as stalled.
STALL_MIN_BYTES = 1024


def redact(url: str) -> str:
    """The one URL redactor (models/common/redaction.py): user info and secret query values, api_key too."""
    return redact_url(url)


class _Transient(Exception):
    """A failure worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped at a minute."""
    if not value:
        return None
    value = value.strip()
    seconds: float | None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        current = datetime.now(timezone.utc).timestamp() if now is None else now
        seconds = when.timestamp() - current
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def _connection_class(base: type[http.client.HTTPConnection], read_timeout: float) -> type[http.client.HTTPConnection]:
    class _Connection(base):  # type: ignore[valid-type, misc]
        # urllib passes one timeout; it is the connect timeout here, and reads get their own.
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(read_timeout)

    return _Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._conn = _connection_class(http.client.HTTPConnection, read_timeout)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._conn = _connection_class(http.client.HTTPSConnection, read_timeout)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # HTTPSHandler.__init__ sets _context (its SSL context); typeshed's stub leaves the attribute out
        return self.do_open(self._conn, req, context=self._context)  # type: ignore[attr-defined]


def _error_detail(body: bytes) -> str:
    """The API's own error message from a JSON error body, if there is one."""
    try:
        content = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:200]
    if isinstance(content, dict):
        err = content.get("error", content.get("message"))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err:
            return str(err)[:300]
    return ""


def _expected_md5(headers: Any) -> str | None:
    """md5 (hex) the artifact server vouches for: Content-MD5 or GCS's x-goog-hash."""
    candidates = []
    if headers.get("Content-MD5"):
        candidates.append(headers["Content-MD5"])
    for value in headers.get_all("x-goog-hash") or []:
        for item in value.split(","):
            key, _, digest = item.strip().partition("=")
            if key.lower() == "md5":
                candidates.append(digest)
    for candidate in candidates:
        try:
            raw = base64.b64decode(candidate.strip(), validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 16:
            return raw.hex()
    return None


@dataclass(frozen=True)
class DownloadedFile:
    path: Path  # a temp file next to its target; the caller renames or deletes it
    size: int
    md5: str
    expected_md5: str | None


class RoboflowApi:
    """Talks to API_BASE_URL and to artifact URLs, with the retry policy of ModelSettings."""

    def __init__(self, settings: ModelSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._opener = urllib.request.build_opener(
            _HTTPHandler(settings.model_download_timeout), _HTTPSHandler(settings.model_download_timeout)
        )

    def _describe(self, route: str, first: str, second: str, api_key: str | None) -> Any:
        """GET /{route}/{first}/{second} of the Roboflow API (the JSON answer, with retries)."""
        model_id = f"{first}/{second}"
        params = {"nocache": "true", "device": self.settings.device_id or socket.gethostname(), "dynamic": "true"}
        if api_key:
            params["api_key"] = api_key
        url = f"{self.settings.api_base_url}/{route}/{quote(first, safe='')}/{quote(second, safe='')}"
        url += "?" + urlencode(params)
        return self._with_retries(
            f"asking the Roboflow API about {model_id}",
            lambda: self._fetch_json_once(url, model_id, api=True, api_key_given=bool(api_key)),
        )

    # -- public ----------------------------------------------------------------------------------

    def describe_model(self, project: str, version: str, api_key: str | None) -> dict[str, Any]:
        """GET /ort/{project}/{version}: the ``ort`` object (type, modelType, model, environment, ...)."""
        model_id = f"{project}/{version}"
        answer = self._describe("ort", project, version, api_key)
        ort = answer.get("ort") if isinstance(answer, dict) else None
        if not isinstance(ort, dict):
            raise ModelDownloadError(
                f"the Roboflow API answer for {model_id} has no 'ort' object; is {self.settings.api_base_url} "
                f"the Roboflow API (API_BASE_URL)?"
            )
        return ort

    def describe_core_model(self, family: str, variant: str, api_key: str | None) -> dict[str, str]:
        """GET /core_model/{family}/{variant}: ``{file key: URL}`` of a foundation model's weights."""
        model_id = f"{family}/{variant}"
        answer = self._describe("core_model", family, variant, api_key)
        weights = answer.get("weights") if isinstance(answer, dict) else None
        if not isinstance(weights, dict) or not all(isinstance(v, str) for v in weights.values()):
            raise ModelDownloadError(
                f"the Roboflow API answer for {model_id} has no 'weights' object of URLs; is "
                f"{self.settings.api_base_url} the Roboflow API (API_BASE_URL)?"
            )
        return dict(weights)

    def describe_lora_base(self, repo_and_revision: str, api_key: str | None) -> dict[str, str]:
        """GET /lora_bases?repoAndRevision=<repo>/<revision>: ``{"model": URL of a tar.gz}`` of an
        adapter's base checkpoint (Roboflow's ``get_roboflow_base_lora``)."""
        params = {"repoAndRevision": repo_and_revision}
        if api_key:
            params["api_key"] = api_key
        url = f"{self.settings.api_base_url}/lora_bases?" + urlencode(params)
        answer = self._with_retries(
            f"asking the Roboflow API for the LoRA base {repo_and_revision}",
            lambda: self._fetch_json_once(url, repo_and_revision, api=True, api_key_given=bool(api_key)),
        )
        weights = answer.get("weights") if isinstance(answer, dict) else None
        if not isinstance(weights, dict) or not all(isinstance(v, str) for v in weights.values()) or not weights:
            raise ModelDownloadError(
                f"the Roboflow API answer for the LoRA base {repo_and_revision} has no 'weights' URLs"
            )
        return dict(weights)

    def fetch_json(self, url: str, what: str) -> Any:
        return self._with_retries(f"downloading {what}", lambda: self._fetch_json_once(url, what))

    def fetch_api_json(self, url: str, what: str, api_key: str | None) -> Any:
        """GET an API URL that takes the key as ``Authorization: Bearer`` (the package registry)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        return self._with_retries(
            f"asking the Roboflow API about {what}",
            lambda: self._fetch_json_once(url, what, api=True, api_key_given=bool(api_key), headers=headers),
        )

    def download(
        self,
        url: str,
        target_dir: Path,
        name: str,
        what: str,
        progress: ProgressCallback | None = None,
    ) -> DownloadedFile:
        """Stream ``url`` into a temp file in ``target_dir``; checks Content-Length and md5 if given."""
        from edge_agent.models.artifacts.cache import (
            temp_path_in,  # local import keeps api free of cache at import time
        )

        def attempt() -> DownloadedFile:
            temp = temp_path_in(target_dir, name)
            try:
                return self._download_once(url, temp, what, progress)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise ModelDownloadError(f"cannot write {what} to {temp.parent}: {exc}") from None
            except BaseException:
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise

        return self._with_retries(f"downloading {what}", attempt)

    # -- internals -------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        base = min(MAX_BACKOFF_S, self.settings.model_download_backoff * (2**attempt))
        return base * random.uniform(0.8, 1.2)

    def _with_retries(self, what: str, fn: Callable[[], Any]) -> Any:
        attempts = self.settings.model_download_retries + 1
        last: _Transient | None = None
        for attempt in range(attempts):
            try:
                return fn()
            except _Transient as exc:
                last = exc
                if attempt + 1 >= attempts:
                    break
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                logger.warning("%s: %s; retry %d/%d in %.1f s", what, exc, attempt + 1, attempts - 1, delay)
                self._sleep(delay)
        raise ModelDownloadError(
            f"{what} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {last}. Check the "
            f"network and API_BASE_URL; MODEL_DOWNLOAD_RETRIES and MODEL_DOWNLOAD_TIMEOUT tune the "
            f"retry policy"
        )

    def _open(
        self, url: str, what: str, api: bool = False, api_key_given: bool = False, headers: dict[str, str] | None = None
    ) -> Any:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*", **(headers or {})})
        try:
            return self._opener.open(request, timeout=self.settings.model_download_connect_timeout)
        except urllib.error.HTTPError as exc:
            body = b""
            with contextlib.suppress(Exception):
                body = exc.read(4096)
            # the API's sentence ends with its own period; ours follow it (never "revoked).. Set")
            detail = _error_detail(body).rstrip(". ") if body else ""
            suffix = f": {detail}" if detail else ""
            code = exc.code
            exc.close()
            if code in TRANSIENT_STATUS:
                raise _Transient(
                    f"HTTP {code} from {redact(url)}{suffix}", parse_retry_after(exc.headers.get("Retry-After"))
                ) from None
            if api and code in (401, 403):
                if api_key_given:
                    raise ApiAuthError(
                        f"the Roboflow API refused the API key for {what} (HTTP {code}){suffix}. Set "
                        f"ROBOFLOW_API_KEY (or API_KEY) to a key of the workspace that owns the model"
                    ) from None
                raise ApiAuthError(
                    f"{what} needs a Roboflow API key (HTTP {code}){suffix}. Set ROBOFLOW_API_KEY "
                    f"(or API_KEY) to a key of the workspace that owns the model"
                ) from None
            if api and code == 404:
                raise ModelNotFoundError(
                    f"the Roboflow API does not know {what} (HTTP 404){suffix}. Check the project "
                    f"and version in the model id"
                ) from None
            raise ModelDownloadError(f"{what}: HTTP {code} from {redact(url)}{suffix}") from None
        except urllib.error.URLError as exc:
            raise _Transient(f"cannot reach {redact(url)}: {exc.reason}") from None
        except TimeoutError:
            raise _Transient(f"no answer from {redact(url)} within the timeout") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(f"connection to {redact(url)} failed: {exc!r}") from None
        except OSError as exc:
            raise _Transient(f"network error talking to {redact(url)}: {exc}") from None

    def _read(self, response: Any, url: str, size: int) -> bytes:
        try:
            # read1: return what has arrived (one recv) so the stall guard sees a trickling server
            return response.read1(size)
        except TimeoutError:
            raise _Transient(
                f"{redact(url)} stopped sending data for {self.settings.model_download_timeout:.0f} s"
            ) from None
        except http.client.IncompleteRead as exc:
            raise _Transient(
                f"{redact(url)} closed the connection early ({len(exc.partial)} bytes of the last chunk)"
            ) from None
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise _Transient(f"connection to {redact(url)} broke: {exc!r}") from None

    def _stream(
        self,
        response: Any,
        url: str,
        sink: Callable[[bytes], None],
        progress: ProgressCallback | None,
        total: int | None,
        limit: int | None = None,
        deadline: float | None = None,
    ) -> int:
        received = 0
        window_start, window_bytes = time.monotonic(), 0
        window = self.settings.model_download_timeout
        while True:
            chunk = self._read(response, url, CHUNK)
            if not chunk:
                return received
            received += len(chunk)
            window_bytes += len(chunk)
            if limit is not None and received > limit:
                raise ModelDownloadError(f"{redact(url)} sent more than {limit} bytes; refusing it")
            sink(chunk)
            if progress is not None:
                progress(received, total)
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise _Transient(f"{redact(url)} answers too slowly (over {window:.0f} s)")
            if now - window_start >= window:
                if window_bytes < STALL_MIN_BYTES:
                    raise _Transient(f"{redact(url)} is stalling ({window_bytes} bytes in {window:.0f} s)")
                window_start, window_bytes = now, 0

    @staticmethod
    def _content_length(response: Any) -> int | None:
        value = response.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    def _fetch_json_once(
        self, url: str, what: str, api: bool = False, api_key_given: bool = False, headers: dict[str, str] | None = None
    ) -> Any:
        deadline = time.monotonic() + self.settings.model_download_timeout
        with self._open(url, what, api=api, api_key_given=api_key_given, headers=headers) as response:
            parts: list[bytes] = []
            total = self._content_length(response)
            received = self._stream(response, url, parts.append, None, total, MAX_JSON_BYTES, deadline)
        if total is not None and received != total:
            raise _Transient(f"{redact(url)} sent {received} of {total} bytes")
        try:
            return json.loads(b"".join(parts).decode("utf-8"))
        except ValueError:
            raise ModelDownloadError(f"{what}: {redact(url)} did not answer with JSON") from None

    def _download_once(self, url: str, temp: Path, what: str, progress: ProgressCallback | None) -> DownloadedFile:
        digest = hashlib.md5(usedforsecurity=False)
        with self._open(url, what) as response, open(temp, "wb") as handle:
            total = self._content_length(response)
            expected = _expected_md5(response.headers)

            def sink(chunk: bytes) -> None:
                handle.write(chunk)
                digest.update(chunk)

            received = self._stream(response, url, sink, progress, total)
            handle.flush()
        if total is not None and received != total:
            raise _Transient(f"{redact(url)} sent {received} of {total} bytes (Content-Length)")
        md5 = digest.hexdigest()
        if expected is not None and md5 != expected:
            raise _Transient(f"{what}: md5 {md5} does not match the server's {expected}")
        if received == 0:
            raise _Transient(f"{redact(url)} sent an empty body")
        return DownloadedFile(path=temp, size=received, md5=md5, expected_md5=expected)
