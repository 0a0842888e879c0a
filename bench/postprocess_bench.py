"""Post-processing cost per frame for every detector layout, at its usual candidate count.

    python -m bench.postprocess_bench

Per layout: decode + NMS (where the layout needs it) + mapping to source pixels + the Roboflow JSON
of the result, on outputs shaped like a real 640x640 COCO model's (80 classes): 8400 candidates for
YOLOv8/YOLO-NAS, 25200 for YOLOv5, 300 rows for YOLOv10/YOLO26, 300 queries x 91 logits for RF-DETR.
The scores are mostly background noise with 30 objects, each seen by ~20 candidates, so NMS has real
work. Printed as ms per frame and as a share of one ``session.run`` of the YOLOv8n-sized bench model
measured in the same run (what the post-processing costs next to the network).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edge_agent.models.maths.coordinates import boxes_to_source
from edge_agent.models.maths.nms import non_max_suppression
from edge_agent.models.maths.predictions import Detections
from edge_agent.models.maths.preprocessing import ImageMeta
from edge_agent.models.tasks.decoders import (
    DetectionDecoder,
    EndToEndDecoder,
    RFDETRDecoder,
    YOLONASDecoder,
    YOLOv5Decoder,
    YOLOv8Decoder,
)
from edge_agent.models.tasks.params import DetectionParams

CLASSES = tuple(f"class{i}" for i in range(80))
SIZE = 640
META = ImageMeta(width=1280, height=720, crop=(0, 0, 1280, 720), scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=140)
PARAMS = DetectionParams(
    confidence=0.4, iou_threshold=0.3, max_detections=300, max_candidates=3000, class_agnostic_nms=False
)


def _scene(rng: np.random.Generator, n: int, objects: int = 30, per_object: int = 20) -> tuple[np.ndarray, ...]:
    """cx, cy, w, h (pixels), best class, best score for ``n`` candidates; most of them background."""
    cx, cy = rng.uniform(0, SIZE, n), rng.uniform(140, SIZE - 140, n)
    w, h = rng.uniform(8, 200, n), rng.uniform(8, 200, n)
    cls = rng.integers(0, len(CLASSES), n)
    score = rng.uniform(0, 0.05, n)
    for k in range(objects):
        idx = rng.choice(n, per_object, replace=False)
        centre = rng.uniform(100, SIZE - 100, 2)
        cx[idx], cy[idx] = centre[0] + rng.normal(0, 3, per_object), centre[1] + rng.normal(0, 3, per_object)
        w[idx], h[idx] = 60 + rng.normal(0, 3, per_object), 80 + rng.normal(0, 3, per_object)
        cls[idx] = k % len(CLASSES)
        score[idx] = rng.uniform(0.5, 0.95, per_object)
    return cx, cy, w, h, cls, score


def _class_scores(rng: np.random.Generator, cls: np.ndarray, score: np.ndarray) -> np.ndarray:
    scores = rng.uniform(0, 0.02, (cls.size, len(CLASSES))).astype(np.float32)
    scores[np.arange(cls.size), cls] = score
    return scores


def layouts(rng: np.random.Generator) -> dict[str, tuple[DetectionDecoder, list[np.ndarray]]]:
    input_size = (SIZE, SIZE)
    cx, cy, w, h, cls, score = _scene(rng, 8400)
    v8 = np.concatenate([np.stack([cx, cy, w, h]), _class_scores(rng, cls, score).T]).astype(np.float32)[None]
    cx5, cy5, w5, h5, cls5, score5 = _scene(rng, 25200)
    v5 = np.concatenate(
        [np.stack([cx5, cy5, w5, h5, score5], axis=1), _class_scores(rng, cls5, np.full(cls5.size, 0.9))], axis=1
    ).astype(np.float32)[None]
    e2e = np.zeros((1, 300, 6), np.float32)
    e2e[0, :, :4] = np.stack(
        [cx[:300] - w[:300] / 2, cy[:300] - h[:300] / 2, cx[:300] + w[:300] / 2, cy[:300] + h[:300] / 2], axis=1
    )
    e2e[0, :, 4] = np.sort(score)[::-1][:300]
    e2e[0, :, 5] = cls[:300]
    nas_boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)[None]
    nas_scores = _class_scores(rng, cls, score)[None]
    detr_boxes = (np.stack([cx[:300], cy[:300], w[:300], h[:300]], axis=1) / SIZE).astype(np.float32)[None]
    detr_logits = rng.normal(-6, 1, (1, 300, 91)).astype(np.float32)
    detr_logits[0, np.arange(30), rng.integers(0, 80, 30)] = 2.0
    return {
        "YOLOv8 (1, 84, 8400)": (YOLOv8Decoder(80, input_size), [v8]),
        "YOLOv5 (1, 25200, 85)": (YOLOv5Decoder(80, input_size), [v5]),
        "YOLOv10/YOLO26 (1, 300, 6)": (EndToEndDecoder(80, input_size), [e2e]),
        "YOLO-NAS (1, 8400, 4) + (1, 8400, 80)": (YOLONASDecoder(80, input_size), [nas_boxes, nas_scores]),
        "RF-DETR (1, 300, 4) + (1, 300, 91)": (RFDETRDecoder(91, input_size), [detr_boxes, detr_logits]),
    }


def postprocess(decoder: DetectionDecoder, outputs: list[np.ndarray]) -> int:
    """What the detection task does per image after the network (ObjectDetectionModel.candidates/finish)."""
    raw = decoder.decode(outputs, 0, PARAMS)
    if decoder.needs_nms and len(raw):
        keep = non_max_suppression(raw.boxes, raw.scores, raw.class_ids, PARAMS.iou_threshold, PARAMS.max_detections)
        raw = raw.select(keep)
    det = Detections(boxes_to_source(raw.boxes, META), raw.scores, raw.class_ids, CLASSES, (META.width, META.height))
    return len(det.to_response()["predictions"])


def time_ms(fn: Callable[[], object], rounds: int = 200) -> float:
    for _ in range(5):
        fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.median(samples))


def main() -> None:
    import onnxruntime as ort

    from bench.common import bench_model

    session = ort.InferenceSession(str(bench_model() / "weights.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    network_ms = time_ms(lambda: session.run(None, {"images": x}), rounds=20)
    rng = np.random.default_rng(42)
    print(f"session.run of the YOLOv8n-sized bench model: {network_ms:.1f} ms (median of 20)")
    print("| layout | detections | post-processing ms/frame (median) | share of session.run |")
    print("|---|---|---|---|")
    for name, (decoder, outputs) in layouts(rng).items():
        kept = postprocess(decoder, outputs)
        ms = time_ms(lambda d=decoder, o=outputs: postprocess(d, o))
        print(f"| {name} | {kept} | {ms:.3f} | {ms / network_ms:.1%} |")


if __name__ == "__main__":
    main()
