"""sd_notify(3) without libsystemd: READY, STATUS, WATCHDOG and EXTEND_TIMEOUT for Type=notify units."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edge_agent.systemd")


class SystemdNotifier:
    """Talks to systemd's notify socket when there is one; does nothing otherwise."""

    def __init__(self, socket_path: str | None = None, watchdog_usec: str | None = None) -> None:
        # These two variables are systemd's interface, set by the service manager itself.
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if path:
            self._address = "\0" + path[1:] if path.startswith("@") else path
        usec = watchdog_usec if watchdog_usec is not None else os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if usec and usec.isdigit() else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> None:
        if self._address is None:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:  # never let the service die because systemd went away
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def status(self, status: str) -> None:
        self.notify(status=status)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start-up time, e.g. while a TensorRT engine builds."""
        self.notify(extend_timeout_usec=int(seconds * 1e6))

    def watchdog(self) -> None:
        self.notify(watchdog=1)

    def stopping(self) -> None:
        self.notify(stopping=1, status="stopping")
