"""Cameras per box: how many 1080p H.264 RTSP streams the agent sustains, DECODE=keyframes vs all.

    python -m bench.keyframes_bench                          # the full figures (~15 min, quiet box)
    python -m bench.keyframes_bench --keyframes 2 4 --all 1 2 --window 12 --skip-decoders   # a smoke run

1. decoders  (PyAV alone, no agent) one 1080p 30 fps GOP 2 s clip decoded by N threads at once:
             CPU per second of video in ``all`` and ``keyframes`` (the baseline: their ratio), and
             FFmpeg's default decoder threads (one per core, each decoder) against the budget the
             agent uses (``sources.decoding.decoder_thread_budget``): threads, RSS, CPU.
2. agent     ``edge-agent run`` with the built-in detector (builtin/shapes-v1) on N streams of one
             RTSP server on 127.0.0.1 (the clip above, looped; ``--server-media shared``, the
             default: every RTSP session is served from one media, as a camera serves its viewers
             from one encoder, so the server's own CPU stays small; ``per-client``: each session its
             own media from frame 0, which costs the server ~1% of a core per session), for
             N in ``--keyframes`` (DECODE=keyframes) and ``--all`` (DECODE=all, MAX_FPS=0.5, the
             same result rate) until the first N that fails. A count passes when, over
             ``--window`` seconds, every stream delivers >= 95% of its keyframes (one per 2 s) as
             results and the p95 age of a frame when its result is handed to the sinks
             (``latency_ms``: capture -> sink) stays under one keyframe interval plus one
             inference (p50). Reported per count: agent CPU per stream, peak RSS and RSS per
             stream (marginal over the smallest count), threads, the server's own CPU, and where
             missing results went (from the agent's /metrics: keyframes decoded in the window, and
             frames replaced in their slot before the model took them). Every session's
             keyframes arrive at the same instant (one clip, sessions started together): a burst
             of N keyframes every 2 s, harder than cameras whose GOPs are not aligned.

The ratio printed at the end is largest N (keyframes) / largest N (all at 0.5 fps), both measured
in this run. Everything stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import threading
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench.common import OUT, agent, peak_rss_mb, percentile

GOP_S = 2.0
FPS = 30
WIDTH, HEIGHT = 1920, 1080
CLIP_SECONDS = 6.0  # three GOPs, looped by the server
CLIP_CRF = 20
# Fresh sensor-like noise in every frame: without it P-frames are nearly free (~1 KB) and the clip
# is nothing like a camera's. With it and the VBV cap below: ~4-5 Mbit/s, keyframes ~150 KB and
# P-frames ~18 KB, what 1080p cameras send.
CLIP_NOISE_SIGMA = 6.0
RESULT_SHARE = 0.95
TICKS = os.sysconf("SC_CLK_TCK")


def gop_clip() -> Path:
    """A 1080p30 H.264 clip with a keyframe every 2 s (camera-like), made once."""
    import av
    import numpy as np

    from tools.synthworld import Scene

    path = OUT / f"gop2s-{WIDTH}x{HEIGHT}-{FPS}fps-{CLIP_SECONDS:g}s-crf{CLIP_CRF}-noise{CLIP_NOISE_SIGMA:g}.mp4"
    if path.is_file():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    scene = Scene(np.random.default_rng(7), WIDTH, HEIGHT, n_objects=6, noise_sigma=2.0)
    noise = np.random.default_rng(1)
    gop = int(GOP_S * FPS)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.codec_context.gop_size = gop
        # a camera's stream: fixed GOP, no scene-cut keyframes, no B-frames, ~4 Mbit/s
        stream.codec_context.options = {
            "preset": "veryfast",
            "bf": "0",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:vbv-maxrate=4000:vbv-bufsize=8000",
            "crf": str(CLIP_CRF),
        }
        for i in range(round(CLIP_SECONDS * FPS)):
            if i:
                scene.step()
            img, _ = scene.render()
            grain = noise.normal(0.0, CLIP_NOISE_SIGMA, img.shape).astype(np.int16)
            img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(path)
    return path


# -- /proc readings ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


# -- 1. decoders alone -------------------------------------------------------------------------


def _decode(path: Path, keyframes: bool, threads: int, seconds_of_video: float, out: list[int]) -> None:
    import av

    from edge_agent.pipelines.frames import to_bgr

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = threads
        if keyframes:
            stream.codec_context.skip_frame = "NONKEY"
        decoded = 0
        loops = 0
        while loops * CLIP_SECONDS < seconds_of_video:
            container.seek(0)
            for frame in container.decode(stream):
                to_bgr(frame)  # the agent converts what it hands on, the same way
                decoded += 1
            loops += 1
        out.append(decoded)


def _variant(path: str, streams: int, keyframes: bool, threads: int, seconds_of_video: float) -> dict[str, float]:
    """One decoder variant in a fresh process (so no run inherits another's freed memory)."""
    import av  # noqa: F401 - loaded before the baseline is read

    pid = os.getpid()
    rss0 = status_field(pid, "VmRSS") / 1024
    threads0 = status_field(pid, "Threads")
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    outs: list[list[int]] = [[] for _ in range(streams)]
    workers = [
        threading.Thread(target=_decode, args=(Path(path), keyframes, threads, seconds_of_video, outs[i]))
        for i in range(streams)
    ]
    peak_threads, peak_rss = 0, rss0
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        peak_threads = max(peak_threads, status_field(pid, "Threads"))
        peak_rss = max(peak_rss, status_field(pid, "VmRSS") / 1024)
        time.sleep(0.02)
    return {
        "cpu": cpu_seconds(pid) - cpu0,
        "wall": time.monotonic() - wall0,
        "frames": sum(o[0] for o in outs),
        "threads": peak_threads - threads0,
        "rss": max(peak_rss, status_field(pid, "VmHWM") / 1024) - rss0,
    }


def decoders(path: Path, streams: int, seconds_of_video: float = 12.0) -> list[str]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from edge_agent.pipelines.sources.decoding import decoder_thread_budget

    cores = len(os.sched_getaffinity(0))
    lines = [f"1. decoders alone: {streams} x {WIDTH}x{HEIGHT} {FPS} fps H.264, GOP {GOP_S:g} s, on {cores} cores"]
    budget = decoder_thread_budget(streams, cores)
    variants = {
        "all, FFmpeg default threads (0)": (False, 0),
        f"all, budget ({budget} per decoder)": (False, budget),
        "keyframes, budget (1)": (True, 1),
    }
    results: dict[str, dict[str, float]] = {}
    for label, (keyframes, threads) in variants.items():
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            r = pool.submit(_variant, str(path), streams, keyframes, threads, seconds_of_video).result(timeout=600)
        results[label] = r
        lines.append(
            f"   {label}: {r['cpu'] / (streams * seconds_of_video):.3f} CPU s per second of video per stream, "
            f"{1000 * r['cpu'] / r['frames']:.2f} ms per decoded frame, wall {r['wall']:.1f} s, "
            f"+{r['threads']:.0f} threads, peak RSS +{r['rss']:.0f} MB ({r['rss'] / streams:.1f} MB per decoder)"
        )
    default, shared, keyframes_only = (results[label] for label in variants)
    lines.append(
        f"   keyframes / all (budget): {shared['cpu'] / keyframes_only['cpu']:.1f}x less CPU; "
        f"budget / FFmpeg default threads: CPU {shared['cpu'] / default['cpu']:.2f}x, "
        f"threads +{shared['threads']:.0f} vs +{default['threads']:.0f}, "
        f"RSS {shared['rss'] / streams:.1f} vs {default['rss'] / streams:.1f} MB per decoder"
    )
    return lines


# -- 2. the agent ------------------------------------------------------------------------------


def stream_counters(port: int) -> dict[str, float]:
    """Sums over the streams of the agent's decoded and slot-replaced frame counters."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    sums = {"decoded": 0.0, "replaced": 0.0}
    for line in text.splitlines():
        if line.startswith("edge_agent_stream_frames_decoded_total{"):
            sums["decoded"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("edge_agent_stream_frames_dropped_total{") and 'reason="replaced"' in line:
            sums["replaced"] += float(line.rsplit(" ", 1)[1])
    return sums


def trial(
    server: Any, n: int, mode: str, window: float, settle: float, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    from tests.fixtures.mosquitto import free_port

    names = [f"s{i}" for i in range(n)]
    port = free_port()
    env = {
        "STREAMS": ";".join(f"{name}={server.url('cam')}" for name in names),
        "STDOUT_SINK": "true",
        "LOG_LEVEL": "WARNING",
        "HEALTH_PORT": str(port),
        **(extra or {}),
    }
    for name in names:
        env[f"STREAM_{name.upper()}_DECODE"] = mode
        if mode == "all":
            env[f"STREAM_{name.upper()}_MAX_FPS"] = str(1.0 / GOP_S)
    workdir = OUT / f"keyframes-{mode}-{n}"
    with agent(env, workdir) as proc:
        pid = proc.proc.pid
        deadline = time.monotonic() + 60 + n
        while time.monotonic() < deadline:
            if len({p["stream"] for p in proc.predictions()}) == n:
                break
            if proc.proc.poll() is not None:
                raise RuntimeError(f"the agent exited:\n{proc.stderr()}")
            time.sleep(0.2)
        else:
            started = len({p["stream"] for p in proc.predictions()})
            proc.terminate(30)
            return {"n": n, "ok": False, "why": f"only {started}/{n} streams produced within {60 + n} s"}
        time.sleep(settle)
        counters0 = stream_counters(port)
        t0 = time.time()
        cpu0, server0 = cpu_seconds(pid), cpu_seconds(server.pid)
        threads = 0
        end = time.monotonic() + window
        while time.monotonic() < end:
            threads = max(threads, status_field(pid, "Threads"))
            time.sleep(0.5)
        t1 = time.time()
        cpu = cpu_seconds(pid) - cpu0
        server_cpu = cpu_seconds(server.pid) - server0
        counters1 = stream_counters(port)
        rss_now = status_field(pid, "VmRSS") / 1024
        peak = peak_rss_mb(pid)
        time.sleep(4.0)  # results of frames taken inside the window
        messages = proc.predictions()
        proc.terminate(60)
    times: dict[str, list[float]] = defaultdict(list)
    latency, inference, taken = [], [], []
    for m in messages:
        if t0 <= m["frame_time"] < t1:
            times[m["stream"]].append(m["frame_time"])
            latency.append(m["latency_ms"])
            inference.append(m["inference_ms"])
            taken.append(m["frame_age_ms"])
    shares = [result_share(sorted(times.get(name, [])), t0, t1) for name in names]
    p95 = percentile(latency, 95)
    infer = percentile(inference, 50)
    bound = GOP_S * 1000 + infer
    ok = min(shares) >= RESULT_SHARE and p95 < bound
    return {
        "n": n,
        "ok": ok,
        "why": "" if ok else f"min share {min(shares):.2f} (>= {RESULT_SHARE}), p95 age {p95:.0f} ms (< {bound:.0f})",
        "min_share": min(shares),
        "p95_ms": p95,
        "p95_taken_ms": percentile(taken, 95),
        "inference_ms": infer,
        "cpu_cores": cpu / (t1 - t0),
        "server_cores": server_cpu / (t1 - t0),
        "peak_rss_mb": peak,
        "rss_mb": rss_now,
        "threads": threads,
        "decoded": counters1["decoded"] - counters0["decoded"],
        "replaced": counters1["replaced"] - counters0["replaced"],
        "sent": n * (t1 - t0) / GOP_S if mode == "keyframes" else n * (t1 - t0) * FPS,
    }


def result_share(times: list[float], t0: float, t1: float) -> float:
    """Keyframes delivered as results / keyframes sent, from one stream's result frame times.

    A keyframe lost shows as a gap of two GOPs between results (``round(gap / GOP) - 1`` lost per
    gap), which jitter cannot fake; counting results against ``window / GOP`` instead would call
    a keyframe that jitters across the window's edge a loss. At each edge of the window up to one
    lost keyframe cannot be told from the phase of the stream's GOP and is not counted.
    """
    if not times:
        return 0.0
    lost = sum(max(0, round((b - a) / GOP_S) - 1) for a, b in itertools.pairwise(times))
    lost += max(0, math.floor((times[0] - t0) / GOP_S - 0.5)) + max(0, math.floor((t1 - times[-1]) / GOP_S - 0.5))
    return len(times) / (len(times) + lost)


def ladder(
    server: Any, mode: str, counts: list[int], window: float, settle: float, extra: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    best, rows, first = 0, [], None
    for n in counts:
        r = trial(server, n, mode, window, settle, extra)
        if "min_share" in r:
            if first is None:
                first = r
            marginal = (r["peak_rss_mb"] - first["peak_rss_mb"]) / (n - first["n"]) if n > first["n"] else float("nan")
            rows.append(
                f"   {n:4d} streams: {'PASS' if r['ok'] else 'FAIL'}  min results/keyframes {r['min_share']:.2f}, "
                f"p95 age {r['p95_ms']:.0f} ms (when the model took it {r['p95_taken_ms']:.0f}), "
                f"inference p50 {r['inference_ms']:.1f} ms; agent "
                f"{r['cpu_cores']:.2f} cores = {100 * r['cpu_cores'] / n:.1f}% of a core per stream; peak RSS "
                f"{r['peak_rss_mb']:.0f} MB (per stream over {first['n']}: {marginal:.1f} MB); "
                f"{r['threads']} threads; RTSP server {r['server_cores']:.2f} cores; frames decoded "
                f"{r['decoded']:.0f} (of ~{r['sent']:.0f} {'keyframes ' if mode == 'keyframes' else ''}sent), "
                f"replaced in the slot {r['replaced']:.0f}" + ("" if r["ok"] else f"  [{r['why']}]")
            )
        else:
            rows.append(f"   {n:4d} streams: FAIL [{r['why']}]")
        print(rows[-1], flush=True)
        if not r["ok"]:
            break
        best = n
    return best, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keyframes", type=int, nargs="*", default=[16, 32, 48, 64, 80, 96, 128])
    parser.add_argument("--all", type=int, nargs="*", default=[2, 4, 6, 8, 10, 12, 16], dest="all_counts")
    parser.add_argument("--window", type=float, default=40.0, help="seconds measured per count")
    parser.add_argument(
        "--agent-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="agent settings for both ladders, e.g. MODEL_PRECISION=int8 (repeatable)",
    )
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after every stream produced")
    parser.add_argument(
        "--server-media",
        choices=("shared", "per-client"),
        default="shared",
        help="shared: all RTSP sessions served from one media (a camera's encoder); per-client: one each",
    )
    parser.add_argument("--decoder-streams", type=int, default=8)
    parser.add_argument("--skip-decoders", action="store_true")
    parser.add_argument(
        "--agent-cpus",
        type=_cpus,
        help="run the agent (and the decoders section) on these CPUs only, e.g. 0,1 (a 2-core box "
        "on a bigger one); default: all",
    )
    parser.add_argument("--server-cpus", type=_cpus, help="run the RTSP server on these CPUs, e.g. 2-7")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.agent_env)
    from tests.fixtures.rtsp import RtspServer

    clip = gop_clip()
    everything = os.sched_getaffinity(0)
    report = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores; agent on CPUs "
        f"{_show(args.agent_cpus or everything)}, RTSP server on {_show(args.server_cpus or everything)}; "
        f"clip {clip.name} ({clip.stat().st_size * 8 / CLIP_SECONDS / 1e6:.1f} Mbit/s), server media "
        f"{args.server_media}"
    ]
    print(report[0], flush=True)
    # children inherit this process's CPUs: the server is started on its own, then the agents
    os.sched_setaffinity(0, args.server_cpus or everything)
    server = RtspServer(
        {"cam": clip}, log_path=OUT / "keyframes-rtsp.log", shared=args.server_media == "shared"
    ).start()
    os.sched_setaffinity(0, args.agent_cpus or everything)
    try:
        if not args.skip_decoders:
            lines = decoders(clip, args.decoder_streams)
            print("\n".join(lines), flush=True)
            report += lines
        header = "2. agent, built-in detector, DECODE=keyframes:"
        print(header, flush=True)
        best_key, rows_key = ladder(server, "keyframes", args.keyframes, args.window, args.settle, extra)
        header_all = f"   DECODE=all, MAX_FPS={1 / GOP_S:g}:"
        print(header_all, flush=True)
        best_all, rows_all = ladder(server, "all", args.all_counts, args.window, args.settle, extra)
    finally:
        server.stop()
    report += [header, *rows_key, header_all, *rows_all]
    ratio = best_key / best_all if best_all else float("nan")
    report.append(
        f"   largest count sustained: keyframes {best_key}, all at {1 / GOP_S:g} fps {best_all} -> {ratio:.1f}x "
        f"(ladders: {args.keyframes} / {args.all_counts}; a count at the top of its ladder may not be the limit)"
    )
    print(report[-1], flush=True)
    (OUT / "keyframes_bench.txt").write_text("\n".join(report) + "\n")


def _cpus(text: str) -> set[int]:
    """``0,1`` or ``2-7`` or ``0,2-3`` -> a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _show(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


if __name__ == "__main__":
    main()
