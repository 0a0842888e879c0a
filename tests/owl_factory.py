"""OWLv2 with random weights in the Hugging Face hub cache layout (real weights cannot be had here).

A tiny ``Owlv2ForObjectDetection`` from transformers' own config classes is saved with
``save_pretrained`` into ``<hub>/models--google--<version>/snapshots/<sha>/`` with ``refs/main``
naming the snapshot, plus the processor's ``preprocessor_config.json``: the layout an offline box
holds after Roboflow's legacy stack fetched ``google/<version>`` (fact sheet §0.3).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

SHA = "0123456789abcdef0123456789abcdef01234567"


def tiny_owlv2(seed: int = 0, image_size: int = 128) -> Any:
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    config = Owlv2Config(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 1000,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # The box head's last layer at zero: every predicted box is its patch's cell of the grid
        # (OWLv2's box bias), so which box a reference box matches can be worked out by hand.
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    return model


def write_hub_snapshot(hub: Path, version: str, model: Any) -> Path:
    """``model`` as ``google/<version>`` in the hub cache ``hub``; the snapshot directory."""
    repo = hub / f"models--google--{version}"
    snapshot = repo / "snapshots" / SHA
    model.save_pretrained(str(snapshot))
    size = model.config.vision_config.image_size
    processor = {
        "image_processor_type": "Owlv2ImageProcessor",
        "size": {"height": size, "width": size},
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_pad": True,
        "do_resize": True,
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    (snapshot / "preprocessor_config.json").write_text(json.dumps(processor))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SHA)
    return snapshot


def scene(seed: int = 3, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A BGR frame with a few flat shapes (what the example boxes point at)."""
    rng = np.random.default_rng(seed)
    width, height = size
    frame = np.full((height, width, 3), 200, np.uint8)
    frame[20:60, 20:70] = (0, 0, 220)
    frame[70:110, 90:150] = (220, 120, 0)
    return np.clip(frame.astype(np.int16) + rng.integers(-8, 8, frame.shape), 0, 255).astype(np.uint8)


def lossless_clip(path: Path, frames: list[np.ndarray]) -> Path:
    """FFV1 (lossless, BGR): the decoded frames are exactly ``frames``."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        stream.time_base = Fraction(1, 10)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def instant_weights(path: Path, version: str, classes: dict[str, dict[str, Any]], image_embeds: dict) -> Path:
    """A Roboflow Instant ``weights.pt`` as ``SerializedOwlV2.save_model`` writes it: a torch pickle
    whose reference embeddings sit in Roboflow's own ``LimitedSizeDict`` class (stood in for here
    under its module path, so the file names the class exactly as Roboflow's does)."""
    import sys
    import types
    from collections import OrderedDict

    import torch

    module_name = "inference.models.owlv2.owlv2"
    created = [
        name
        for name in ("inference", "inference.models", "inference.models.owlv2", module_name)
        if name not in sys.modules
    ]
    for name in created:
        sys.modules[name] = types.ModuleType(name)
    limited = type("LimitedSizeDict", (OrderedDict,), {"__module__": module_name})
    sys.modules[module_name].LimitedSizeDict = limited  # type: ignore[attr-defined]
    try:
        embeds = limited()
        embeds.update(image_embeds)
        torch.save(
            {
                "huggingface_id": f"google/{version}",
                "train_data_dict": {
                    name: {k: (None if v is None else torch.from_numpy(np.asarray(v))) for k, v in kinds.items()}
                    for name, kinds in classes.items()
                },
                "class_names": list(classes),
                "roboflow_id": f"owlv2/{version}",
                "image_embeds": embeds,
            },
            str(path),
        )
    finally:
        for name in created:
            sys.modules.pop(name, None)
    return path
