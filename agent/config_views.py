"""Values made from a loaded configuration: the HTTP port's token, the MQTT broker's connection and
the state directory. Apart from ``settings`` so that ``validation`` (which ``settings.load_config``
ends in) can use them without importing ``settings`` back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.agent.errors import ConfigError
from edge_agent.agent.web.access import check_token, read_token_file
from edge_agent.pipelines import state
from edge_agent.pipelines.sinks.mqtt_config import MqttConfig

if TYPE_CHECKING:
    from edge_agent.agent.settings import AgentSettings, Config


def http_token(agent: AgentSettings) -> str | None:
    """HTTP_TOKEN, or the content of HTTP_TOKEN_FILE; None when neither is set."""
    if agent.http_token is not None and agent.http_token_file:
        raise ConfigError("HTTP_TOKEN and HTTP_TOKEN_FILE are both set; set only one")
    try:
        if agent.http_token_file:
            return read_token_file(agent.http_token_file)
        if agent.http_token is not None:
            return check_token(agent.http_token.get_secret_value(), "HTTP_TOKEN")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return None


def mqtt_config(config: Config) -> MqttConfig:
    agent = config.agent
    assert agent.mqtt_host is not None
    return MqttConfig(
        host=agent.mqtt_host,
        port=agent.mqtt_port,
        username=agent.mqtt_username,
        password=agent.mqtt_password.get_secret_value() if agent.mqtt_password else None,
        password_file=agent.mqtt_password_file,
        tls=agent.mqtt_tls,
        tls_ca=agent.mqtt_tls_ca,
        tls_cert=agent.mqtt_tls_cert,
        tls_key=agent.mqtt_tls_key,
        tls_insecure=agent.mqtt_tls_insecure,
        qos=agent.mqtt_qos,
        topic_prefix=agent.mqtt_topic_prefix,
        agent_id=agent.agent_id,
        keepalive=agent.mqtt_keepalive,
        protocol=agent.mqtt_protocol,
        message_expiry_s=agent.mqtt_message_expiry or None,
        queue_size=agent.mqtt_queue_size,
        queue_bytes=agent.mqtt_queue_bytes or None,
        outbox_path=state_dir(config) / state.DB_NAME if agent.mqtt_outbox == "disk" else None,
        outbox_fsync=agent.mqtt_outbox_fsync,
        reconnect_min_s=agent.mqtt_reconnect_min,
        reconnect_max_s=agent.mqtt_reconnect_max,
        online_expiry_s=agent.mqtt_online_expiry or None,
        ha_discovery=agent.mqtt_ha_discovery,
    )


def state_dir(config: Config) -> Path:
    """STATE_DIR, else systemd's STATE_DIRECTORY, else the XDG default (see pipelines/state.py)."""
    raw = config.agent.state_dir
    return Path(raw.split(":")[0]).expanduser() if raw and raw.strip() else state.default_state_dir()
