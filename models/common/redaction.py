"""The one redactor for URLs and for text that may quote them.

Config output, log lines, error messages, HTTP answers and stats all pass URLs through
:func:`redact_url`; free text (an FFmpeg error, a log record) goes through :func:`redact_text`.
It lives in ``models``, the lowest layer, so that every layer can use the same one.

A password may hold any character, ``/``, ``@``, ``;``, ``?``, ``#`` and ``:`` included, and the
URL may be mistyped, so the redactor never trusts a URL parser to find it:

* userinfo runs from the start of the authority to the *last* ``@`` (a password may contain
  ``@``; a host cannot); the user name (before the first ``:``) stays visible, the rest is masked.
  A userinfo without ``:`` may be a token, so it is masked whole;
* an authority without ``@`` whose "port" is not a number (``rtsp://admin:secret``: the host
  was forgotten) is masked from that ``:`` on;
* a query parameter whose name looks like a credential (``password``, ``pwd``, ``token``,
  ``key``, ``auth``, ``sig``, ...) is masked from its value to the end of the text: a password
  with ``&`` in it would otherwise show its tail as the next parameter.

Where two of these overlap, the union is masked: hiding too much of a URL is the price of
never showing any of a secret.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"

# A scheme followed by any number of slashes: "rtsp://", and the typos "rtsp:/" and "rtsp:///".
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(/*)")
_SECRET_KEY = re.compile(r"pass|pwd|^pw$|secret|token|key|auth|sig|cred|session", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"[?&;]\s*([^=?&;#\s]+)\s*=")
# URLs quoted inside free text: a scheme and at least one slash, up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+[^\s'\"<>]+")
# Secrets shorter than this are not searched for in free text (a one-letter password would
# otherwise mask every such letter of every log line); URLs that hold them are still masked.
MIN_SCRUB_LENGTH = 3
# What may follow a URL quoted in a sentence without being part of it.
_TRAILING_PUNCTUATION = ".,;:!?)"


def _raw_spans(url: str) -> list[tuple[int, int]]:
    """The (start, end) ranges of ``url`` that may hold a secret, as each rule finds them."""
    spans: list[tuple[int, int]] = []
    match = _SCHEME.match(url)
    start = match.end() if match else 0
    rest = url[start:]
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        colon = userinfo.find(":")
        if colon >= 0:
            spans.append((start + colon + 1, start + at))
        elif match is not None:
            spans.append((start, start + at))
        # no scheme and no ':' before the '@': a file name such as clip@2x.mp4
    elif match is not None and match.group(1):
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        port_from = authority.rfind("]") + 1 if authority.startswith("[") else 0
        colon = authority.find(":", port_from)
        if colon >= 0 and not authority[colon + 1 :].isdigit():
            spans.append((start + colon + 1, len(url)))
    for param in _QUERY_PARAM.finditer(url, start):
        if _SECRET_KEY.search(param.group(1)):
            spans.append((param.end(), len(url)))
            break
    return spans


def _spans(url: str) -> list[tuple[int, int]]:
    """:func:`_raw_spans` merged and sorted: what :func:`redact_url` masks."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(_raw_spans(url)):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def redact_url(url: str) -> str:
    """``url`` with every part that may be a secret replaced by ``***``.

    ``rtsp://admin:p/w@d@10.0.0.5/live`` -> ``rtsp://admin:***@10.0.0.5/live``;
    ``http://cam/v?user=admin&password=x&ch=1`` -> ``http://cam/v?user=admin&password=***``.
    """
    if not isinstance(url, str) or not url:
        return url
    out: list[str] = []
    position = 0
    for lo, hi in _spans(url):
        out.append(url[position:lo])
        out.append(MASK)
        position = hi
    out.append(url[position:])
    return "".join(out)


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` as they may be quoted elsewhere (raw, percent-decoded and
    percent-encoded), longest first, for :func:`redact_text`."""
    found: set[str] = set()
    for lo, hi in _raw_spans(url) + _spans(url):
        raw = url[lo:hi]
        for variant in (raw, unquote(raw), quote(raw, safe="")):
            if len(variant) >= MIN_SCRUB_LENGTH:
                found.add(variant)
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = (), *, urls: bool = True) -> str:
    """``text`` with every known secret replaced by ``***`` and (``urls``) every URL in it redacted.

    ``urls=False`` for messages whose URLs were redacted where they were written: the URL scan
    would also mask example text such as ``rtsp://[user:pass@]host``.
    """
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SCRUB_LENGTH:
            text = text.replace(secret, MASK)
    return _URL_IN_TEXT.sub(lambda m: _redact_quoted_url(m.group(0)), text) if urls else text


def _redact_quoted_url(url: str) -> str:
    """A URL found in free text, where the punctuation after it (``mqtt://h:1883: refused``) is
    not part of it: a ``:`` there would make the port look like a password. The punctuation is
    left out only when the URL without it does not end in a secret, so that no character of a
    password can ever be shown."""
    body = url.rstrip(_TRAILING_PUNCTUATION)
    if body != url and _SCHEME.fullmatch(body) is None:
        shown = redact_url(body)
        if not shown.endswith(MASK):
            return shown + url[len(body) :]
    return redact_url(url)


__all__ = ["MASK", "redact_text", "redact_url", "url_secrets"]
