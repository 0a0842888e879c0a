"""SAM2 checkpoints with random weights, in Roboflow's artifact layouts (real weights cannot be had here).

A ``Sam2Model`` is built from transformers' own config classes (tiny widths at the real depth of
``hiera_tiny`` for tests, the real sizes for benchmarks), and its state dict is written back under
Meta's original ``sam2`` key names, as the ``weights.pt`` / ``model.pt`` Roboflow serves hold them:
``{"model": state_dict}`` including video-only tensors an image predictor must skip. The renaming
here is written independently of ``models/foundation/sam_weights.py`` (the reverse direction), so
a loader that renames wrongly fails to load every tensor back.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import torch

from tests.fixtures.model_server import ServedPackage

_HEADS = r"output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head"
# transformers name -> Meta's name, checked in order (the first match wins)
_BACK: tuple[tuple[str, str], ...] = (
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^vision_encoder\.backbone\.patch_embed\.projection\.", "image_encoder.trunk.patch_embed.proj."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.layer_norm(\d)\.", r"image_encoder.trunk.blocks.\1.norm\2."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_in\.", r"image_encoder.trunk.blocks.\1.mlp.layers.0."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.proj_out\.", r"image_encoder.trunk.blocks.\1.mlp.layers.1."),
    (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$", "sam_prompt_encoder.pe_layer.PE"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r"sam_mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_in\.", r"sam_mask_decoder.transformer.layers.\1.MLP0"),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_out\.", r"sam_mask_decoder.transformer.layers.\1.MLP1"),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "sam_mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (rf"^mask_decoder\.({_HEADS})\.proj_in\.", r"sam_mask_decoder.\1.layers.0."),
    (rf"^mask_decoder\.({_HEADS})\.layers\.0\.", r"sam_mask_decoder.\1.layers.1."),
    (rf"^mask_decoder\.({_HEADS})\.proj_out\.", r"sam_mask_decoder.\1.layers.2."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
)


def _back(key: str) -> str:
    for pattern, replacement in _BACK:
        if re.search(pattern, key):
            key = re.sub(pattern, replacement, key)
            break
    key = key.replace("PE", "positional_encoding_gaussian_matrix")
    return key.replace(".o_proj.", ".out_proj.").replace("MLP0", "mlp.layers.0.").replace("MLP1", "mlp.layers.1.")


def tiny_sam2_config(widths: tuple[int, int, int, int] = (8, 16, 32, 64), hidden: int = 32) -> Any:
    """``hiera_tiny``'s depth and heads with small widths (a few MB, ~1 s per frame on a CPU)."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    backbone = Sam2HieraDetConfig(
        hidden_size=widths[0],
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 7, 2],
        embed_dim_per_stage=list(widths),
        num_attention_heads_per_stage=[1, 2, 4, 8],
        global_attention_blocks=[5, 7, 9],
        window_size_per_stage=[8, 4, 14, 7],
    )
    return Sam2Config(
        vision_config=Sam2VisionConfig(
            backbone_config=backbone, backbone_channel_list=list(widths[::-1]), fpn_hidden_size=hidden
        ),
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=hidden),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=hidden, mlp_dim=2 * hidden, iou_head_hidden_dim=hidden),
    )


def real_sam2_config(letter: str) -> Any:
    """The real size of a SAM2 variant (benchmarks): Meta's yaml values."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    embed, heads, stages, global_blocks, windows, background = {
        "t": (96, 1, [1, 2, 7, 2], [5, 7, 9], [8, 4, 14, 7], [7, 7]),
        "s": (96, 1, [1, 2, 11, 2], [7, 10, 13], [8, 4, 14, 7], [7, 7]),
        "b+": (112, 2, [2, 3, 16, 3], [12, 16, 20], [8, 4, 14, 7], [14, 14]),
        "l": (144, 2, [2, 6, 36, 4], [23, 33, 43], [8, 4, 16, 8], [7, 7]),
    }[letter]
    dims = [embed * 2**s for s in range(4)]
    backbone = Sam2HieraDetConfig(
        hidden_size=embed,
        num_attention_heads=heads,
        blocks_per_stage=stages,
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[heads * 2**s for s in range(4)],
        global_attention_blocks=global_blocks,
        window_size_per_stage=windows,
        window_positional_embedding_background_size=background,
    )
    return Sam2Config(vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1]))


def sam2_model(config: Any, seed: int = 0) -> Any:
    from transformers import Sam2Model

    torch.manual_seed(seed)
    model = Sam2Model(config).eval()
    with torch.no_grad():  # one tensor in Meta's checkpoints: the same here
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def original_sam2_state(model: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """``model``'s tensors under Meta's names, plus video-only tensors as a real checkpoint has."""
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "shared_image_embedding.positional_embedding":
            continue  # a copy of the prompt encoder's in transformers; one tensor in Meta's
        if key == "prompt_encoder.point_embed.weight":
            for i, row in enumerate(value):
                state[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row[None].clone()
            continue
        state[_back(key)] = value.clone()
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.mask_decoder_config.hidden_size
    state["maskmem_tpos_enc"] = torch.randn(7, 1, 1, 64, generator=generator)
    state["memory_encoder.out_proj.weight"] = torch.randn(64, hidden, 1, 1, generator=generator)
    state["memory_attention.layers.0.self_attn.q_proj.weight"] = torch.randn(hidden, hidden, generator=generator)
    state["obj_ptr_proj.layers.0.weight"] = torch.randn(hidden, hidden, generator=generator)
    state["no_mem_pos_enc"] = torch.randn(1, 1, hidden, generator=generator)
    return state


def checkpoint_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    return buffer.getvalue()


def sam2_package(package_id: str, weights: bytes, version: str = "sam2.1_hiera_t") -> ServedPackage:
    """The current stack's SAM2 package: ``model.pt`` + ``sam_configuration.json``."""
    manifest = {
        "type": "torch-model-package-v1",
        "backendType": "torch",
        "quantization": "fp32",
        "dynamicBatchSize": True,
    }
    files = {"model.pt": weights, "sam_configuration.json": json.dumps({"version": version}).encode()}
    return ServedPackage(package_id, manifest, files)


# -- SAM (v1) ---------------------------------------------------------------------------------------

_SAM_BACK: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.", "image_encoder."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"\.mask_embed\.conv1\.", ".mask_downscaling.0."),
    (r"\.mask_embed\.layer_norm1\.", ".mask_downscaling.1."),
    (r"\.mask_embed\.conv2\.", ".mask_downscaling.3."),
    (r"\.mask_embed\.layer_norm2\.", ".mask_downscaling.4."),
    (r"\.mask_embed\.conv3\.", ".mask_downscaling.6."),
    (r"\.layer_norm", ".norm"),
    (r"\.point_embed\.", ".point_embeddings."),
    (r"\.shared_embedding\.positional_embedding$", ".pe_layer.positional_encoding_gaussian_matrix"),
    (r"\.upscale_conv1\.", ".output_upscaling.0."),
    (r"\.upscale_layer_norm\.", ".output_upscaling.1."),
    (r"\.upscale_norm\.", ".output_upscaling.1."),
    (r"\.upscale_conv2\.", ".output_upscaling.3."),
    (rf"\.({_HEADS})\.layers\.0\.", r".\1.LAYER1."),
    (rf"\.({_HEADS})\.proj_in\.", r".\1.layers.0."),
    (rf"\.({_HEADS})\.proj_out\.", r".\1.layers.2."),
)


def tiny_sam_config() -> Any:
    """``vit_b``'s depth, heads and global blocks with small widths."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=48,
        num_hidden_layers=12,
        num_attention_heads=12,
        global_attn_indexes=[2, 5, 8, 11],
        mlp_dim=96,
        output_channels=32,
        num_pos_feats=16,
    )
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=32),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, iou_head_hidden_dim=32),
    )


def sam_model(config: Any, seed: int = 0) -> Any:
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(config).eval()
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
    return model


def original_sam_state(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s tensors under segment_anything's names (``encoder.pth``/``model.pth``)."""
    state: dict[str, torch.Tensor] = {
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1),
    }
    for key, value in model.state_dict().items():
        if key == "shared_image_embedding.positional_embedding":
            continue
        for pattern, replacement in _SAM_BACK:
            key = re.sub(pattern, replacement, key)
        state[key.replace("LAYER1", "layers.1")] = value.clone()
    return state


def sam_state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)  # segment_anything's checkpoints are the bare state dict
    return buffer.getvalue()
