"""The one URL redactor: exact cases from the field, and properties over generated passwords."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_agent.models.common.redaction import MASK, redact_text, redact_url, url_secrets

# Every printable ASCII character (white space included), plus a few non-ASCII ones.
PASSWORDS = st.text(alphabet=string.printable + "äß€✓", min_size=1, max_size=40)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:s3cret@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://admin:p/w@d;x@10.0.0.5/live", "rtsp://admin:***@10.0.0.5/live"),  # '/', '@', ';'
        ("rtsp:/admin:pw@h/x", "rtsp:/admin:***@h/x"),  # typo: one slash
        ("rtsp///admin:pw@h/x", "rtsp///admin:***@h/x"),  # typo: no colon
        ("rtsp:admin:pw@h", "rtsp:admin:***@h"),
        ("rtsp://admin:pw", "rtsp://admin:***"),  # host forgotten: the "port" is the password
        ("rtsp://token@h/x", "rtsp://***@h/x"),  # no ':' -- may be a token
        ("http://cam/v?user=admin&password=x&ch=1", "http://cam/v?user=admin&password=***"),
        ("http://cam/v?channel=1&PWD=x", "http://cam/v?channel=1&PWD=***"),
        ("https://h/live.m3u8?token=abc", "https://h/live.m3u8?token=***"),
        ("http://u:p@[::1]:80/x", "http://u:***@[::1]:80/x"),
        # nothing to hide: unchanged
        ("rtsp://10.0.0.5/live", "rtsp://10.0.0.5/live"),
        ("http://[::1]:8080/x?channel=2", "http://[::1]:8080/x?channel=2"),
        ("/data/clip@2x.mp4", "/data/clip@2x.mp4"),
        ("/dev/video0", "/dev/video0"),
        ("v4l2:///dev/video0", "v4l2:///dev/video0"),
        ("broker.local:1883", "broker.local:1883"),
    ],
)
def test_exact_cases(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_text_with_urls_and_known_secrets() -> None:
    url = "rtsp://admin:Pa%2Fss@h/x"
    text = f"Connection refused: '{url}' (password Pa/ss rejected)"
    out = redact_text(text, url_secrets(url))
    assert "Pa%2Fss" not in out and "Pa/ss" not in out
    assert "rtsp://admin:***@h/x" in out


# -- properties: no part of any password survives ------------------------------------------------

USERINFO = "rtsp://admin:{pw}@10.0.0.5:554/live"
TYPO_ONE_SLASH = "rtsp:/admin:{pw}@10.0.0.5/live"
TYPO_NO_COLON = "rtsp//admin:{pw}@10.0.0.5/live"
QUERY = "http://10.0.0.5/cgi?user=admin&password={pw}"
BOTH = "rtsp://admin:{pw}@10.0.0.5/live?user=admin&pwd={pw}"

# What the redactor may answer for each template, whatever the password. More than one form:
# a password that itself looks like "?password=..." or holds '@' makes it mask more, never less.
ALLOWED = {
    USERINFO: {"rtsp://admin:***@10.0.0.5:554/live", "rtsp://admin:***"},
    TYPO_ONE_SLASH: {"rtsp:/admin:***@10.0.0.5/live", "rtsp:/admin:***"},
    TYPO_NO_COLON: {"rtsp//admin:***@10.0.0.5/live", "rtsp//admin:***"},
    QUERY: {"http://10.0.0.5/cgi?user=admin&password=***", "http://***"},
    BOTH: {"rtsp://admin:***@10.0.0.5/live?user=admin&pwd=***", "rtsp://admin:***"},
}


@pytest.mark.parametrize("template", list(ALLOWED))
@settings(max_examples=300, deadline=None)
@given(pw=PASSWORDS)
def test_redacted_url_does_not_depend_on_the_password(template: str, pw: str) -> None:
    out = redact_url(template.format(pw=pw))
    assert out in ALLOWED[template], (pw, out)


@pytest.mark.parametrize("template", list(ALLOWED))
@settings(max_examples=200, deadline=None)
@given(pw=st.text(alphabet=string.printable + "äß€", min_size=8, max_size=40))
def test_free_text_quoting_the_url_or_the_password_is_scrubbed(template: str, pw: str) -> None:
    url = template.format(pw=pw)
    for form in ALLOWED[template]:
        assume(pw not in form and quote(pw, safe="") not in form)
    text = f"av.open failed for '{url}': 401 (user admin, password {pw}, encoded {quote(pw, safe='')})"
    out = redact_text(text, url_secrets(url))
    assert pw not in out
    assert quote(pw, safe="") not in out
    assert MASK in out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_are_scrubbed_in_both_formats(fmt: str) -> None:
    import io
    import logging

    from edge_agent.agent.logs import JsonFormatter, ScrubbingFormatter

    secret = 'Qq"7\\\\x@Zz'
    formatter: logging.Formatter = JsonFormatter([secret])
    if fmt == "text":
        formatter = ScrubbingFormatter(logging.Formatter("%(message)s"), [secret])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.scrub.{fmt}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("opening rtsp://admin:%s@h/x failed; password %s", secret, secret)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Qq" not in out and "Zz" not in out, out
    assert "rtsp://admin:***@h/x" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # punctuation after a URL in a sentence is not part of it: the port stays a port
        (
            "cannot connect to mqtt://127.0.0.1:18999: [Errno 111] Connection refused",
            "cannot connect to mqtt://127.0.0.1:18999: [Errno 111] Connection refused",
        ),
        ("see http://h:8090/metrics.", "see http://h:8090/metrics."),
        ("(at rtsp://cam:554/live), retrying", "(at rtsp://cam:554/live), retrying"),
        # ... but never at the cost of a character of a secret
        ("open rtsp://admin:secret: failed", "open rtsp://admin:*** failed"),
        ("get http://h/x?token=abc.", "get http://h/x?token=***"),
        ("rtsp://admin:pw@h:554/x: refused", "rtsp://admin:***@h:554/x: refused"),
    ],
)
def test_punctuation_after_a_url_in_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
