"""Tiny Depth Anything v2 checkpoints with random weights, from transformers' own config classes.

Saved exactly as Roboflow's artifacts hold them (``config.json``, ``model.safetensors``,
``preprocessor_config.json``: a Hugging Face directory) and handed out as ``{file name: bytes}``
for the fake Roboflow server (tests/fixtures/model_server.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

# The real checkpoints' processor settings (depth-anything/Depth-Anything-V2-Small-hf).
PROCESSOR: dict[str, Any] = {
    "do_resize": True,
    "size": {"height": 518, "width": 518},
    "keep_aspect_ratio": True,
    "ensure_multiple_of": 14,
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_pad": False,
}


def network(tiny: bool = True, seed: int = 0) -> Any:
    """A DepthAnythingForDepthEstimation: tiny, or the size of depth-anything-v2/small."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    if tiny:
        backbone = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=518,
            out_features=["stage1", "stage2", "stage3", "stage4"],
            reshape_hidden_states=False,
        )
        config = DepthAnythingConfig(
            backbone_config=backbone,
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16,
            head_hidden_size=8,
            reassemble_hidden_size=32,
            depth_estimation_type="relative",
        )
    else:  # Depth-Anything-V2-Small: ViT-S/14 DINOv2, 24.8 M parameters
        backbone = Dinov2Config(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
            patch_size=14,
            image_size=518,
            layerscale_value=1.0,
            out_features=["stage3", "stage6", "stage9", "stage12"],
            reshape_hidden_states=False,
        )
        config = DepthAnythingConfig(
            backbone_config=backbone,
            neck_hidden_sizes=[48, 96, 192, 384],
            fusion_hidden_size=64,
            head_hidden_size=32,
            reassemble_hidden_size=384,
            depth_estimation_type="relative",
        )
    return DepthAnythingForDepthEstimation(config).eval()


def checkpoint_files(tiny: bool = True, seed: int = 0) -> dict[str, bytes]:
    """``{config.json, model.safetensors, preprocessor_config.json}`` of a random Depth Anything v2."""
    from transformers import DPTImageProcessor

    model = network(tiny, seed)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        DPTImageProcessor(**PROCESSOR).save_pretrained(folder)
        return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def write_checkpoint(directory: Path, tiny: bool = True, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in checkpoint_files(tiny, seed).items():
        (directory / name).write_bytes(data)
    return directory
