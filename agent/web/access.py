"""Who may use the HTTP port: the token's source and rules, and what counts as loopback.

Plain functions, no aiohttp: ``agent.settings`` uses them to refuse, at start, a non-loopback
``HEALTH_HOST`` without a token (exit 2) and a token that cannot be read.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

# Visible ASCII only (it travels in headers and cookies), long enough not to be guessed.
TOKEN_RE = re.compile(r"^[\x21-\x7e]{16,4096}$")
TOKEN_HINT = "at least 16 visible ASCII characters without spaces, e.g. from `openssl rand -hex 16`"


def is_loopback_host(host: str) -> bool:
    """True when binding ``host`` only accepts connections from this machine.

    ``localhost`` and loopback addresses (127.0.0.0/8, ::1) are; the wildcard (``0.0.0.0``,
    ``::``, empty), any other address and any other name are not (a name may resolve anywhere).
    """
    text = host.strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def check_token(token: str, source: str) -> str:
    """``token`` if it is usable, else ValueError naming ``source`` (HTTP_TOKEN or the file)."""
    if not TOKEN_RE.match(token):
        raise ValueError(f"{source} is not a usable token; accepted: {TOKEN_HINT}")
    return token


def read_token_file(path: str) -> str:
    """The token in ``path`` (one line; surrounding white space ignored); ValueError if unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"HTTP_TOKEN_FILE={path!r} cannot be read: {reason}") from None
    return check_token(text.strip(), f"the content of HTTP_TOKEN_FILE={path!r}")
