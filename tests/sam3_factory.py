"""SAM3 artifacts with random weights, in Roboflow's layout (real weights cannot be had here).

A ``Sam3Model`` is built from transformers' own config classes (tiny widths for tests, the real
``Sam3Config()`` for benchmarks) and its state dict is written back under Meta's original SAM3 key
names, as ``weights.pt`` holds them: the image detector under ``detector.``, fused ``qkv`` /
``in_proj_*`` projections, CLIP's transposed ``text_projection``, a class-token row in the ViT's
position table, rotary tables, plus tensors of parts an image detector does not use (the video
tracker, point prompts). The renaming here is written independently of
``models/foundation/sam3_weights.py`` (the reverse direction, rule by rule), so a loader that renames
wrongly fails to fill every tensor.

The vocabulary is a small file in OpenAI's ``bpe_simple_vocab_16e6.txt`` format (a version line,
then one merge per line, gzipped): 512 byte tokens, the merges in order, then start/end of text.
"""

from __future__ import annotations

import gzip
import io
import re
from typing import Any

import torch

# merges of the tiny vocabulary: ids 512.. in this order (the words the tests prompt with)
TINY_MERGES = (
    "c a",
    "ca t</w>",
    "d o",
    "do g</w>",
    "p e",
    "pe r",
    "per s",
    "pers o",
    "perso n</w>",
    "ca r</w>",
)
TINY_VOCAB = 512 + len(TINY_MERGES) + 2

# transformers name -> Meta's (without ``detector.``), the first match wins
_BACK: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.embeddings\.position_embeddings$", "backbone.vision_backbone.trunk.pos_embed"),
    (
        r"^vision_encoder\.backbone\.embeddings\.patch_embeddings\.projection\.",
        "backbone.vision_backbone.trunk.patch_embed.proj.",
    ),
    (r"^vision_encoder\.backbone\.layer_norm\.", "backbone.vision_backbone.trunk.ln_pre."),
    (
        r"^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm(\d)\.",
        r"backbone.vision_backbone.trunk.blocks.\1.norm\2.",
    ),
    (
        r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.o_proj\.",
        r"backbone.vision_backbone.trunk.blocks.\1.attn.proj.",
    ),
    (
        r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.QKV\.",
        r"backbone.vision_backbone.trunk.blocks.\1.attn.qkv.",
    ),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.mlp\.", r"backbone.vision_backbone.trunk.blocks.\1.mlp."),
    (r"^vision_encoder\.neck\.fpn_layers\.0\.scale_layers\.0\.", "backbone.vision_backbone.convs.0.dconv_2x2_0."),
    (r"^vision_encoder\.neck\.fpn_layers\.0\.scale_layers\.2\.", "backbone.vision_backbone.convs.0.dconv_2x2_1."),
    (r"^vision_encoder\.neck\.fpn_layers\.1\.scale_layers\.0\.", "backbone.vision_backbone.convs.1.dconv_2x2."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj1\.", r"backbone.vision_backbone.convs.\1.conv_1x1."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj2\.", r"backbone.vision_backbone.convs.\1.conv_3x3."),
    (
        r"^text_encoder\.text_model\.embeddings\.token_embedding\.",
        "backbone.language_backbone.encoder.token_embedding.",
    ),
    (
        r"^text_encoder\.text_model\.embeddings\.position_embedding\.weight$",
        "backbone.language_backbone.encoder.positional_embedding",
    ),
    (r"^text_encoder\.text_model\.final_layer_norm\.", "backbone.language_backbone.encoder.ln_final."),
    (r"^text_encoder\.text_projection\.weight$", "backbone.language_backbone.encoder.text_projection"),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.out_proj.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.QKV\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.INPROJ",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.ln_\2.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_fc.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_proj.",
    ),
    (r"^text_projection\.", "backbone.language_backbone.resizer."),
    (r"^geometry_encoder\.layers\.(\d+)\.cross_attn\.", r"geometry_encoder.encode.\1.cross_attn_image."),
    (r"^geometry_encoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"geometry_encoder.encode.\1.linear\2."),
    (r"^geometry_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"geometry_encoder.encode.\1.norm\2."),
    (r"^geometry_encoder\.layers\.(\d+)\.", r"geometry_encoder.encode.\1."),
    (r"^geometry_encoder\.vision_layer_norm\.", "geometry_encoder.img_pre_norm."),
    (r"^geometry_encoder\.prompt_layer_norm\.", "geometry_encoder.norm."),
    (r"^geometry_encoder\.output_layer_norm\.", "geometry_encoder.encode_norm."),
    (r"^detr_encoder\.layers\.(\d+)\.cross_attn\.", r"transformer.encoder.layers.\1.cross_attn_image."),
    (r"^detr_encoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.encoder.layers.\1.linear\2."),
    (r"^detr_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"transformer.encoder.layers.\1.norm\2."),
    (r"^detr_encoder\.", "transformer.encoder."),
    (r"^detr_decoder\.presence_head\.layer(\d)\.", r"transformer.decoder.presence_token_head.layers.DEC\1."),
    (r"^detr_decoder\.presence_layer_norm\.", "transformer.decoder.presence_token_out_norm."),
    (r"^detr_decoder\.output_layer_norm\.", "transformer.decoder.norm."),
    (r"^detr_decoder\.box_head\.layer(\d)\.", r"transformer.decoder.bbox_embed.layers.DEC\1."),
    (r"^detr_decoder\.ref_point_head\.layer(\d)\.", r"transformer.decoder.ref_point_head.layers.DEC\1."),
    (r"^detr_decoder\.box_rpb_embed_(x|y)\.layer(\d)\.", r"transformer.decoder.boxRPB_embed_\1.layers.DEC\2."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.catext_norm."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn\.", r"transformer.decoder.layers.\1.ca_text."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.", r"transformer.decoder.layers.\1.cross_attn."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp\.fc(\d)\.", r"transformer.decoder.layers.\1.linear\2."),
    (r"^detr_decoder\.", "transformer.decoder."),
    (r"^dot_product_scoring\.text_mlp\.layer(\d)\.", r"dot_prod_scoring.prompt_mlp.layers.DEC\1."),
    (r"^dot_product_scoring\.text_mlp_out_norm\.", "dot_prod_scoring.prompt_mlp.out_norm."),
    (r"^dot_product_scoring\.text_proj\.", "dot_prod_scoring.prompt_proj."),
    (r"^dot_product_scoring\.query_proj\.", "dot_prod_scoring.hs_proj."),
    (r"^mask_decoder\.pixel_decoder\.", "segmentation_head.pixel_decoder."),
    (r"^mask_decoder\.mask_embedder\.layers\.", "segmentation_head.mask_predictor.mask_embed.layers."),
    (r"^mask_decoder\.instance_projection\.", "segmentation_head.instance_seg_head."),
    (r"^mask_decoder\.semantic_projection\.", "segmentation_head.semantic_seg_head."),
    (r"^mask_decoder\.prompt_cross_attn_norm\.", "segmentation_head.cross_attn_norm."),
    (r"^mask_decoder\.prompt_cross_attn\.", "segmentation_head.cross_attend_prompt."),
)


def _back(key: str) -> str:
    for pattern, replacement in _BACK:
        if re.search(pattern, key):
            key = re.sub(pattern, replacement, key)
            break
    key = re.sub(r"\.DEC(\d)\.", lambda m: f".{int(m.group(1)) - 1}.", key)
    key = key.replace(".o_proj.", ".out_proj.")
    # nn.MultiheadAttention's fused projection: in_proj_weight / in_proj_bias
    return re.sub(r"\.QKV\.(weight|bias)$", r".in_proj_\1", key).replace("INPROJ", "in_proj_")


def tiny_sam3_config(vocab_size: int = TINY_VOCAB) -> Any:
    """Tiny widths; 64-wide ViT/text heads and 32-wide detector heads as SAM3's; 1008-pixel input."""
    from transformers import Sam3Config

    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 64,
                "intermediate_size": 96,
                "num_hidden_layers": 8,
                "num_attention_heads": 1,
                "image_size": 1008,
                "patch_size": 28,
                "window_size": 24,
                "global_attn_indexes": [1, 3, 5, 7],
                "pretrain_image_size": 336,
            },
            "fpn_hidden_size": 32,
            "backbone_feature_sizes": [[144, 144], [72, 72], [36, 36]],
        },
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 96,
            "projection_dim": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "max_position_embeddings": 32,
            "hidden_act": "gelu",
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": 0,
        },
        geometry_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 1, "intermediate_size": 48},
        detr_encoder_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 1, "intermediate_size": 48},
        detr_decoder_config={
            "hidden_size": 32,
            "num_layers": 2,
            "num_queries": 20,
            "num_attention_heads": 1,
            "intermediate_size": 48,
        },
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 1},
    )


def real_sam3_config() -> Any:
    from transformers import Sam3Config

    return Sam3Config()


def sam3_model(config: Any, seed: int = 0) -> Any:
    from transformers import Sam3Model

    torch.manual_seed(seed)
    return Sam3Model(config).eval()


def original_sam3_state(model: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """``model``'s tensors as Meta's ``sam3.pt`` holds them (``detector.``-prefixed), with the extras."""
    generator = torch.Generator().manual_seed(seed)
    hf = dict(model.state_dict())  # the model's own tensors (no copy: a real-size model is 3.4 GB)
    state: dict[str, torch.Tensor] = {}
    for key in list(hf):
        if key not in hf or not re.search(r"\.q_proj\.(weight|bias)$", key):
            continue
        stem, kind = re.match(r"(.+)\.q_proj\.(weight|bias)$", key).groups()  # type: ignore[union-attr]
        fused = torch.cat([hf.pop(f"{stem}.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0)
        hf[f"{stem}.QKV.{kind}"] = fused
    for key, value in hf.items():
        name = _back(key)
        if key == "vision_encoder.backbone.embeddings.position_embeddings":
            cls_row = torch.randn(1, 1, value.shape[-1], generator=generator)
            value = torch.cat([cls_row, value], dim=1)
        elif key == "text_encoder.text_projection.weight":
            value = value.T.contiguous()
        state["detector." + name] = value
    width = model.config.vision_config.backbone_config.hidden_size
    for i in range(model.config.vision_config.backbone_config.num_hidden_layers):
        state[f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis"] = torch.randn(
            4, 2, generator=generator
        )
    hidden = model.config.detr_decoder_config.hidden_size
    state["detector.geometry_encoder.points_direct_project.weight"] = torch.randn(hidden, 2, generator=generator)
    state["tracker.sam_mask_decoder.iou_token.weight"] = torch.randn(1, hidden, generator=generator)
    state["tracker.image_encoder.trunk.pos_embed"] = torch.randn(1, 4, width, generator=generator)
    return state


def write_checkpoint(state: dict[str, torch.Tensor], path: Any) -> None:
    torch.save(state, str(path))


def checkpoint_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def vocabulary_gz(merges: tuple[str, ...] = TINY_MERGES) -> bytes:
    """A ``bpe_simple_vocab_16e6.txt.gz`` of ``merges``: a version line, one merge per line."""
    text = "\n".join(["#version: 0.2", *merges])
    return gzip.compress(text.encode())
