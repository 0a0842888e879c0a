"""Real PP-OCR weights for tests: the PP-OCRv4 detection and recognition ONNX files shipped in the
``rapidocr-onnxruntime`` wheel on PyPI (installed with ``--no-deps`` by ``.ci/run``: only its model
files are used), as packages in Roboflow's ``pp-ocrv6-det`` / ``pp-ocrv6-rec`` shape.

Roboflow's packages hold ``inference.onnx`` + ``inference.yml``; the YAML here is written by hand
with Roboflow's defaults (roboflow-layouts.md §7), and the character list comes from the
recognition model's own ONNX metadata (6623 characters + blank + space = its 6625 outputs).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import yaml

WHEEL = "rapidocr-onnxruntime==1.4.4"


def rapidocr_models() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        message = f"the PP-OCRv4 test weights come from {WHEEL}: pip install --no-deps '{WHEEL}'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def det_files() -> dict[str, bytes]:
    config = {
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"img_mode": "BGR", "channel_first": False}},
                {"DetResizeForTest": {"limit_side_len": 736, "limit_type": "min"}},
                {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "1./255"}},
            ]
        },
        "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "unclip_ratio": 1.5},
    }
    weights = (rapidocr_models() / "ch_PP-OCRv4_det_infer.onnx").read_bytes()
    return {"inference.onnx": weights, "inference.yml": yaml.safe_dump(config).encode()}


def rec_files() -> dict[str, bytes]:
    path = rapidocr_models() / "ch_PP-OCRv4_rec_infer.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    config = {
        "PreProcess": {"transform_ops": [{"RecResizeImg": {"image_shape": [3, 48, 320]}}]},
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }
    return {"inference.onnx": path.read_bytes(), "inference.yml": yaml.safe_dump(config, allow_unicode=True).encode()}


def text_frame(lines: list[tuple[str, tuple[int, int], float]], size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """White frame with black text: (text, bottom-left origin, scale) per line."""
    frame = np.full((size[1], size[0], 3), 255, np.uint8)
    for text, origin, scale in lines:
        cv2.putText(
            frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(2, round(2 * scale)), cv2.LINE_AA
        )
    return frame
