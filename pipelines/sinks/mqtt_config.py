"""Settings of the MQTT sink, checked when built so a bad value fails at start-up with a clear message."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edge_agent.models.common.redaction import redact_url
from edge_agent.pipelines.sinks.errors import MqttConfigError
from edge_agent.pipelines.sinks.mqtt_topics import Topics, validate_level, validate_prefix

_PROTOCOLS = {
    "5": "5",
    "5.0": "5",
    "v5": "5",
    "mqttv5": "5",
    "3.1.1": "3.1.1",
    "311": "3.1.1",
    "v311": "3.1.1",
    "mqttv311": "3.1.1",
    "3": "3.1.1",
}


_BROKER_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True, "tls": True}
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


class BrokerAddress(NamedTuple):
    """What MQTT_HOST says: the host, and the port and TLS when it is written as a URL."""

    host: str
    port: int | None = None
    tls: bool | None = None  # None: the text did not say (a plain host name)


def parse_broker(text: str) -> BrokerAddress:
    """``broker.local``, ``10.0.0.2:1883``, ``[::1]:1883``, ``mqtt://host:1883``, ``mqtts://host``.

    Raises :class:`MqttConfigError` (credentials in the text are never echoed) for anything else:
    another scheme, a path, credentials (use MQTT_USERNAME/MQTT_PASSWORD), a bad port.
    """
    if not isinstance(text, str) or not text.strip():
        raise MqttConfigError("is empty; give a host name or address, e.g. broker.local or 10.0.0.2")
    raw = text.strip()
    shown = repr(redact_url(raw))
    tls: bool | None = None
    rest = raw
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", raw)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        if scheme not in _BROKER_SCHEMES:
            raise MqttConfigError(
                f"{shown} has the scheme {scheme}://; accepted: a host name or address, or mqtt://host[:port] "
                "(mqtts://host[:port] for TLS); WebSockets are not supported"
            )
        tls = _BROKER_SCHEMES[scheme]
        rest = raw[scheme_match.end() :]
    if "@" in rest:
        raise MqttConfigError(f"{shown} holds credentials; set MQTT_USERNAME and MQTT_PASSWORD instead")
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise MqttConfigError(f"{shown} has a path or query; give only host[:port]")
    host, port_text = rest, ""
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise MqttConfigError(f"{shown}: unclosed '[' around an IPv6 address")
        host, after = rest[1:close], rest[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise MqttConfigError(f"{shown}: expected ':port' after ']'")
            port_text = after[1:]
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    elif rest.count(":") > 1 and scheme_match:
        raise MqttConfigError(f"{shown}: write an IPv6 address in brackets, e.g. mqtt://[::1]:1883")
    port: int | None = None
    if port_text or rest.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise MqttConfigError(f"{shown} has a bad port; accepted: host[:port] with a port from 1 to 65535")
        port = int(port_text)
    if not host:
        raise MqttConfigError(f"{shown} names no host")
    if ":" not in host and not _HOST_NAME.match(host):
        raise MqttConfigError(f"{shown} is not a host name or address (letters, digits, '-' and '.')")
    return BrokerAddress(host, port, tls)


def _check_file(path: str | None, what: str) -> None:
    if path is None:
        return
    if not isinstance(path, str) or not path:
        raise MqttConfigError(f"{what} must be a file path")
    if not Path(path).is_file():
        raise MqttConfigError(f"{what}={path!r} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise MqttConfigError(f"{what}={path!r} is not readable by this user")


@dataclass(kw_only=True)
class MqttConfig:
    """Everything the MQTT sink needs; plain values, no environment parsing here."""

    host: str
    agent_id: str
    port: int | None = None  # None: 8883 with TLS, else 1883
    username: str | None = None
    password: str | None = None
    password_file: str | None = None  # e.g. $CREDENTIALS_DIRECTORY/mqtt-password (systemd LoadCredential=)
    tls: bool = False
    tls_ca: str | None = None  # None: the system's CA store
    tls_cert: str | None = None  # client certificate (mutual TLS); may also hold the key
    tls_key: str | None = None
    tls_insecure: bool = False  # skip the host name check only; the chain is still verified
    qos: int = 1
    topic_prefix: str = "edge-agent"
    client_id: str | None = None  # None: "edge-agent-<agent_id>", stable across restarts
    keepalive: int = 30
    protocol: str = "5"  # "5" or "3.1.1"
    message_expiry_s: int | None = 300  # MQTT v5 expiry of predictions and stats; None = never
    queue_size: int = 10000  # messages kept while the broker is away; the oldest go first
    queue_bytes: int | None = None  # and at most this many bytes of them (None: no byte bound)
    outbox_path: str | Path | None = None  # SQLite file of the durable outbox; None: in memory
    outbox_fsync: bool = False  # fsync every outbox commit (survives power loss, costs writes)
    online_expiry_s: int | None = 60  # v5: "online" expires unless refreshed (every third of this)
    max_inflight: int = 20  # unacknowledged QoS>=1 messages on the wire (capped by the broker's)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    connect_timeout_s: float = 10.0
    retain_predictions: bool = False
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        try:
            broker = parse_broker(self.host)
        except MqttConfigError as exc:
            raise MqttConfigError(f"MQTT_HOST {exc}") from None
        if broker.port is not None:
            if self.port is not None and self.port != broker.port:
                raise MqttConfigError(
                    f"MQTT_HOST names port {broker.port} but MQTT_PORT is {self.port}; set the port in one place"
                )
            self.port = broker.port
        if broker.tls is not None and broker.tls != self.tls:
            wanted = "mqtts://" if self.tls else "mqtt://"
            raise MqttConfigError(
                f"MQTT_HOST starts with {'mqtts' if broker.tls else 'mqtt'}:// but MQTT_TLS is "
                f"{'off' if broker.tls else 'on'}; set MQTT_TLS={'true' if broker.tls else 'false'} "
                f"or write {wanted}{broker.host}"
            )
        self.host = broker.host
        validate_level(self.agent_id, "agent_id")
        validate_prefix(self.topic_prefix, "topic_prefix")
        validate_prefix(self.ha_prefix, "ha_prefix")
        if self.port is not None and not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise MqttConfigError(f"MQTT port={self.port!r} must be an integer from 1 to 65535")
        if self.qos not in (0, 1, 2):
            raise MqttConfigError(f"MQTT qos={self.qos!r} must be 0, 1 or 2")
        protocol = _PROTOCOLS.get(str(self.protocol).strip().lower())
        if protocol is None:
            raise MqttConfigError(f"MQTT protocol={self.protocol!r} must be '5' or '3.1.1'")
        self.protocol = protocol
        if not isinstance(self.keepalive, int) or not 1 <= self.keepalive <= 65535:
            raise MqttConfigError(
                f"MQTT keepalive={self.keepalive!r} must be 1 to 65535 seconds "
                "(0 would switch off dead-connection detection)"
            )
        if self.message_expiry_s is not None:
            if not isinstance(self.message_expiry_s, int) or self.message_expiry_s < 0:
                raise MqttConfigError(
                    f"message_expiry_s={self.message_expiry_s!r} must be a whole number of seconds "
                    "or None (never expire)"
                )
            if self.message_expiry_s == 0:
                self.message_expiry_s = None  # 0 reads as "no expiry" in the settings
        for name in ("online_expiry_s", "queue_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise MqttConfigError(f"MQTT {name}={value!r} must be a whole number >= 0 or None")
            if value == 0:
                setattr(self, name, None)
        for name in ("queue_size", "max_inflight"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MqttConfigError(f"MQTT {name}={value!r} must be a positive integer")
        if not self.reconnect_min_s > 0 or not self.reconnect_max_s >= self.reconnect_min_s:
            raise MqttConfigError(
                f"reconnect_min_s={self.reconnect_min_s!r} must be > 0 and reconnect_max_s="
                f"{self.reconnect_max_s!r} at least as large"
            )
        if not self.connect_timeout_s > 0:
            raise MqttConfigError(f"connect_timeout_s={self.connect_timeout_s!r} must be > 0")
        if self.client_id is not None and (not isinstance(self.client_id, str) or not self.client_id):
            raise MqttConfigError("MQTT client_id must be a non-empty string or None (derived from agent_id)")
        self._check_credentials()
        self._check_tls()

    def _check_credentials(self) -> None:
        if self.password is not None and self.password_file is not None:
            raise MqttConfigError("set the MQTT password or the password file, not both")
        _check_file(self.password_file, "MQTT password_file")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise MqttConfigError("an MQTT password is set but no username; set the username too")

    def _check_tls(self) -> None:
        given = [n for n in ("tls_ca", "tls_cert", "tls_key") if getattr(self, n) is not None]
        if given and not self.tls:
            raise MqttConfigError(f"{', '.join(given)} set but tls is off; switch TLS on or drop them")
        if self.tls_insecure and not self.tls:
            raise MqttConfigError("tls_insecure is set but tls is off")
        if self.tls_key is not None and self.tls_cert is None:
            raise MqttConfigError("tls_key is set without tls_cert; mutual TLS needs the certificate too")
        _check_file(self.tls_ca, "MQTT tls_ca")
        _check_file(self.tls_cert, "MQTT tls_cert")
        _check_file(self.tls_key, "MQTT tls_key")

    # -- derived values ------------------------------------------------------------------------

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    @property
    def effective_client_id(self) -> str:
        # Stable across restarts (a random id would leave a trail of sessions and wills behind);
        # unique as long as agent ids are. Two agents sharing an id take the connection from
        # each other in a loop, which the sink reports as "session taken over".
        return self.client_id or f"edge-agent-{self.agent_id}"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.agent_id)

    def resolve_password(self) -> str | None:
        """The password, read from ``password_file`` when that is set (trailing newline dropped)."""
        if self.password_file is None:
            return self.password
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MqttConfigError(f"cannot read MQTT password_file={self.password_file!r}: {exc}") from None
        password = text.rstrip("\r\n")
        if not password:
            raise MqttConfigError(f"MQTT password_file={self.password_file!r} is empty")
        return password

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context, or None without TLS; bad files raise :class:`MqttConfigError` here."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(f"cannot load MQTT tls_ca={self.tls_ca!r}: {exc}") from None
        if self.tls_cert is not None:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise MqttConfigError(
                    f"cannot load the MQTT client certificate tls_cert={self.tls_cert!r} / "
                    f"tls_key={self.tls_key!r}: {exc} (a key protected by a passphrase is not supported)"
                ) from None
        if self.tls_insecure:
            context.check_hostname = False
        return context

    def describe(self) -> str:
        """``mqtt(s)://host:port`` for log lines; never shows credentials."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.effective_port}"
