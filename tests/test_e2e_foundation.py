"""End to end with a real mosquitto: a TorchScript package on the torch engine, CLIP as a stream
task (zero-shot against each stream's own prompts, embeddings without prompts) and PP-OCR on a
stream's region of interest, in one agent.

The TorchScript model returns one known candidate set whatever the frame (boxes computed by hand);
the CLIP model is CLIP-shaped (tests/clip_factory) and its text table makes a red frame's best
prompt the red one, so each stream's messages must name its own colour.
"""

from __future__ import annotations

import json
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.clip_factory import colour_tokens, text_table, textual_model, visual_model
from tests.fixtures.model_server import onnx_package, torchscript_package
from tests.ocr_factory import det_files, rec_files, text_frame
from tools.synthworld import write_clip

torch = pytest.importorskip("torch")

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())
AGENT = "foundation"
FRAMES = 10
OCR_FRAMES = 3


def _clip_of(path: Path, images: list[np.ndarray]) -> Path:
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 10)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _colour_clip(path: Path, bgr: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng(1)
    noise = [rng.integers(-10, 10, (240, 320, 3)) for _ in range(FRAMES)]
    return _clip_of(path, [np.clip(np.array(bgr, np.int16) + n, 0, 255).astype(np.uint8) for n in noise])


class _Constant(torch.nn.Module):
    def __init__(self, prediction: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("prediction", torch.from_numpy(prediction)[None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prediction.expand(images.shape[0], -1, -1) + images.mean() * 0


def _torchscript_constant(tmp_path: Path) -> bytes:
    prediction = np.zeros((6, 2), np.float32)
    prediction[:, 0] = (100, 100, 20, 40, 0.9, 0.0)
    prediction[:, 1] = (101, 100, 20, 40, 0.8, 0.0)  # suppressed by NMS
    path = tmp_path / "constant.torchscript"
    torch.jit.trace(_Constant(prediction).eval(), torch.zeros(1, 3, 320, 320)).save(str(path))
    return path.read_bytes()


@pytest.mark.slow
def test_torch_engine_and_clip_stream_task_to_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    config = {
        "network_input": {
            "training_input_size": {"height": 320, "width": 320},
            "resize_mode": "stretch",
            "color_mode": "rgb",
            "scaling_factor": 255,
            "dynamic_spatial_size_supported": False,
        }
    }
    files = {
        "weights.torchscript": _torchscript_constant(tmp_path),
        "class_names.txt": b"a\nb\n",
        "inference_config.json": json.dumps(config).encode(),
    }
    model_server.add_package_model("tiny/1", [torchscript_package("script1", files)])
    model_server.add_core_model(
        "clip",
        "ViT-B-16",
        {"visual.onnx": visual_model(64), "textual.onnx": textual_model(text_table(colour_tokens()))},
    )
    model_server.add_package_model("pp-ocrv6-det/small", [onnx_package("det1", det_files())], "pp-ocrv6-det")
    model_server.add_package_model("pp-ocrv6-rec/small", [onnx_package("rec1", rec_files())], "pp-ocrv6-rec")
    sign = text_frame([("TRUCK 2024", (40, 150), 2.0), ("edge agent ocr", (40, 320), 1.6)])
    signs = _clip_of(tmp_path / "sign.mp4", [sign] * OCR_FRAMES)
    shapes = tmp_path / "shapes.mp4"
    write_clip(shapes, seconds=1, width=640, height=480, seed=3, max_speed=0.0)
    red, blue = _colour_clip(tmp_path / "red.mp4", (0, 0, 230)), _colour_clip(tmp_path / "blue.mp4", (230, 0, 0))
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "clip/ViT-B-16",
        "SHUTDOWN_TIMEOUT": "60",  # a loaded CI box still flushes every message before the agent exits
        "STREAMS": f"det={shapes};red={red};blue={blue};plain={red};sign={signs}",
        "STREAM_SIGN_MODEL_ID": "pp_ocr",
        "STREAM_SIGN_ROI": "0,0,640,240",
        "STREAM_DET_MODEL_ID": "tiny/1",
        "STREAM_RED_PROMPTS": "a red thing|a green thing|a blue thing",
        "STREAM_BLUE_PROMPTS": '["a blue thing", "a red thing"]',
    }
    for name in ("DET", "RED", "BLUE", "PLAIN", "SIGN"):
        env[f"STREAM_{name}_MODE"] = "every"
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        log = agent.stderr_path.read_text(errors="replace")
        assert rc == 0, log[-4000:]
    assert "model tiny/1: package script1 (torch-script" in log  # the package choice is logged
    expected = 30 + 3 * FRAMES + OCR_FRAMES
    assert sub.wait_for(lambda msgs: len({m.json()["message_id"] for m in msgs}) >= expected, timeout=30)
    got: dict[str, dict[int, dict]] = defaultdict(dict)
    for message in sub.messages:
        payload = message.json()
        jsonschema.validate(payload, SCHEMA)
        got[payload["stream"]][payload["frame_id"]] = payload
    counts = {k: len(v) for k, v in got.items()}
    assert counts == {"det": 30, "red": FRAMES, "blue": FRAMES, "plain": FRAMES, "sign": OCR_FRAMES}
    for m in got["det"].values():
        (p,) = m["predictions"]  # box (90, 80, 110, 120) in 320x320 input, stretched back to 640x480
        assert (p["class"], p["x"], p["y"], p["width"], p["height"]) == ("a", 200.0, 150.0, 40.0, 60.0)
        assert p["confidence"] == pytest.approx(0.9)
    for m in got["red"].values():
        assert m["top"] == "a red thing" and next(p["class"] for p in m["predictions"]) == "a red thing"
        assert len(m["similarity"]) == 3 and sum(p["confidence"] for p in m["predictions"]) == pytest.approx(
            1, abs=1e-5
        )
    for m in got["blue"].values():
        assert m["top"] == "a blue thing" and sorted(p["class"] for p in m["predictions"]) == [
            "a blue thing",
            "a red thing",
        ]
        assert m["predictions"][0]["class_id"] == 0  # index in this stream's own prompt list
    for m in got["sign"].values():  # only the region of interest is read
        assert m["result"] == "TRUCK 2024" and [p["class"] for p in m["predictions"]] == ["TRUCK 2024"]
    for m in got["plain"].values():
        assert "predictions" not in m and len(m["embeddings"]) == 1 and len(m["embeddings"][0]) == 15
