"""Per-family CPU latency of the foundation tier's part 2, at the real models' sizes (random weights).

    python -m bench.foundation2_bench [--families depth,depth3,gaze,gaze_faces,...] [--rounds 3] [--seconds 4]

Cost depends on the shapes, not the values, so each network is built with random weights at the
size of Roboflow's default variant, saved in Roboflow's layout under bench/_out and loaded through
the family's own class:

- depth: Depth Anything v2 small (ViT-S/14 DINOv2 + DPT head, 24.8 M parameters), a 1280x720 frame
  (the processor resizes it to 518 high, keeping the aspect ratio), map upsampled and normalised.
- depth3: Depth Anything 3 small (ViT-S/14 with RoPE, QK-norm and the camera token + DualDPT's
  depth branch; edge-agent's own network), a 1280x720 frame; the processor config used here says
  504 keeping the aspect ratio (896x504: 64x36 patches).
- gaze: L2CS-Net ResNet-50 (ONNX, bins decoded in the graph), one face of 200x200 px per frame, no
  face detector (``face_detection=False`` on a face crop).
- gaze_faces: the same L2CS-Net with the built-in face finder (OpenCV's frontal-face and eye Haar
  cascades in numpy) on a 640x480 frame holding one drawn face about 250 px wide.
- trocr: trocr-small-printed's shape (DeiT-S/16 at 384, 6-layer decoder, 64,044 tokens), one line
  crop, 16 tokens generated.
- doctr: db_resnet50 + crnn_vgg16_bn (doctr's sizes), a 1280x720 page; the detection network runs
  in full but its map is replaced by a fixed 10x10 grid of word-sized regions, so every run reads
  the same 100 words whatever the random weights would find.
- easyocr: CRAFT + english_g2 (EasyOCR's sizes), a 1280x720 frame; CRAFT's scores are replaced by 20
  fixed word regions (the network still runs), each read by the recogniser.
- easyocr_zh: the same with zh_sim_g2's recogniser (6,719 classes instead of 97).
- pe: PE-Core-B16-224 (ViT-B/16 with 2-D RoPE and attention pooling, 1024-d; the 24-layer text
  tower loads but runs once per prompt set), image embedding of a 1280x720 frame.

Printed per frame, median of interleaved rounds, and each family's ratio to the YOLOv8n-sized
detector of bench/yolov8n_like.py measured in the same run (its full predict per frame).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import OUT, bench_model

FAMILIES = ("depth", "depth3", "gaze", "gaze_faces", "trocr", "pe", "doctr", "easyocr", "easyocr_zh")


def per_frame_ms(fn: Callable[[], Any], seconds: float) -> float:
    fn()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        done += 1
    return (time.perf_counter() - started) / done * 1000.0


def depth_model(settings: Any) -> Any:
    from edge_agent.models.foundation.depth import DepthAnythingModel
    from tests.depth_factory import write_checkpoint

    directory = OUT / "depth-anything-v2-small"
    if not (directory / "model.safetensors").is_file():
        write_checkpoint(directory, tiny=False)
    return DepthAnythingModel("depth-anything-v2/small", directory, settings)


def depth3_model(settings: Any) -> Any:
    from edge_agent.models.foundation.depth_v3 import DepthAnythingV3Model
    from tests.depth3_factory import checkpoint_files

    directory = OUT / "depth-anything-v3-small"
    if not (directory / "model.safetensors").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in checkpoint_files("small").items():
            (directory / name).write_bytes(data)
    return DepthAnythingV3Model("depth-anything-v3/small", directory, settings)


def gaze_model(settings: Any, face_finder: Any = None) -> Any:
    from edge_agent.models.foundation.gaze import LEGACY_FILE, GazeModel
    from tests.gaze_factory import network, onnx_bytes

    path = OUT / "gaze-l2cs" / LEGACY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(onnx_bytes(network(tiny=False)))
    return GazeModel("gaze/L2CS", path, settings, face_finder=face_finder)


def gaze_faces_model(settings: Any) -> Any:
    from edge_agent.models.foundation.haar_cascade import HaarFaceFinder

    return gaze_model(settings, HaarFaceFinder())


def trocr_model(settings: Any) -> Any:
    from edge_agent.models.foundation.trocr import TrOCRModel
    from tests.trocr_factory import write_checkpoint

    directory = OUT / "trocr-small-printed"
    if not (directory / "model.safetensors").is_file():
        write_checkpoint(directory, tiny=False)
    return TrOCRModel("trocr/trocr-small-printed", directory, settings)


def pe_model(settings: Any) -> Any:
    from edge_agent.models.foundation.perception_encoder import PerceptionEncoderModel
    from tests.pe_factory import model_pt, network

    directory = OUT / "pe-core-b16-224"
    if not (directory / "model.pt").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.pt").write_bytes(model_pt(network(tiny=False)))
    return PerceptionEncoderModel("perception_encoder/PE-Core-B16-224", directory, settings)


def doctr_model(settings: Any) -> Any:
    import torch

    from edge_agent.models.foundation.doctr import DocTRModel
    from tests.doctr_factory import crnn, dbnet, state_bytes

    directory = OUT / "doctr-dbnet-rn50"
    if not (directory / "recognition_weights.pt").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "detection_weights.pt").write_bytes(state_bytes(dbnet(tiny=False, rigged=False)))
        (directory / "recognition_weights.pt").write_bytes(state_bytes(crnn(tiny=False, rigged=None)))
    model = DocTRModel(
        "doctr/default", directory / "detection_weights.pt", directory / "recognition_weights.pt", settings
    )
    grid = torch.full((1024, 1024), -10.0)  # a fixed number of words, whatever the random weights say
    for row in range(10):
        for column in range(10):
            grid[240 + row * 40 : 256 + row * 40, column * 48 + 4 : column * 48 + 40] = 10.0  # inside the page
    original = model.det.forward
    model.det.forward = lambda images: (
        torch.sigmoid(grid.expand(images.shape[0], -1, -1)) + 0 * original(images)[:, :1, :1]
    )
    return model


def easyocr_model(settings: Any, network: str = "english_g2") -> Any:
    import torch

    from edge_agent.models.foundation.easy_ocr import EasyOCRModel
    from tests.easyocr_factory import craft, recognizer, state_bytes

    directory = OUT / f"easy-ocr-{network.replace('_', '-')}"
    if not (directory / "weights.pt").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "craft_mlt_25k.pth").write_bytes(state_bytes(craft(tiny=False, rigged=False)))
        (directory / "weights.pt").write_bytes(state_bytes(recognizer(tiny=False, rigged=None, network=network)))
    model = EasyOCRModel(
        f"easy_ocr/{network}", directory / "craft_mlt_25k.pth", directory / "weights.pt", network, settings
    )
    scores = torch.zeros(360, 640, 2)  # CRAFT's half-resolution map of a 1280x720 frame
    for row in range(5):
        for column in range(4):
            scores[40 + row * 60 : 56 + row * 60, 40 + column * 140 : 140 + column * 140, 0] = 0.9
    original = model.craft.forward
    model.craft.forward = lambda images: (
        scores.expand(images.shape[0], -1, -1, -1) + 0 * original(images)[:, :1, :1, :1]
    )
    return model


def easyocr_zh_model(settings: Any) -> Any:
    return easyocr_model(settings, "zh_sim_g2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {', '.join(FAMILIES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    chosen = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(chosen) - set(FAMILIES)
    if unknown:
        parser.error(f"--families: unknown {', '.join(sorted(unknown))}; accepted: {', '.join(FAMILIES)}")

    from edge_agent.models import get_model
    from edge_agent.models.common.settings import reload_model_settings

    settings = reload_model_settings()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    face = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    line = rng.integers(0, 255, (48, 320, 3), dtype=np.uint8)
    from tests.gaze_factory import drawn_face

    person = drawn_face((640, 480), (320, 240), 1.6)[0]
    builders: dict[str, Callable[[Any], Any]] = {
        "depth": depth_model,
        "depth3": depth3_model,
        "gaze": gaze_model,
        "gaze_faces": gaze_faces_model,
        "trocr": trocr_model,
        "pe": pe_model,
        "doctr": doctr_model,
        "easyocr": easyocr_model,
        "easyocr_zh": easyocr_zh_model,
    }
    calls: dict[str, Callable[[Any], Any]] = {
        "depth": lambda m: m.predict(frame),
        "depth3": lambda m: m.predict(frame),
        "gaze": lambda m: m.predict(face, face_detection=False),
        "gaze_faces": lambda m: m.predict(person),
        "trocr": lambda m: m.predict(line),
        "pe": lambda m: m.predict(frame),
        "doctr": lambda m: m.predict(frame),
        "easyocr": lambda m: m.predict(frame),
        "easyocr_zh": lambda m: m.predict(frame),
    }
    what = {
        "depth": "1280x720 frame",
        "depth3": "1280x720 frame",
        "gaze": "one 200x200 face",
        "gaze_faces": "640x480 frame, 1 face found",
        "trocr": "one 320x48 line, 16 tokens",
        "pe": "1280x720 frame",
        "doctr": "1280x720 page, 100 words",
        "easyocr": "1280x720 frame, 20 text boxes",
        "easyocr_zh": "1280x720 frame, 20 text boxes",
    }
    models = {}
    for family in chosen:
        started = time.perf_counter()
        models[family] = builders[family](settings)
        print(f"{family}: built and loaded in {time.perf_counter() - started:.1f} s", flush=True)
    if "gaze_faces" in models:  # the figure is for a frame with one face found: check it is
        (faces,) = models["gaze_faces"].predict(person)
        if len(faces) != 1:
            raise SystemExit(f"gaze_faces: the face finder found {len(faces)} faces in the drawn frame, not 1")
    detector = get_model(str(bench_model()))
    rows: dict[str, list[float]] = {k: [] for k in [*chosen, "detector"]}
    for _ in range(args.rounds):
        for family in chosen:
            model = models[family]
            rows[family].append(per_frame_ms(lambda model=model, family=family: calls[family](model), args.seconds))
        rows["detector"].append(per_frame_ms(lambda: detector.predict(frame), args.seconds))
    result = {k: round(statistics.median(v), 2) for k, v in rows.items()}
    for family in chosen:
        ratio = result[family] / result["detector"]
        result[f"{family}_ratio"] = round(ratio, 2)
        print(f"{family}: {result[family]:.1f} ms per {what[family]}, {ratio:.1f}x the YOLOv8n-sized detector")
    print(f"YOLOv8n-sized detector: {result['detector']:.1f} ms per 1280x720 frame (median of {args.rounds} rounds)")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
