"""MQTT sink: predictions and stats to a broker, with an availability topic, without ever blocking.

Threads and who does what
-------------------------
* Producers (the event loop, inference threads) call :meth:`MqttSink.publish_prediction` /
  :meth:`~MqttSink.publish_stats`: JSON-encode, append to the bounded :class:`Outbox`, set an
  event. They take no lock but the outbox's, and only for a deque operation.
* paho's network thread (``loop_start``) connects, reconnects with exponential back-off and
  jitter (``reconnect_min_s`` doubling up to ``reconnect_max_s``, each delay 50-100 % of that,
  so an agent is back within ``reconnect_max_s`` of the broker's return however long it was
  away, and a fleet does not reconnect in lockstep), reads acknowledgements, keeps alive.
* With ``outbox_path`` set, the outbox of QoS>=1 messages is on disk
  (:class:`~pipelines.sinks.mqtt_disk_outbox.DiskOutbox`, its own writer thread): a message
  reaches paho only once it is committed, its row goes when the broker acknowledges it, and what
  is left at exit or after a crash is sent first by the next start.
* The *feeder* thread moves messages from the outbox to paho while connected, keeping at most
  ``window`` of them unacknowledged (``max_inflight``, capped by the broker's v5 Receive
  Maximum), and books acknowledgements.
* ``asyncio`` is only used at the edges: :meth:`start` and :meth:`close` (which polls, so the
  loop never waits on a lock or a join).

Outage handling (why not leave it to paho)
------------------------------------------
paho keeps every unacknowledged QoS>=1 message in its own dict and resends it after a reconnect
(with DUP set), also for messages published while disconnected. On its own that falls short:

* its queue limit (``max_queued_messages``) refuses the *newest* message; we want the newest and
  drop the oldest, counted;
* after a reconnect it resends *all* stored messages at once, ignoring ``max_inflight_messages``
  and the broker's Receive Maximum (``_messages_reconnect_reset_out`` never counts), so a long
  outage ends in a burst the broker may answer with a disconnect;
* ``on_connect`` runs before that resend, so anything published from another thread at that
  moment overtakes older messages: per-stream order breaks.

So paho never holds more than the window, and never across a connection: on every disconnect
(and again on connect, as a safety net) the sink takes the unacknowledged messages back with
``drop_out_messages()`` and puts them at the head of the outbox in their original order; the
feeder sends them again first. A message leaves the sink only when the broker acknowledged it
(QoS>=1), when the outbox overflows (oldest first, ``dropped_overflow``), or when the broker
rejects it for good (v5 PUBACK failure, over its announced maximum packet size, or it was
alone in flight on five connections in a row that all dropped — a poison message must not
wedge the queue). To single such a message out, after a connection died with messages in
flight the feeder sends one at a time until the first acknowledgement (``_probing``).

Message expiry (v5) counts from the moment the broker gets a message, as MQTT defines it: time
spent in our outbox during an outage does not eat into it, so an outage loses nothing within
``queue_size``; each message carries its capture time for consumers that care about age.

Sessions: the sink only publishes, and the broker keeps no state for a client's outgoing QoS 1
messages, so a persistent session would buy nothing; it connects with a clean start (v5, session
expiry 0) / clean session (3.1.1) and resends unacknowledged messages itself. QoS 1 is
at-least-once: a message acknowledged by the broker while the connection died is sent again,
and consumers de-duplicate on ``message_id``. QoS 2 is accepted but gets the same treatment
(at-least-once across reconnects).

Availability: Last Will ``offline`` (retained, QoS 1) on ``{prefix}/{agent_id}/status``,
``online`` (retained) as the first message of every connection, and ``offline`` published by
:meth:`close` itself because a clean DISCONNECT discards the will. With MQTT v5 ``online``
carries a message expiry of ``online_expiry_s`` and is published again every third of it, so a
broker that lost the will (it crashed, or restarted from its persistence file while the agent
died) stops serving ``online`` for a dead agent at most ``online_expiry_s`` after its last sign
of life. MQTT 3.1.1 has no expiry: there the will and the ``offline`` on close are all there is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.pipelines.backoff import Backoff
from edge_agent.pipelines.sinks.encoding import encode_json
from edge_agent.pipelines.sinks.errors import MqttConfigError, MqttPayloadError
from edge_agent.pipelines.sinks.mqtt_config import MqttConfig
from edge_agent.pipelines.sinks.mqtt_discovery import (
    agent_discovery,
    count_discovery,
    event_discovery,
    snapshot_discovery,
    stream_discovery,
)
from edge_agent.pipelines.sinks.mqtt_disk_outbox import DiskOutbox
from edge_agent.pipelines.sinks.mqtt_outbox import Outbox, OutMessage
from edge_agent.pipelines.sinks.mqtt_topics import Topics

if TYPE_CHECKING:
    from edge_agent.pipelines.sinks.registry import SinkHooks, SinkSettings

__all__ = ["MqttConfig", "MqttConfigError", "MqttPayloadError", "MqttSink", "Topics", "encode_json"]

log = logging.getLogger("edge_agent.mqtt")
_paho_log = logging.getLogger("edge_agent.mqtt.paho")

_MAX_SEND_ATTEMPTS = 5
_AUTH_REASONS = {134, 135}  # v5 "Bad user name or password", "Not authorized" (v3 codes 4, 5 map here)
_SESSION_TAKEN_OVER = 142
_SHORT_SESSION_S = 5.0
_PUBLISH_OVERHEAD = 128  # fixed header, topic length, packet id, our properties: an upper bound
_OVERFLOW_LOG_INTERVAL_S = 60.0
_FLAP_QUIET_S = 60.0  # after a "connection lost" warning, further drops within this time log at DEBUG
_RECONNECT_JITTER = 0.5  # each reconnect delay is 50-100 % of the doubling schedule's
# paho's states in which its network loop must stop waiting (private names, hence the getattr)
_STOP_STATES = tuple(
    getattr(getattr(paho, "_ConnectionState", None), name)
    for name in ("MQTT_CS_DISCONNECTING", "MQTT_CS_DISCONNECTED")
    if hasattr(getattr(paho, "_ConnectionState", None), name)
)


def _connect_hint(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return " (the broker's certificate is not trusted or does not name this host: check tls_ca / host)"
    if isinstance(exc, ssl.SSLError):
        return " (TLS handshake failed: is this a TLS listener, and do the certificates match?)"
    if isinstance(exc, ConnectionRefusedError):
        return " (is the broker running and listening on that port?)"
    if isinstance(exc, socket.gaierror):
        return " (the host name does not resolve)"
    if isinstance(exc, TimeoutError):
        return " (no answer within connect_timeout_s)"
    return ""


async def _wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done`` every few ms until it holds or the loop clock passes ``deadline``.

    What close() waits for changes on other threads; polling for the second or so that close()
    takes is simpler than routing every paho callback through call_soon_threadsafe.
    """
    loop = asyncio.get_running_loop()
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class _Client(paho.Client):
    """paho's client, telling the sink why a connection attempt failed.

    paho's loop swallows the exception of a failed (re)connect and calls ``on_connect_fail``
    without it; a user needs "certificate verify failed" or "connection refused" in the log.
    """

    on_attempt: Callable[[], None] | None = None
    on_connect_error: Callable[[BaseException], None] | None = None
    backoff: Backoff | None = None

    def _reconnect_wait(self) -> None:
        # paho doubles its delay without jitter and waits in 1 s steps; this keeps its loop but
        # takes the delay from our backoff (reset on every successful connection).
        if self.backoff is None:
            super()._reconnect_wait()
            return
        deadline = time.monotonic() + self.backoff.next_delay()
        while not self._thread_terminate and self._state not in _STOP_STATES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.05))

    def reconnect(self) -> MQTTErrorCode:
        if self.on_attempt is not None:
            self.on_attempt()
        try:
            return super().reconnect()
        except OSError as exc:
            if self.on_connect_error is not None:
                self.on_connect_error(exc)
            raise


class MqttSink:
    """Publishes predictions and stats to MQTT; see the module docstring for the design."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.topics: Topics = config.topics
        self._password = config.resolve_password()
        self._ssl_context = config.ssl_context()
        self._v5 = config.protocol == "5"
        self._wake = threading.Event()
        self._outbox: Outbox | DiskOutbox
        if config.outbox_path is not None and config.qos > 0:
            self._outbox = DiskOutbox(
                Path(config.outbox_path),
                agent_id=config.agent_id,
                capacity=config.queue_size,
                max_bytes=config.queue_bytes,
                fsync=config.outbox_fsync,
                on_drop=self._note_overflow,
                on_ready=self._wake.set,
            )
            if self._outbox.restored:
                log.info(
                    "MQTT outbox %s: %d message(s) from an earlier run, sent before new ones",
                    config.outbox_path,
                    self._outbox.restored,
                )
        else:
            self._outbox = Outbox(config.queue_size, config.queue_bytes, on_drop=self._note_overflow)
        self._control: deque[OutMessage] = deque()  # status + discovery: sent first, never dropped
        self._acks: deque[tuple[int, bool, str]] = deque()
        self._inflight: dict[int, OutMessage] = {}
        self._net_lock = threading.Lock()  # inflight map, connection state, every client.publish
        self._count_lock = threading.Lock()
        self._connected = False
        self._window = config.max_inflight
        # After a connection died with messages in flight, send one at a time until one is
        # acknowledged, so that a message the broker kills the connection over is isolated.
        self._probing = False
        self._max_packet: int | None = None
        self._client: _Client | None = None
        self._feeder: threading.Thread | None = None
        self._stop_feeder = False
        self._closing = False
        self._stream_topics: dict[str, str] = {}
        # Home Assistant documents of tracking entities, sent again on every connection
        self._discovered: set[str] = set()
        self._event_streams: set[str] = set()
        self._discovery_docs: list[tuple[str, dict[str, Any]]] = []
        self._props_expiring = self._publish_properties(config.message_expiry_s)
        self._props_plain = self._publish_properties(None)
        self._props_online: Properties | None = None
        self._online_refresh_s: float | None = None
        if self._v5 and config.online_expiry_s:
            self._props_online = Properties(PacketTypes.PUBLISH)
            self._props_online.MessageExpiryInterval = config.online_expiry_s
            self._online_refresh_s = config.online_expiry_s / 3.0
        self._next_online_at = math.inf
        self._kept = 0
        # error reporting: log a problem once, then quietly count until it changes or clears
        self._last_logged: str | None = None
        self._attempt_reported = False
        self._overflow_logged_at = -math.inf
        self._down_since: float | None = None
        self._flap_quiet_until = -math.inf
        self._flaps_unreported = 0
        self._takeover_reported = False
        self._connected_at = 0.0
        self._short_sessions = 0
        # counters
        self._published = 0
        self._acked = 0
        self._resent = 0
        self._rejected = 0
        self._undeliverable = 0
        self._dropped_closed = 0
        self._connects = 0
        self._disconnects = 0
        self._connect_failures = 0
        self._last_error: str | None = None
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s, jitter=_RECONNECT_JITTER)

    # -- public API ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once even when the broker is down."""
        if self._client is not None or self._closing:
            raise RuntimeError("MqttSink.start() called twice or after close()")
        client = self._make_client()
        self._client = client
        self._feeder = threading.Thread(target=self._feeder_main, name="mqtt-feeder", daemon=True)
        self._feeder.start()
        cfg = self.config
        if self._v5:
            client.connect_async(cfg.host, cfg.effective_port, cfg.keepalive, clean_start=True)
        else:
            client.connect_async(cfg.host, cfg.effective_port, cfg.keepalive)
        client.loop_start()
        log.info(
            "MQTT sink: connecting to %s as %r (MQTT %s, QoS %d), publishing under %s/",
            cfg.describe(),
            cfg.effective_client_id,
            cfg.protocol,
            cfg.qos,
            self.topics.base,
        )

    def publish_prediction(self, stream: str, payload: dict[str, Any]) -> None:
        """Queue one prediction message; never blocks, safe from any thread.

        Raises :class:`MqttPayloadError` only for a payload that is not JSON material (a bug).
        """
        topic = self._stream_topics.get(stream)
        if topic is None:
            topic = self.topics.predictions(stream)
            self._stream_topics[stream] = topic
            if self.config.ha_discovery and self._connected:
                self._queue_control(stream_discovery(self.config, stream))
        seq = payload.get("seq")
        self._enqueue(
            OutMessage(
                topic,
                encode_json(payload),
                self.config.qos,
                self.config.retain_predictions,
                expires=True,
                stream=stream,
                stream_seq=seq if isinstance(seq, int) else None,
            )
        )

    def publish_answer(self, stream: str, payload: dict[str, Any]) -> None:
        """Queue one vision-language answer (through the same outbox as predictions); never blocks."""
        self._enqueue(
            OutMessage(self.topics.answers(stream), encode_json(payload), self.config.qos, False, expires=True)
        )

    def publish_event(self, stream: str, payload: dict[str, Any]) -> None:
        """Queue one tracking event: at least QoS 1 (an event is not a frame to lose), through
        the same (durable) outbox as predictions, numbered on the stream's event ``seq``."""
        if self.config.ha_discovery and stream not in self._event_streams:
            self._event_streams.add(stream)
            self._queue_discovery(event_discovery(self.config, stream))
        seq = payload.get("seq")
        self._enqueue(
            OutMessage(
                self.topics.events(stream),
                encode_json(payload),
                max(self.config.qos, 1),
                False,
                expires=False,
                stream=f"{stream}/events",
                stream_seq=seq if isinstance(seq, int) else None,
            )
        )

    def publish_counts(self, stream: str, counts: dict[str, int]) -> None:
        """Queue retained counts (``zones/...`` and ``lines/...`` subtopics -> number)."""
        for subtopic, value in counts.items():
            topic = self.topics.count(stream, subtopic)
            self._enqueue(OutMessage(topic, str(int(value)).encode(), max(self.config.qos, 1), True, expires=False))
            if self.config.ha_discovery and topic not in self._discovered:
                self._discovered.add(topic)
                self._queue_discovery(count_discovery(self.config, stream, subtopic))

    def publish_snapshot(self, stream: str, cls: str, jpeg: bytes) -> None:
        """Queue a retained JPEG: the newest best snapshot of this class on this stream."""
        topic = self.topics.snapshot(stream, cls)
        self._enqueue(OutMessage(topic, jpeg, max(self.config.qos, 1), True, expires=False))
        if self.config.ha_discovery and topic not in self._discovered:
            self._discovered.add(topic)
            self._queue_discovery(snapshot_discovery(self.config, stream, cls))

    def _queue_discovery(self, docs: list[tuple[str, dict[str, Any]]]) -> None:
        self._discovery_docs.extend(docs)
        if self._connected:
            self._queue_control(docs)

    def publish_stats(self, payload: dict[str, Any]) -> None:
        """Queue one stats message; never blocks, safe from any thread."""
        self._enqueue(OutMessage(self.topics.stats, encode_json(payload), self.config.qos, False, expires=True))

    async def close(self, timeout: float = 10.0) -> None:
        """Flush, publish ``offline``, disconnect, stop the threads; all within ``timeout`` seconds.

        Waits (polling, never blocking the loop) until every queued message is acknowledged or
        the time is up; keeps a short reserve of the time for ``offline`` and the disconnect.
        """
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        client = self._client
        reserve = min(1.0, max(timeout, 0.0) * 0.2)
        if client is None:
            await self._close_outbox(deadline)
            self._report_lost()
            return
        self._wake.set()
        # A durable outbox keeps what the broker has not taken for the next start: waiting for a
        # broker that is away would only hold up the shutdown.
        if self._connected or not self._outbox.durable:
            await _wait_until(
                lambda: not self._pending() or (self._outbox.durable and not self._connected), deadline - reserve
            )
        self._stop_feeder = True
        self._wake.set()
        feeder = self._feeder
        await _wait_until(lambda: feeder is None or not feeder.is_alive(), deadline)
        with self._net_lock:
            self._process_acks()
            info = None
            if self._connected:
                info = client.publish(self.topics.status, "offline", qos=1, retain=True)
        if info is not None:
            sent = info
            await _wait_until(lambda: not self._connected or self._is_published(sent), deadline)
        client.disconnect()
        # loop_stop() joins paho's thread, which may sit in a connect attempt for up to
        # connect_timeout_s: join it on a helper thread and stop waiting at the deadline.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        await _wait_until(lambda: not stopper.is_alive(), deadline)
        if stopper.is_alive():
            log.debug("MQTT network thread still stopping after close(); left to finish in the background")
        with self._net_lock:
            self._process_acks()
        await self._close_outbox(deadline)
        self._report_lost()

    async def _close_outbox(self, deadline: float) -> None:
        # The disk outbox's last commit runs on its writer thread; joined from a helper thread
        # so the loop never blocks on the disk.
        result: list[int] = []
        loop = asyncio.get_running_loop()
        budget = max(deadline - loop.time(), 0.5)
        closer = threading.Thread(
            target=lambda: result.append(self._outbox.close(budget)), name="mqtt-outbox-close", daemon=True
        )
        closer.start()
        await _wait_until(lambda: not closer.is_alive(), loop.time() + budget + 0.1)
        self._kept = result[0] if result else len(self._outbox)

    def counters(self) -> dict[str, Any]:
        """A snapshot for stats and health; plain JSON types only."""
        inflight = [m for m in list(self._inflight.values()) if not m.control]
        oldest = [m.created for m in inflight]
        head = self._outbox.oldest_created()
        if head is not None:
            oldest.append(head)
        outbox = self._outbox
        return {
            "connected": self._connected,
            "outbox": "disk" if outbox.durable else "memory",
            "queued": len(outbox),
            "in_flight": len(inflight),
            "outbox_bytes": outbox.stored_bytes,
            "oldest_queued_age_s": round(max(time.time() - min(oldest), 0.0), 3) if oldest else None,
            "restored": outbox.restored,
            "outbox_write_errors": getattr(outbox, "write_errors", 0),
            "published": self._published,
            "acked": self._acked,
            "resent": self._resent,
            "dropped_overflow": self._outbox.dropped,
            "dropped_rejected": self._rejected,
            "dropped_undeliverable": self._undeliverable,
            "dropped_closed": self._dropped_closed,
            "connects": self._connects,
            "reconnects": max(self._connects - 1, 0),
            "disconnects": self._disconnects,
            "connect_failures": self._connect_failures,
            "last_error": self._last_error,
        }

    # -- producers -----------------------------------------------------------------------------

    def _enqueue(self, message: OutMessage) -> None:
        if self._closing:
            with self._count_lock:
                self._dropped_closed += 1
            return
        self._outbox.put(message)  # overflow is reported through _note_overflow
        self._wake.set()

    def _note_overflow(self, dropped: int) -> None:
        now = time.monotonic()
        if now - self._overflow_logged_at >= _OVERFLOW_LOG_INTERVAL_S:
            self._overflow_logged_at = now
            log.warning(
                "MQTT outbox full (%d messages, %.1f MiB waiting for %s; bounds MQTT_QUEUE_SIZE=%d, "
                "MQTT_QUEUE_BYTES=%s): dropping the oldest; %d dropped so far (this line at most once a minute)",
                len(self._outbox),
                self._outbox.stored_bytes / 2**20,
                self.config.describe(),
                self.config.queue_size,
                self.config.queue_bytes or "unbounded",
                self._outbox.dropped,
            )

    def _queue_control(self, docs: list[tuple[str, dict[str, Any]]]) -> None:
        for topic, doc in docs:
            self._control.append(OutMessage(topic, encode_json(doc), 1, True, expires=False, control=True))
        self._wake.set()

    # -- feeder thread -------------------------------------------------------------------------

    def _feeder_main(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                with self._net_lock:
                    self._process_acks()
                if self._stop_feeder:
                    return
                self._refresh_online()
                self._feed()
            except Exception:  # the feeder must outlive any surprise, or the queue silently stalls
                log.exception("MQTT feeder error (continuing)")
                time.sleep(0.1)

    def _refresh_online(self) -> None:
        if self._online_refresh_s is None or time.monotonic() < self._next_online_at:
            return
        with self._net_lock:
            if self._connected and not self._closing:
                self._control.append(self._online_message())
                self._next_online_at = time.monotonic() + self._online_refresh_s

    def _online_message(self) -> OutMessage:
        return OutMessage(self.topics.status, b"online", 1, True, expires=False, control=True)

    def _feed(self) -> None:
        client = self._client
        assert client is not None
        while not self._stop_feeder:
            with self._net_lock:
                window = 1 if self._probing else self._window
                if not self._connected or len(self._inflight) >= window:
                    return
                control = bool(self._control)
                message = self._control.popleft() if control else self._outbox.pop()
                if message is None:
                    return
                if not self._sendable(message):
                    continue
                try:
                    info = client.publish(
                        message.topic, message.payload, message.qos, message.retain, self._properties(message)
                    )
                except (ValueError, TypeError) as exc:
                    self._give_up(message, f"paho refused it: {exc}")
                    continue
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                    info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos > 0
                ):
                    # NO_CONN with QoS>0: paho kept it; on_disconnect hands it back to us.
                    if message.qos > 0:
                        self._inflight[info.mid] = message
                    if not message.control:
                        self._published += 1
                        if message.qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                            self._acked += 1
                    continue
                if control:
                    self._control.appendleft(message)
                else:
                    self._outbox.push_front(message)
                return

    def _sendable(self, message: OutMessage) -> bool:
        if self._max_packet is not None and message.size + _PUBLISH_OVERHEAD > self._max_packet:
            self._give_up(message, f"{message.size} bytes is over the broker's maximum packet size {self._max_packet}")
            return False
        if message.attempts >= _MAX_SEND_ATTEMPTS:
            self._give_up(
                message,
                f"it was in flight on {message.attempts} connections that all dropped "
                "(larger than the broker accepts, or forbidden by its ACL?)",
            )
            return False
        return True

    def _give_up(self, message: OutMessage, why: str) -> None:
        if message.control:
            return
        self._outbox.ack(message)  # nothing will ever take it: off the disk too
        self._undeliverable += 1
        log.error("MQTT: dropped a message to %s: %s", message.topic, why)

    def _properties(self, message: OutMessage) -> Properties | None:
        if not self._v5:
            return None
        if message.control:
            online = message.topic == self.topics.status and message.payload == b"online"
            return self._props_online if online else None
        return self._props_expiring if message.expires else self._props_plain

    @staticmethod
    def _publish_properties(expiry: int | None) -> Properties:
        props = Properties(PacketTypes.PUBLISH)
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        if expiry:
            props.MessageExpiryInterval = expiry
        return props

    def _process_acks(self) -> None:
        # caller holds _net_lock
        while self._acks:
            mid, failed, reason = self._acks.popleft()
            message = self._inflight.pop(mid, None)
            if message is None or message.control:
                continue
            self._outbox.ack(message)  # acknowledged or refused for good: either way done
            if failed:
                self._rejected += 1
                text = f"the broker rejected a message to {message.topic}: {reason}"
                self._last_error = text
                if self._rejected == 1 or self._rejected % 1000 == 0:
                    log.error("MQTT: %s (%d rejected so far; check the broker's ACL and limits)", text, self._rejected)
            else:
                self._acked += 1
                self._probing = False

    def _take_back(self, client: paho.Client) -> None:
        """Take every unacknowledged message out of paho and requeue it (caller holds _net_lock)."""
        returned = []
        for stored in client.drop_out_messages():
            message = self._inflight.pop(stored.mid, None)
            if message is None or message.control:
                continue
            returned.append(message)
        if len(returned) == 1:
            # Blame only a message that was alone on the wire (see _probing): a poison message
            # must not take its neighbours in the window down with it.
            returned[0].attempts += 1
        if returned:
            self._probing = True
            self._resent += len(returned)
            self._outbox.requeue(returned)

    def _pending(self) -> bool:
        return bool(len(self._outbox) or any(not m.control for m in list(self._inflight.values())))

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _make_client(self) -> _Client:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": cfg.effective_client_id,
            "protocol": paho.MQTTv5 if self._v5 else paho.MQTTv311,
        }
        if not self._v5:
            kwargs["clean_session"] = True
        client = _Client(**kwargs)
        client.on_log = self._on_log
        client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
        client.max_inflight_messages_set(0)  # no limit in paho: the feeder's window is the limit
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.backoff = self._backoff
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username:
            client.username_pw_set(cfg.username, self._password)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
            client.tls_insecure_set(cfg.tls_insecure)
        client.will_set(self.topics.status, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_attempt = self._on_attempt
        client.on_connect_error = self._on_connect_error
        return client

    @staticmethod
    def _on_log(client: paho.Client, userdata: Any, level: int, text: str) -> None:
        # paho logs every failed reconnect at ERROR ("Client is not connected ..."); the sink
        # reports connection trouble itself, once. Keep paho's chatter at DEBUG, except a
        # crash inside one of our callbacks, which paho would otherwise swallow.
        if text.startswith("Caught exception"):
            _paho_log.error("%s", text)
        else:
            _paho_log.debug("%s", text)

    def _on_attempt(self) -> None:
        self._attempt_reported = False

    def _on_connect_error(self, exc: BaseException) -> None:
        self._connect_failures += 1
        self._attempt_reported = True
        self._report_error(f"cannot connect to {self.config.describe()}: {exc}{_connect_hint(exc)}", logging.WARNING)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._connect_failures += 1
            self._attempt_reported = True
            if reason_code.value in _AUTH_REASONS:
                hint = " (check the MQTT username and password)"
            else:
                hint = ""
            self._report_error(f"{self.config.describe()} refused the connection: {reason_code}{hint}", logging.ERROR)
            return
        if self._closing:
            client.disconnect()
            return
        with self._net_lock:
            self._take_back(client)
            window = self.config.max_inflight
            receive_max = getattr(properties, "ReceiveMaximum", None)
            if receive_max:
                window = min(window, int(receive_max))
            self._window = window
            max_packet = getattr(properties, "MaximumPacketSize", None)
            self._max_packet = int(max_packet) if max_packet else None
            self._control.clear()
            self._control.append(self._online_message())
            if self._online_refresh_s is not None:
                self._next_online_at = time.monotonic() + self._online_refresh_s
            self._backoff.reset()
            if self.config.ha_discovery:
                docs = agent_discovery(self.config)
                for stream in list(self._stream_topics):
                    docs += stream_discovery(self.config, stream)
                docs += list(self._discovery_docs)
                for topic, doc in docs:
                    self._control.append(OutMessage(topic, encode_json(doc), 1, True, expires=False, control=True))
            self._connected = True
            self._connected_at = time.monotonic()
            self._connects += 1
            down_since, self._down_since = self._down_since, None
        self._wake.set()
        self._last_logged = None  # last_error stays: it is the most recent problem, not the current one
        if down_since is None:
            if self._connect_failures:
                log.info(
                    "MQTT connected to %s after %d failed attempt(s); %d queued message(s) to send",
                    self.config.describe(),
                    self._connect_failures,
                    len(self._outbox),
                )
            else:
                log.info("MQTT connected to %s", self.config.describe())
        else:
            # Pairs with the "lost" warning; both go quiet while the connection flaps.
            level = logging.INFO if self._flaps_unreported == 0 else logging.DEBUG
            log.log(
                level,
                "MQTT reconnected to %s after %.1f s; %d queued message(s) to send",
                self.config.describe(),
                time.monotonic() - down_since,
                len(self._outbox),
            )

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._net_lock:
            was_connected = self._connected
            self._connected = False
            self._control.clear()
            self._take_back(client)
            if was_connected:
                self._disconnects += 1
                self._down_since = time.monotonic()
        self._wake.set()
        if self._closing:
            return
        if was_connected:
            self._report_lost_connection(reason_code)
        elif not self._attempt_reported:
            self._connect_failures += 1
            if self._ssl_context is not None and self.config.tls_cert is None:
                hint = "does it require a client certificate (tls_cert, tls_key), and is it an MQTT TLS port?"
            elif self._ssl_context is not None:
                hint = "does it accept this client certificate, and is it an MQTT TLS port?"
            else:
                hint = "is it a TLS port (then set tls), and does it accept this client?"
            self._report_error(
                f"{self.config.describe()} closed the connection before accepting it ({reason_code}); {hint}",
                logging.WARNING,
            )
        self._attempt_reported = True

    def _report_lost_connection(self, reason_code: Any) -> None:
        uptime = time.monotonic() - self._connected_at
        self._short_sessions = self._short_sessions + 1 if uptime < _SHORT_SESSION_S else 0
        hint = ""
        if getattr(reason_code, "value", None) == _SESSION_TAKEN_OVER:
            hint = (
                f": another client connected with the same client id {self.config.effective_client_id!r}"
                " (is agent_id unique?)"
            )
        elif self._short_sessions >= 3:
            # Brokers do not always say "session taken over" (mosquitto 2.0 just closes the socket).
            hint = (
                f": dropped {self._short_sessions} times in a row right after connecting; another client "
                f"with the same client id {self.config.effective_client_id!r} (is agent_id unique?), "
                "or the broker refusing a message"
            )
        if hint and not self._takeover_reported:
            self._takeover_reported = True
            log.error("MQTT: %s%s", reason_code, hint)
        self._last_error = f"connection lost: {reason_code}{hint}"
        now = time.monotonic()
        if now < self._flap_quiet_until:
            self._flaps_unreported += 1
            log.debug("MQTT connection to %s lost again (%s)", self.config.describe(), reason_code)
            return
        flaps = f" ({self._flaps_unreported} more since the last report)" if self._flaps_unreported else ""
        self._flaps_unreported = 0
        self._flap_quiet_until = now + _FLAP_QUIET_S
        log.warning(
            "MQTT connection to %s lost (%s)%s%s; %d message(s) queued, reconnecting",
            self.config.describe(),
            reason_code,
            hint,
            flaps,
            len(self._outbox),
        )

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Called with paho's message lock held: only hand over, never take our locks here.
        self._acks.append((mid, bool(reason_code.is_failure), str(reason_code)))
        self._wake.set()

    # -- helpers -------------------------------------------------------------------------------

    def _report_error(self, text: str, level: int) -> None:
        self._last_error = text
        if text == self._last_logged:
            log.debug("%s (again)", text)
            return
        self._last_logged = text
        log.log(
            level,
            "MQTT: %s; retrying every %g-%g s, queueing up to %d messages meanwhile",
            text,
            self.config.reconnect_min_s,
            self.config.reconnect_max_s,
            self.config.queue_size,
        )

    @staticmethod
    def _is_published(info: paho.MQTTMessageInfo) -> bool:
        try:
            return info.is_published()
        except (RuntimeError, ValueError):
            return True  # not queued at all: nothing to wait for

    def _report_lost(self) -> None:
        if self._outbox.durable:
            if self._kept:
                log.warning(
                    "MQTT: %d message(s) not acknowledged by %s (%s) are kept in the outbox %s and will be "
                    "sent first by the next start",
                    self._kept,
                    self.config.describe(),
                    self._last_error or "broker too slow or away",
                    self.config.outbox_path,
                )
            return
        lost = len(self._outbox) + sum(1 for m in list(self._inflight.values()) if not m.control)
        if lost:
            log.warning(
                "MQTT sink closed with %d message(s) not acknowledged by %s (%s)",
                lost,
                self.config.describe(),
                self._last_error or "broker too slow or away",
            )


def from_settings(settings: SinkSettings, hooks: SinkHooks) -> MqttSink | None:
    """The MQTT sink when MQTT_HOST is set."""
    config = settings.mqtt
    return MqttSink(config) if config is not None else None
