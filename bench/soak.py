"""Soak: four streams for ten minutes, the MQTT broker killed for 30 s twice; nothing may be lost.

    python -m bench.soak                       # 10 minutes, two 30 s outages (the issue's run)
    python -m bench.soak --minutes 2 --outage 10   # a quick look

Streams: two live RTSP cameras at 30 fps (gst-rtsp-server) and two looping files played live,
640x360 synthetic scenes, the built-in detector, QoS 1 to a real mosquitto with persistence. A
subscriber with a persistent session (saved in the broker's file before each kill, QoS 0 so the
dying broker's socket closes cleanly) counts every message. The agent runs with the durable
outbox (the default) under its own STATE_DIR.

Every 10 s the bench reads the agent's /healthz and /metrics and its RSS; it prints a table
per minute (RSS, processed fps per stream, outbox size, MQTT connected) and a summary: RSS after
warm-up and at the end, messages per stream, messages lost (seq gaps after the final flush; must
be 0), duplicates (QoS 1 resends). Baseline for the fps figures: the first minute, before any
outage. All traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import OUT, agent, clip

AGENT_ID = "soak"
STREAMS = ("cam1", "cam2", "file1", "file2")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _metric(text: str, name: str, stream: str | None = None) -> float:
    want = f'{name}{{stream="{stream}"}}' if stream else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return float("nan")


def run(minutes: float, outage_s: float) -> list[str]:
    from tests.fixtures.mosquitto import Mosquitto, MqttSubscriber, free_port
    from tests.fixtures.rtsp import RtspServer

    duration = minutes * 60.0
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=OUT if OUT.exists() else None))
    live = clip("soak-live", seconds=10, fps=30, width=640, height=360, seed=3)
    files = [clip(f"soak-file{i}", seconds=8, fps=30, width=640, height=360, seed=10 + i) for i in (1, 2)]
    broker = Mosquitto(work / "mqtt", persistence=True).start()
    server = RtspServer({"cam1": live, "cam2": live}, log_path=work / "rtsp.log").start()
    sub = MqttSubscriber(broker, f"edge-agent/{AGENT_ID}/+/predictions", persistent=True, client_id="soak-keeper")
    sub.connect()
    broker.save()
    port = free_port()
    env = {
        "STREAMS": f"cam1={server.url('cam1')};cam2={server.url('cam2')};file1={files[0]};file2={files[1]}",
        "STREAM_FILE1_LOOP": "true",
        "STREAM_FILE2_LOOP": "true",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "AGENT_ID": AGENT_ID,
        "HEALTH_PORT": str(port),
        "STATE_DIR": str(work / "state"),
        "LOG_LEVEL": "INFO",
        "OFFLINE_MODE": "true",
    }
    # Outages at 30 % and 70 % of the run.
    outages = [(duration * 0.3, duration * 0.3 + outage_s), (duration * 0.7, duration * 0.7 + outage_s)]
    samples: list[dict[str, Any]] = []
    try:
        with agent(env, work / "agent") as proc:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    health = json.loads(_get(base + "/healthz"))
                    if all(health["streams"].get(s) == "streaming" for s in STREAMS):
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError(f"streams never all streaming:\n{proc.stderr()}")
            started = time.monotonic()
            down = False
            next_sample = started
            while (now := time.monotonic()) - started < duration:
                t = now - started
                in_outage = any(a <= t < b for a, b in outages)
                if in_outage and not down:
                    broker.save()  # the keeper's session survives the kill
                    broker.kill()
                    down = True
                elif not in_outage and down:
                    broker.start()
                    down = False
                if now >= next_sample:
                    metrics = _get(base + "/metrics")
                    health = json.loads(_get(base + "/healthz"))
                    samples.append(
                        {
                            "t": t,
                            "rss": _rss_mb(proc.proc.pid),
                            "processed": {
                                s: _metric(metrics, "edge_agent_stream_frames_processed_total", s) for s in STREAMS
                            },
                            "queued": health["mqtt"]["queued"],
                            "bytes": _metric(metrics, "edge_agent_mqtt_outbox_bytes"),
                            "connected": health["mqtt"]["connected"],
                            "oldest": health["mqtt"]["oldest_queued_age_s"],
                        }
                    )
                    next_sample += 10.0
                time.sleep(0.2)
            if down:
                broker.start()
            # Let the last backlog drain, then stop the agent cleanly (it flushes within SHUTDOWN_TIMEOUT).
            drain_deadline = time.monotonic() + 60
            while time.monotonic() < drain_deadline:
                health = json.loads(_get(base + "/healthz"))
                if health["mqtt"]["connected"] and health["mqtt"]["queued"] == 0:
                    break
                time.sleep(0.5)
            final_metrics = _get(base + "/metrics")
            rc = proc.terminate(30)
            stderr_tail = proc.stderr_path.read_text(errors="replace")[-3000:]
        time.sleep(2)  # the last messages reach the subscriber
    finally:
        sub.close()
        server.stop()
        broker.stop()

    seqs: dict[str, list[int]] = defaultdict(list)
    ids: set[str] = set()
    copies = 0
    for m in list(sub.messages):
        payload = m.json()
        copies += 1
        if payload["message_id"] in ids:
            continue
        ids.add(payload["message_id"])
        seqs[payload["stream"]].append(payload["seq"])
    lost = {s: len(set(range(max(v) + 1)) - set(v)) for s, v in seqs.items() if v}
    acked = _metric(final_metrics, "edge_agent_mqtt_acked_total")
    dropped = sum(
        _metric(final_metrics, f'edge_agent_mqtt_dropped_total{{cause="{c}"}}')
        for c in ("overflow", "rejected", "undeliverable", "closed")
    )

    lines = [
        f"soak: {minutes:g} min, 4 streams (2 RTSP 30 fps, 2 looping files, 640x360, builtin/shapes-v1), "
        f"broker SIGKILLed for {outage_s:g} s at {outages[0][0] / 60:.1f} and {outages[1][0] / 60:.1f} min; "
        f"agent rc {rc}",
        "",
        "| t (min) | RSS MB | "
        + " | ".join(f"{s} fps" for s in STREAMS)
        + " | outbox queued | outbox KiB | oldest s | MQTT |",
        "|---|---|" + "---|" * len(STREAMS) + "---|---|---|---|",
    ]
    previous = samples[0] if samples else None
    for sample in samples[1:]:
        # one row per minute, plus the samples taken during an outage
        in_outage = any(a <= sample["t"] < b + 10 for a, b in outages)
        if round(sample["t"]) % 60 >= 10 and not in_outage:
            continue
        assert previous is not None
        dt = sample["t"] - previous["t"]
        fps = [(sample["processed"][s] - previous["processed"][s]) / dt for s in STREAMS]
        lines.append(
            f"| {sample['t'] / 60:.1f} | {sample['rss']:.0f} | "
            + " | ".join(f"{v:.1f}" for v in fps)
            + f" | {sample['queued']} | {sample['bytes'] / 1024:.0f} | {sample['oldest'] or 0:.1f} | "
            f"{'up' if sample['connected'] else 'down'} |"
        )
        previous = sample
    warm = next((s for s in samples if s["t"] >= 60), samples[0] if samples else None)
    total = sum(len(set(v)) for v in seqs.values())
    lines += [
        "",
        f"RSS after warm-up (1 min) {warm['rss'] if warm else float('nan'):.0f} MB, at the end "
        f"{samples[-1]['rss'] if samples else float('nan'):.0f} MB; peak outbox "
        f"{max((s['queued'] for s in samples), default=0)} messages",
        f"messages: {total} unique received ({', '.join(f'{s} {len(set(v))}' for s, v in sorted(seqs.items()))}), "
        f"{copies - total} duplicates; agent acked {acked:.0f}, dropped {dropped:.0f}",
        f"messages lost (seq gaps): {sum(lost.values())} ({', '.join(f'{s} {n}' for s, n in sorted(lost.items()))})",
    ]
    if rc != 0:
        lines.append("agent stderr tail:\n" + stderr_tail)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker stays dead, twice")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = run(args.minutes, args.outage)
    text = "\n".join(lines)
    print(text, flush=True)
    (OUT / "soak.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
