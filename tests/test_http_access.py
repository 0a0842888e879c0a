"""HTTP_TOKEN: where it comes from, what it must look like, and no open port beyond loopback without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent.web.access import check_token, is_loopback_host, read_token_file
from tests.test_agent_config import run_cli

TOKEN = "s3cret-T0ken-for-tests-0123456789"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("camera-box.local", False),  # a name may resolve anywhere
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_token_rules(tmp_path: Path) -> None:
    assert check_token(TOKEN, "HTTP_TOKEN") == TOKEN
    for bad in ("short", "has a space in it 0123456789", "tab\there-0123456789", "é" * 20):
        with pytest.raises(ValueError, match="HTTP_TOKEN is not a usable token; accepted: at least 16"):
            check_token(bad, "HTTP_TOKEN")
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token_file(str(path)) == TOKEN
    with pytest.raises(ValueError, match=r"HTTP_TOKEN_FILE=.*cannot be read"):
        read_token_file(str(tmp_path / "missing"))


def _agent_env(**extra: str) -> dict[str, str]:
    return {"HEALTH_PORT": "18999", "STDOUT_SINK": "false", **extra}


@pytest.mark.parametrize("command", ["config", "run"])
def test_non_loopback_bind_without_token_exits_2_naming_http_token(command: str) -> None:
    result = run_cli(command, env=_agent_env(HEALTH_HOST="0.0.0.0"))
    assert result.returncode == 2, result.stderr
    assert "HEALTH_HOST='0.0.0.0' is not a loopback address" in result.stderr
    assert "HTTP_TOKEN" in result.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HTTP_TOKEN": "tooshort"}, "HTTP_TOKEN is not a usable token"),
        ({"HTTP_TOKEN_FILE": "/nonexistent/token"}, "HTTP_TOKEN_FILE='/nonexistent/token' cannot be read"),
        ({"HTTP_TOKEN": TOKEN, "HTTP_TOKEN_FILE": "/etc/hostname"}, "HTTP_TOKEN and HTTP_TOKEN_FILE are both set"),
    ],
)
def test_bad_tokens_exit_2(env: dict[str, str], needle: str) -> None:
    result = run_cli("config", env=_agent_env(**env))
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert "tooshort" not in result.stderr + result.stdout


def test_token_from_a_file_allows_any_host_and_is_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    result = run_cli("config", env=_agent_env(HEALTH_HOST="0.0.0.0", HTTP_TOKEN_FILE=str(path)))
    assert result.returncode == 0, result.stderr
    result = run_cli("config", env=_agent_env(HEALTH_HOST="0.0.0.0", HTTP_TOKEN=TOKEN))
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert '"HTTP_TOKEN": "***"' in result.stdout
