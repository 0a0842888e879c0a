"""Binding the HTTP port (HEALTH_HOST, HEALTH_PORT) before any model loads, so that a port in use
or an address that is not this machine's is a one-line configuration error at once."""

from __future__ import annotations

import errno
import socket

from edge_agent.agent.errors import ConfigError


def bind_health_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`ConfigError` naming HEALTH_HOST or
    HEALTH_PORT when the address is not this machine's, the port is taken or needs privileges."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"HEALTH_HOST={host!r} does not resolve ({reason}); accepted: an address of this machine, "
            "e.g. 127.0.0.1 (local only), 0.0.0.0 (every interface) or ::"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart within TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"HEALTH_PORT={port} is already in use on {host} (another edge-agent or another service?); "
                "choose a free port or stop the other process"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(
                f"HEALTH_PORT={port} needs privileges this user does not have; use a port above 1023"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"HEALTH_HOST={host!r} is not an address of this machine; accepted: 127.0.0.1 (local only), "
                "0.0.0.0 (every interface), :: or the address of one of its interfaces"
            ) from None
        raise ConfigError(f"cannot listen on HEALTH_HOST={host!r} HEALTH_PORT={port}: {exc.strerror or exc}") from None
    return sock


def check_health_address(host: str) -> None:
    """HEALTH_HOST must be an address of this machine (checked by binding a free port on it)."""
    bind_health_socket(host, 0).close()
