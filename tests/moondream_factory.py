"""A tiny Moondream2 (revision 2025-06-21) checkpoint with random weights, in the real file layout.

The tensors are made from a table of the real checkpoint's parameter names and shapes written here
by hand (``model.``-prefixed, as ``HfMoondream`` stores them), not from edge-agent's network, so
loading it checks that the network is named and shaped like the real one. ``config.json`` carries
the small sizes in its ``config`` object (the real one leaves it empty: the revision's defaults).
The coordinate and size bins keep their real counts (1024, 2 x 1024) so the decoding can be checked
with Moondream's own formulas.

``force`` makes the answer known whatever the random weights say: ``token`` is what the language
head always picks (0, end-of-text: no object), ``coord_bin`` the x and y bin the coordinate head
picks, ``size_bins`` the (width, height) bins of the size head (zero weights, a peaked bias).

A ``hf_moondream.py`` (and helpers) sit beside the weights, as in Roboflow's package; running them
would write ``EXECUTED``, which the tests check never appears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COORD_BINS = 1024
TEXT = {"dim": 32, "ff_dim": 64, "n_layers": 2, "vocab_size": 320, "max_context": 256, "n_heads": 4, "n_kv_heads": 2}
VISION = {
    "enc_dim": 16,
    "enc_patch_size": 14,
    "enc_n_layers": 2,
    "enc_ff_dim": 32,
    "enc_n_heads": 2,
    "proj_out_dim": 32,
    "crop_size": 56,
    "max_crops": 4,
    "overlap_margin": 1,
    "proj_inner_dim": 48,
}
REGION = {
    "dim": 32,
    "coord_feat_dim": 16,
    "coord_out_dim": COORD_BINS,
    "size_feat_dim": 16,
    "size_out_dim": 2 * COORD_BINS,
    "inner_dim": 48,
}
# the tiny tokenizer's ids stand in for the real template ids (7235 ... are past its vocabulary)
DETECT = {"prefix": [1, 10, 11, 2], "suffix": [3]}
CORPUS = ["person car dog a red car on the road", "Detect: person. Point: car.", "bicycle truck bus"]
CODE_FILES = (
    "hf_moondream.py",
    "moondream.py",
    "configuration_moondream.py",
    "vision.py",
    "text.py",
    "region.py",
    "layers.py",
)


@dataclass(frozen=True)
class Force:
    token: int
    coord_bin: int
    size_bins: tuple[int, int]


# Moondream2 2025-06-21's sizes (its config.py defaults), for benchmarks: ~1.9 B parameters
TEXT_REAL = {"dim": 2048, "ff_dim": 8192, "n_layers": 24, "vocab_size": 51200, "n_heads": 32, "n_kv_heads": 32}
VISION_REAL = {"enc_dim": 1152, "enc_patch_size": 14, "enc_n_layers": 27, "enc_ff_dim": 4304, "crop_size": 378}
VISION_REAL |= {"proj_inner_dim": 8192, "proj_out_dim": 2048}
REGION_REAL = {**REGION, "dim": 2048, "coord_feat_dim": 256, "size_feat_dim": 512, "inner_dim": 8192}


def parameter_shapes(real: bool = False) -> dict[str, tuple[int, ...]]:
    """The real checkpoint's names with the tiny sizes (or the real ones)."""
    v, t, r = (VISION_REAL, TEXT_REAL, REGION_REAL) if real else (VISION, TEXT, REGION)
    e, patch = v["enc_dim"], v["enc_patch_size"]
    grid = v["crop_size"] // patch
    shapes: dict[str, tuple[int, ...]] = {
        "model.vision.patch_emb.weight": (e, patch * patch * 3),
        "model.vision.patch_emb.bias": (e,),
        "model.vision.pos_emb": (1, grid * grid, e),
        "model.vision.post_ln.weight": (e,),
        "model.vision.post_ln.bias": (e,),
        "model.vision.proj_mlp.fc1.weight": (v["proj_inner_dim"], 2 * e),
        "model.vision.proj_mlp.fc1.bias": (v["proj_inner_dim"],),
        "model.vision.proj_mlp.fc2.weight": (v["proj_out_dim"], v["proj_inner_dim"]),
        "model.vision.proj_mlp.fc2.bias": (v["proj_out_dim"],),
    }
    for i in range(v["enc_n_layers"]):
        b = f"model.vision.blocks.{i}"
        shapes |= {
            f"{b}.ln1.weight": (e,),
            f"{b}.ln1.bias": (e,),
            f"{b}.attn.qkv.weight": (3 * e, e),
            f"{b}.attn.qkv.bias": (3 * e,),
            f"{b}.attn.proj.weight": (e, e),
            f"{b}.attn.proj.bias": (e,),
            f"{b}.ln2.weight": (e,),
            f"{b}.ln2.bias": (e,),
            f"{b}.mlp.fc1.weight": (v["enc_ff_dim"], e),
            f"{b}.mlp.fc1.bias": (v["enc_ff_dim"],),
            f"{b}.mlp.fc2.weight": (e, v["enc_ff_dim"]),
            f"{b}.mlp.fc2.bias": (e,),
        }
    d = t["dim"]
    qkv = d + 2 * t["n_kv_heads"] * (d // t["n_heads"])
    shapes |= {
        "model.text.wte": (t["vocab_size"], d),
        "model.text.post_ln.weight": (d,),
        "model.text.post_ln.bias": (d,),
        "model.text.lm_head.weight": (t["vocab_size"], d),
        "model.text.lm_head.bias": (t["vocab_size"],),
    }
    for i in range(t["n_layers"]):
        b = f"model.text.blocks.{i}"
        shapes |= {
            f"{b}.ln.weight": (d,),
            f"{b}.ln.bias": (d,),
            f"{b}.attn.qkv.weight": (qkv, d),
            f"{b}.attn.qkv.bias": (qkv,),
            f"{b}.attn.proj.weight": (d, d),
            f"{b}.attn.proj.bias": (d,),
            f"{b}.mlp.fc1.weight": (t["ff_dim"], d),
            f"{b}.mlp.fc1.bias": (t["ff_dim"],),
            f"{b}.mlp.fc2.weight": (d, t["ff_dim"]),
            f"{b}.mlp.fc2.bias": (d,),
        }
    inner = r["inner_dim"]
    shapes |= {
        "model.region.coord_features": (1, r["coord_feat_dim"] // 2),
        "model.region.coord_encoder.weight": (r["dim"], r["coord_feat_dim"]),
        "model.region.coord_encoder.bias": (r["dim"],),
        "model.region.coord_decoder.fc1.weight": (inner, r["dim"]),
        "model.region.coord_decoder.fc1.bias": (inner,),
        "model.region.coord_decoder.fc2.weight": (r["coord_out_dim"], inner),
        "model.region.coord_decoder.fc2.bias": (r["coord_out_dim"],),
        "model.region.size_features": (2, r["size_feat_dim"] // 2),
        "model.region.size_encoder.weight": (r["dim"], r["size_feat_dim"]),
        "model.region.size_encoder.bias": (r["dim"],),
        "model.region.size_decoder.fc1.weight": (inner, r["dim"]),
        "model.region.size_decoder.fc1.bias": (inner,),
        "model.region.size_decoder.fc2.weight": (r["size_out_dim"], inner),
        "model.region.size_decoder.fc2.bias": (r["size_out_dim"],),
    }
    return shapes


def make_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|md_reserved_0|>", "<|md_reserved_1|>", "<|md_reserved_2|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def moondream_checkpoint(directory: Path, seed: int = 0, force: Force | None = None, real: bool = False) -> Path:
    """``real``: the released sizes, stored in bfloat16 as the real checkpoint, with an empty
    ``config`` (the revision's defaults) but for the tiny tokenizer's detect template."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if real else torch.float32
    tensors: dict[str, Any] = {}
    for name, shape in parameter_shapes(real).items():
        if ".ln" in name and name.endswith(".weight"):  # ln, ln1, ln2, post_ln: scale 1
            tensors[name] = torch.ones(shape, dtype=dtype)
        else:
            scale = 0.02 if real else 0.2
            tensors[name] = (torch.randn(shape, generator=generator) * scale).to(dtype)
    if force is not None:
        tensors["model.text.lm_head.weight"].zero_()
        tensors["model.text.lm_head.bias"].zero_()
        tensors["model.text.lm_head.bias"][force.token] = 50.0
        tensors["model.region.coord_decoder.fc2.weight"].zero_()
        tensors["model.region.coord_decoder.fc2.bias"].zero_()
        tensors["model.region.coord_decoder.fc2.bias"][force.coord_bin] = 50.0
        tensors["model.region.size_decoder.fc2.weight"].zero_()
        tensors["model.region.size_decoder.fc2.bias"].zero_()
        tensors["model.region.size_decoder.fc2.bias"][force.size_bins[0]] = 50.0
        tensors["model.region.size_decoder.fc2.bias"][COORD_BINS + force.size_bins[1]] = 50.0
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    config = {
        "architectures": ["HfMoondream"],
        "auto_map": {"AutoConfig": "hf_moondream.HfConfig", "AutoModelForCausalLM": "hf_moondream.HfMoondream"},
        "config": {
            **({} if real else {"text": TEXT, "vision": VISION, "region": REGION}),
            "tokenizer": {"templates": {"detect": DETECT, "point": None, "query": None, "caption": None}},
        },
        "model_type": "moondream1",
        "torch_dtype": "bfloat16" if real else "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    make_tokenizer().save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    for name in CODE_FILES:  # never to be run: running it leaves a mark
        (directory / name).write_text(
            "from pathlib import Path\nPath(__file__).with_name('EXECUTED').write_text('ran')\n"
        )
    return directory
