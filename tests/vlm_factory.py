"""Tiny vision-language checkpoints with random weights, built from transformers' own config classes.

No real weights can be downloaded, so each family is built small (a few hundred thousand
parameters) from its library classes, with a byte-level BPE tokenizer trained here on a few
sentences (plus the family's special tokens), and saved as Hugging Face files in the layout
Roboflow serves (config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, preprocessor_config.json).

``answer=`` makes the checkpoint's greedy answer known: its generation_config.json carries a
``sequence_bias`` chain (token a followed by token b gets +100), so the real ``generate`` of the real
model writes exactly that text whatever the random weights say. Tests then check what is ours:
prompt assembly, input slicing, special tokens, parsing, against hand-computed values.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path
from typing import Any

CORPUS = [
    "What does the image describe?",
    "Locate the objects with category name in the image.",
    "What is the text in the image?",
    "Describe in detail what is shown in the image.",
    "Describe what's in this image.",
    "a red car on a road and a blue truck",
    "caption en answer briefly",
    "You are a Qwen2.5-VL model that can answer questions about any image.",
    "system user assistant Assistant: User:",
]


def make_tokenizer(
    special: list[str], added: list[str], extra_special: dict[str, str], vocab_size: int = 400, **names: str
) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=names.get("unk_token")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra_special, **names)
    if added:
        fast.add_tokens(added, special_tokens=False)
    return fast


def answer_chain(start: list[int], answer: list[int], eos: int) -> list[list[Any]]:
    """generation_config ``sequence_bias`` entries that make greedy decoding follow start -> answer -> eos."""
    chain = [*start, *answer, eos]
    return [[[a, b], 100.0] for a, b in itertools.pairwise(chain)]


def _save(model: Any, directory: Path, real: bool) -> None:
    """Real-size (benchmark) checkpoints are stored in bfloat16, as the real ones; tiny ones in float32."""
    import torch

    (model.to(torch.bfloat16) if real else model).eval().save_pretrained(directory)


def _finish(directory: Path, tokenizer: Any, chain: list[list[Any]] | None) -> None:
    (directory / "special_tokens_map.json").write_text(
        json.dumps({k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)})
    )
    if chain is not None:
        path = directory / "generation_config.json"
        config = json.loads(path.read_text())
        config["sequence_bias"] = chain
        path.write_text(json.dumps(config, indent=2))


# -- Florence-2 ------------------------------------------------------------------------------------

FLORENCE_EXTRA = [f"<loc_{i}>" for i in range(1000)] + [
    "<od>",
    "</od>",
    "<ocr>",
    "</ocr>",
    "<poly>",
    "</poly>",
    "<sep>",
]


def florence_tokenizer() -> Any:
    return make_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>", "<image>"],
        FLORENCE_EXTRA,
        {"image_token": "<image>"},
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def florence_checkpoint(
    directory: Path,
    answer: str | None = None,
    seed: int = 0,
    size: int = 32,
    endless: bool = False,
    real: bool = False,
) -> Path:
    """Florence-2 (DaViT vision tower + BART), ``size`` x ``size`` input. ``endless``: the answer
    repeats until ``max_new_tokens`` (a slow model). ``real``: Florence-2-base's dimensions (768 px,
    577 image tokens, BART-base, 51289 tokens) for benchmarks."""
    import torch
    from transformers import BartConfig, CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = florence_tokenizer()
    dims = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64}
    if real:
        dims, size = {"d_model": 768, "layers": 6, "heads": 12, "ffn": 3072}, 768
    text = BartConfig(
        vocab_size=max(len(tokenizer), 51289 if real else 0),
        d_model=dims["d_model"],
        encoder_layers=dims["layers"],
        decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=dims["ffn"],
        decoder_ffn_dim=dims["ffn"],
        max_position_embeddings=2048,  # room for the slow (endless) answers of the e2e tests
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
    )
    vision = {
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [16, 32],
        "num_heads": [2, 2],
        "num_groups": [2, 2],
        "window_size": 2,
        "projection_dim": 32,
        "max_position_embeddings": 16,
    }
    if real:  # Florence-2-base's DaViT
        vision = {
            "depths": [1, 1, 9, 1],
            "patch_size": [7, 3, 3, 3],
            "patch_stride": [4, 2, 2, 2],
            "patch_padding": [3, 1, 1, 1],
            "patch_prenorm": [False, True, True, True],
            "embed_dim": [128, 256, 512, 1024],
            "num_heads": [4, 8, 16, 32],
            "num_groups": [4, 8, 16, 32],
            "window_size": 12,
            "projection_dim": 768,
        }
    config = Florence2Config(
        text_config=text.to_dict(), vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids("<image>")
    )
    torch.manual_seed(seed)
    _save(Florence2ForConditionalGeneration(config), directory, real)
    tokenizer.save_pretrained(directory)
    side = size // 32 if real else size // 8  # strides 4, 2, 2, 2 (real) or 4, 2 (tiny)
    CLIPImageProcessorPil(
        size={"height": size, "width": size},
        crop_size={"height": size, "width": size},
        do_center_crop=False,
        image_seq_length=side * side + 1,
    ).save_pretrained(directory)
    (directory / "processor_config.json").write_text(
        json.dumps({"processor_class": "Florence2Processor", "num_additional_image_tokens": 0})
    )
    chain = None
    if answer is not None:
        # the decoder starts from </s> (decoder_start_token_id), then <s> is forced
        ids = tokenizer.encode(answer, add_special_tokens=False)
        chain = answer_chain([2, 0], ids, ids[0] if endless else 2)
    _finish(directory, tokenizer, chain)
    return directory


# -- packaging -------------------------------------------------------------------------------------


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def tar_gz(directory: Path, prefix: str = "") -> bytes:
    """The directory as a tar.gz (members under ``prefix``), as Roboflow packs weights."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=prefix + str(path.relative_to(directory)))
    return buffer.getvalue()


# -- LoRA ------------------------------------------------------------------------------------------


def lora_adapter(
    base_dir: Path,
    directory: Path,
    model_class: Any,
    base_name: str,
    revision: str = "main",
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    rank: int = 4,
    alpha: int = 8,
    seed: int = 1,
) -> Path:
    """A peft LoRA adapter on ``base_dir``'s model, with random (non-zero) A and B, saved as Roboflow's
    adapter packages hold it (adapter_config.json naming ``base_name``@``revision``, adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = model_class.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        init_lora_weights=False,  # B is zero by default, which would make the merge trivially equal
        revision=revision,
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(str(directory))
    path = directory / "adapter_config.json"
    saved = json.loads(path.read_text())
    saved["base_model_name_or_path"] = base_name
    saved["revision"] = revision
    path.write_text(json.dumps(saved, indent=2))
    return directory


# -- PaliGemma / PaliGemma 2 ---------------------------------------------------------------------


def paligemma_checkpoint(
    directory: Path, answer: str | None = None, version: int = 1, seed: int = 0, real: bool = False
) -> Path:
    """PaliGemma (SigLIP + Gemma) or PaliGemma 2 (SigLIP + Gemma 2), 28 x 28 input (4 image tokens).
    ``real``: paligemma-3b-pt-224's dimensions (SigLIP so400m at 224 px, 256 image tokens, Gemma 2B)."""
    import torch
    from transformers import (
        Gemma2Config,
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
        [],
        {"image_token": "<image>"},
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    side = 224 if real else 28
    image_processor = SiglipImageProcessorPil(size={"height": side, "width": side}, image_seq_length=(side // 14) ** 2)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg> tokens
    tokenizer = processor.tokenizer
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 2048,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    vision_dims = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    if real:  # Gemma 2B (PaliGemma 2 3B: Gemma 2 2B) and SigLIP so400m/14
        common |= {"vocab_size": 257216, "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18}
        common |= {"num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256}
        if version == 2:
            common |= {
                "hidden_size": 2304,
                "intermediate_size": 9216,
                "num_hidden_layers": 26,
                "num_key_value_heads": 4,
            }
        vision_dims = {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
        }
    text = (GemmaConfig if version == 1 else Gemma2Config)(**common)
    vision = SiglipVisionConfig(**vision_dims, image_size=side, patch_size=14)
    config = PaliGemmaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projection_dim=common["hidden_size"],
        hidden_size=common["hidden_size"],
    )
    torch.manual_seed(seed)
    _save(PaliGemmaForConditionalGeneration(config), directory, real)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    chain = None
    if answer is not None:
        newline = tokenizer.encode("\n", add_special_tokens=False)
        chain = answer_chain(newline[-1:], tokenizer.encode(answer, add_special_tokens=False), 1)
    _finish(directory, tokenizer, chain)
    return directory


# -- Qwen2.5-VL ------------------------------------------------------------------------------------

# Qwen2-VL's chat template, reduced to what an image question uses (roles, image item, generation prompt)
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def qwen25vl_checkpoint(directory: Path, answer: str | None = None, seed: int = 0, real: bool = False) -> Path:
    """Qwen2.5-VL, 56 x 56 pictures (a 4 x 4 grid of 14 px patches, merged 2 x 2: 4 image tokens).
    ``real``: Qwen2.5-VL-3B's dimensions, the processor's default pixel range."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(
        QWEN_SPECIAL,
        [],
        {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text_dims = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text_dims |= {"num_key_value_heads": 1, "mrope_section": [2, 3, 3]}
    vision_dims = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32}
    vision_dims |= {"window_size": 56, "fullatt_block_indexes": [0]}
    if real:
        text_dims = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36}
        text_dims |= {"num_attention_heads": 16, "num_key_value_heads": 2, "mrope_section": [16, 24, 24]}
        vision_dims = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16}
        vision_dims |= {"out_hidden_size": 2048, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
    section = text_dims.pop("mrope_section")
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": max(len(tokenizer), 151936 if real else 0),
            **text_dims,
            "max_position_embeddings": 32768 if real else 2048,
            "rope_parameters": {"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=vision_dims,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    _save(Qwen2_5_VLForConditionalGeneration(config), directory, real)
    tokenizer.save_pretrained(directory)
    # real: Qwen2.5-VL's preprocessor_config.json range (3136 .. 12845056 pixels)
    pixels = {"min_pixels": 3136, "max_pixels": 12845056} if real else {"min_pixels": 56 * 56, "max_pixels": 56 * 56}
    Qwen2VLImageProcessorPil(**pixels).save_pretrained(directory)
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    chain = None
    if answer is not None:
        start = tokenizer.encode("assistant\n", add_special_tokens=False)[-1:]
        chain = answer_chain(start, tokenizer.encode(answer, add_special_tokens=False), ids["<|im_end|>"])
    _finish(directory, tokenizer, chain)
    return directory


# -- SmolVLM2 --------------------------------------------------------------------------------------

# SmolVLM's chat template (HuggingFaceTB/SmolVLM2), reduced to image + text turns
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def smolvlm_checkpoint(directory: Path, answer: str | None = None, seed: int = 0, real: bool = False) -> Path:
    """SmolVLM2 (SigLIP-like vision + Llama), 32 px tiles of 8 px patches, scale factor 2: 4 tokens a tile;
    pictures are split into 32 px tiles (at most 64 px on the long side) plus the global picture.
    ``real``: SmolVLM2-256M's dimensions (512 px tiles of 16 px patches, scale 4: 64 tokens a tile,
    long side up to 2048 px; SmolLM2-135M-sized text model)."""
    import torch
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil

    directory.mkdir(parents=True, exist_ok=True)
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)]
    tokenizer = make_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>"],
        rows,
        {
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )
    eos = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    text_dims = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text_dims["num_key_value_heads"] = 1
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": 32, "patch_size": 8}
    tile, longest, scale = 32, 64, 2
    if real:
        text_dims = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9}
        text_dims["num_key_value_heads"] = 3
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
        vision |= {"image_size": 512, "patch_size": 16}
        tile, longest, scale = 512, 2048, 4
    text = LlamaConfig(
        vocab_size=max(len(tokenizer), 49280 if real else 0),
        **text_dims,
        max_position_embeddings=2048,
        eos_token_id=eos,
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    config = SmolVLMConfig(
        vision_config=vision,
        text_config=text.to_dict(),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    _save(SmolVLMForConditionalGeneration(config), directory, real)
    tokenizer.save_pretrained(directory)
    SmolVLMImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": longest}, max_image_size={"longest_edge": tile}
    ).save_pretrained(directory)
    seq_len = (tile // vision["patch_size"]) ** 2 // scale**2
    (directory / "processor_config.json").write_text(
        json.dumps({"processor_class": "SmolVLMProcessor", "image_seq_len": seq_len})
    )
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": SMOLVLM_TEMPLATE}))
    chain = None
    if answer is not None:
        start = tokenizer.encode("\nAssistant:", add_special_tokens=False)[-1:]
        chain = answer_chain(start, tokenizer.encode(" " + answer, add_special_tokens=False), eos)
    _finish(directory, tokenizer, chain)
    return directory
