"""What the live view costs: nothing without a viewer, one encode stream however many viewers.

    python -m bench.live_view_bench [--seconds 6] [--rounds 3]

1. In process: what an unwatched live view adds to the result router per result (nothing drawn,
   no frame kept), and one 720p picture drawn + encoded.
2. A real agent (a looping 1280x720 30 fps clip, a constant detector so the model costs ~nothing
   and the viewers' share is visible) with 0, 1 and 2 MJPEG viewers in interleaved rounds: agent
   CPU (user + system seconds per second, from /proc), pictures encoded per second (from
   /metrics), pictures each viewer received. Ratios are against the no-viewer phases of the
   same run.
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
import timeit
from pathlib import Path

import numpy as np
import psutil

from bench.common import OUT, agent, clip, median
from edge_agent.models.maths.predictions import Detections
from edge_agent.pipelines.annotate import render_jpeg
from edge_agent.pipelines.frames import Frame
from edge_agent.pipelines.live import LiveView, LiveViewOptions
from edge_agent.pipelines.results import InferenceResult, ResultRouter

CAP_FPS = 5.0


def _first_frame(video: Path) -> np.ndarray:
    import av

    with av.open(str(video)) as container:
        for decoded in container.decode(video=0):
            return decoded.to_ndarray(format="bgr24")
    raise RuntimeError(f"{video} has no frame")


def in_process(video: Path) -> list[str]:
    image = _first_frame(video)
    height, width = image.shape[:2]
    boxes = np.array([[100 + 60 * i, 100, 220 + 60 * i, 260] for i in range(10)], np.float64)
    prediction = Detections(boxes, np.full(10, 0.9, np.float32), np.arange(10) % 3, ("a", "b", "c"), (width, height))
    frame = Frame("cam", 0, time.time(), None, image, time.monotonic())
    result = InferenceResult(frame, prediction, "m", 1.0, 1.0, 1)

    live = LiveView(LiveViewOptions())
    holder = live.track("cam")
    n = 100_000
    t_update = min(timeit.repeat(lambda: live.update("cam", "m", frame, prediction), number=n, repeat=5)) / n * 1e6
    plain = ResultRouter("bench", [])
    t_router = min(timeit.repeat(lambda: plain(result), number=5000, repeat=5)) / 5000 * 1e6
    render_ms = min(timeit.repeat(lambda: render_jpeg(image, prediction, None, 80), number=20, repeat=3)) / 20 * 1e3
    return [
        f"1. no viewer: the live view adds {t_update:.2f} us per result (LiveView.update) to the router's "
        f"{t_router:.1f} us ({t_update / t_router * 100:.1f}%); pictures drawn: {live.encodes()['cam']}, "
        f"frames kept: {int(holder.holds_frame)}",
        f"   one {width}x{height} clip frame with 10 boxes drawn + encoded (JPEG q80): {render_ms:.1f} ms "
        f"-> at LIVE_VIEW_MAX_FPS={CAP_FPS:g} about {render_ms * CAP_FPS / 10:.1f}% of a core per watched stream",
    ]


def _constant_model(directory: Path) -> Path:
    from tests.live_agent import known_objects_model

    return known_objects_model(directory)


def _encoded(base: str) -> float:
    from tests.live_agent import sample, scrape

    return sample(scrape(base), "edge_agent_live_view_pictures_encoded_total", stream="cam")


def _watch(port: int, seconds: float, rates: list[float]) -> threading.Thread:
    from tests.http_client import MjpegReader

    def run() -> None:
        reader = MjpegReader("127.0.0.1", port, "/streams/cam/live.mjpg")
        try:
            # The first part is the picture already made when the viewer came: time from the second.
            parts = reader.read_for(seconds)[1:]
            if len(parts) > 2:
                rates.append((len(parts) - 1) / (parts[-1].arrived - parts[0].arrived))
        finally:
            reader.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def with_agent(video: Path, seconds: float, rounds: int) -> list[str]:
    from tests.fixtures.mosquitto import free_port
    from tests.live_agent import wait_for_picture

    model = _constant_model(OUT / "live-view-model")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "STREAMS": f"cam={video}",
        "STREAM_CAM_LOOP": "true",
        "MODEL_ID": str(model),
        "HEALTH_PORT": str(port),
        "STDOUT_SINK": "false",
        "LIVE_VIEW_MAX_FPS": str(CAP_FPS),
    }
    cpu: dict[int, list[float]] = {0: [], 1: [], 2: []}
    rate: dict[int, list[float]] = {0: [], 1: [], 2: []}
    received: dict[int, list[float]] = {1: [], 2: []}
    with agent(env, OUT / "live-view") as proc:
        wait_for_picture(base, "cam")
        process = psutil.Process(proc.proc.pid)
        time.sleep(2.0)  # warm-up
        for _ in range(rounds):
            for viewers in (0, 1, 2):
                rates: list[float] = []
                threads = [_watch(port, seconds + 0.5, rates) for _ in range(viewers)]
                time.sleep(0.5)  # viewers connected before the window opens
                before_cpu, before_enc, t0 = sum(process.cpu_times()[:2]), _encoded(base), time.monotonic()
                time.sleep(seconds)
                after_cpu, after_enc, t1 = sum(process.cpu_times()[:2]), _encoded(base), time.monotonic()
                for thread in threads:
                    thread.join(seconds + 10)
                cpu[viewers].append((after_cpu - before_cpu) / (t1 - t0))
                rate[viewers].append((after_enc - before_enc) / (t1 - t0))
                if viewers:
                    received[viewers].append(median(rates))
                time.sleep(1.0)  # let viewers' slots go before the next phase
        proc.terminate(30)
    base_cpu = median(cpu[0])
    lines = [
        f"2. agent, 1280x720 30 fps clip, LIVE_VIEW_MAX_FPS={CAP_FPS:g}, {rounds} rounds x {seconds:g} s per phase "
        "(medians):",
        "   viewers | agent CPU (cores) | vs none | pictures encoded/s | pictures/s each viewer got",
    ]
    for viewers in (0, 1, 2):
        got = f"{median(received[viewers]):.2f}" if viewers else "-"
        lines.append(
            f"   {viewers:7d} | {median(cpu[viewers]):17.3f} | {median(cpu[viewers]) / base_cpu:6.2f}x "
            f"| {median(rate[viewers]):18.2f} | {got}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three phases")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores")
    video = clip("live", seconds=6)
    for line in in_process(video):
        print(line)
    for line in with_agent(video, args.seconds, args.rounds):
        print(line)


if __name__ == "__main__":
    main()
