"""What differs between the vision-language families: model class, processor, prompt, decoding.

One small class per family, each following Roboflow's model class for it (the fact sheet's
§10-§13), with three deliberate differences listed in the README: pictures go in as RGB (Roboflow's
current stack flips numpy input it takes to be BGR, but its legacy stack fed BGR as RGB), an unset
``max_new_tokens`` means the family's default (Roboflow let ``None`` through to ``generate``, which
then fell back to the checkpoint's own limit), and SmolVLM2's answer is the new text only (the
legacy class returned the whole chat transcript).

Qwen2.5-VL's and SmolVLM's processor classes want a video processor, which needs torchvision;
an edge box has the CPU torch wheel and no torchvision, so their processors are built here from
the image processor (``preprocessor_config.json``), the tokenizer and the chat template, with the
same library classes (:func:`_image_processor` picks the PIL back end).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.models.common.errors import CacheIntegrityError, InvalidInputError
from edge_agent.models.foundation import florence2


@dataclass(frozen=True)
class Decoded:
    response: str | dict[str, Any]
    new_tokens: int


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheIntegrityError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CacheIntegrityError(f"{path} is not a JSON object")
    return value


def _image_processor(directory: Path, default_class: str, force: bool = False) -> Any:
    """The checkpoint's image processor on the PIL back end (no torchvision needed)."""
    import transformers

    config_path = directory / "preprocessor_config.json"
    if config_path.is_file():
        config = _read_json(config_path)
    elif (directory / "processor_config.json").is_file():
        config = dict(_read_json(directory / "processor_config.json").get("image_processor") or {})
    else:
        raise CacheIntegrityError(f"{directory} has no preprocessor_config.json")
    name = default_class if force else str(config.get("image_processor_type") or default_class).removesuffix("Fast")
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name, None)
    if cls is None:
        raise CacheIntegrityError(f"{config_path}: this transformers has no image processor {name}")
    kwargs = {
        k: v for k, v in config.items() if k not in ("image_processor_type", "processor_class", "_processor_class")
    }
    return cls(**kwargs)


def _tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CacheIntegrityError(f"{directory} holds no loadable tokenizer: {exc}") from exc


def _chat_template(directory: Path, tokenizer: Any) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        path = directory / name
        if path.is_file():
            if name.endswith(".json"):
                template = _read_json(path).get("chat_template")
                return template if isinstance(template, str) else None
            return path.read_text(encoding="utf-8")
    return getattr(tokenizer, "chat_template", None)


class ImageOnlyProcessor:
    """A processor for one image and one text, for families whose library processor also wants a
    video processor (torchvision): the image processor's tensors, and the text with the image
    placeholder expanded to the image's tokens (``expand``), tokenised."""

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any,
        chat_template: str | None,
        placeholder: str,
        expand: Callable[[dict[str, Any]], str],
        image_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.placeholder = placeholder
        self._expand = expand
        self._image_kwargs = dict(image_kwargs or {})

    def __call__(self, text: str, image: Any) -> dict[str, Any]:
        if text.count(self.placeholder) != 1:
            raise InvalidInputError(f"the prompt must hold exactly one {self.placeholder} (the picture)")
        pictures = dict(self.image_processor(images=[image], return_tensors="pt", **self._image_kwargs))
        text = text.replace(self.placeholder, self._expand(pictures))
        encoded = dict(self.tokenizer([text], return_tensors="pt", add_special_tokens=False))
        pictures = {k: v for k, v in pictures.items() if k not in ("rows", "cols")}
        return {**encoded, **pictures}


def qwen_image_tokens(image_processor: Any, token: str) -> Callable[[dict[str, Any]], str]:
    """Qwen2-VL: one token per ``merge_size`` x ``merge_size`` block of 14 px patches."""

    def expand(pictures: dict[str, Any]) -> str:
        grid = pictures["image_grid_thw"][0]
        return token * (int(grid.prod()) // int(image_processor.merge_size) ** 2)

    return expand


def smolvlm_image_tokens(tokenizer: Any, image_seq_len: int) -> Callable[[dict[str, Any]], str]:
    """SmolVLM (Idefics3): per tile ``<fake_token_around_image><row_r_col_c>`` + image tokens, then the
    global image (the library's own prompt-string function)."""
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    def expand(pictures: dict[str, Any]) -> str:
        return str(
            get_image_prompt_string(
                int(pictures["rows"][0][0]),
                int(pictures["cols"][0][0]),
                image_seq_len,
                fake_token_around_image=getattr(tokenizer, "fake_image_token", None) or "<fake_token_around_image>",
                image_token=getattr(tokenizer, "image_token", None) or "<image>",
                global_image_token=getattr(tokenizer, "global_image_token", None) or "<global-img>",
            )
        )

    return expand


class VLMFamily(ABC):
    """A family's model class, processor, prompt assembly and decoding."""

    name: ClassVar[str]
    default_prompt: ClassVar[str]
    max_new_tokens: ClassVar[int]
    #: decoder-only models return the prompt's tokens before the answer's
    generation_includes_input: ClassVar[bool] = True
    skip_special_tokens: ClassVar[bool] = True

    @abstractmethod
    def model_class(self) -> Any: ...

    @abstractmethod
    def load_processor(self, directory: Path) -> Any: ...

    @abstractmethod
    def inputs(self, processor: Any, image: Any, prompt: str) -> dict[str, Any]:
        """Tensors for ``generate`` from one RGB PIL image and the request's prompt."""

    def new_tokens(self, ids: Any, inputs: dict[str, Any]) -> Any:
        """The answer's token ids from ``generate``'s output row (input sliced off for decoder-only)."""
        # encoder-decoder output starts with the decoder's start token, which was not generated
        return ids[inputs["input_ids"].shape[1] :] if self.generation_includes_input else ids[1:]

    def decode(self, processor: Any, tokens: Any, prompt: str, size: tuple[int, int]) -> str | dict[str, Any]:
        return str(processor.tokenizer.decode(tokens, skip_special_tokens=self.skip_special_tokens)).strip()


class Florence2Family(VLMFamily):
    """Florence-2 (§10): a task token (+ text) as prompt, answers parsed into a dict keyed by the task."""

    name = "florence-2"
    default_prompt = "<CAPTION>"
    max_new_tokens = 1000  # Roboflow's legacy TransformerModel limit
    generation_includes_input = False
    skip_special_tokens = False  # the <loc_N> tokens carry the boxes

    def model_class(self) -> Any:
        from transformers import Florence2ForConditionalGeneration

        return Florence2ForConditionalGeneration

    def load_processor(self, directory: Path) -> Any:
        from transformers import Florence2Processor

        tokenizer = _tokenizer(directory)
        if getattr(tokenizer, "image_token", None) is None:
            raise CacheIntegrityError(f"{directory}: the tokenizer declares no image_token (not a Florence-2 one)")
        config = {}
        if (directory / "processor_config.json").is_file():
            config = _read_json(directory / "processor_config.json")
        return Florence2Processor(
            image_processor=_image_processor(directory, "CLIPImageProcessor"),
            tokenizer=tokenizer,
            num_additional_image_tokens=int(config.get("num_additional_image_tokens", 0)),
            post_processor_config=config.get("post_processor_config") or {},
        )

    def inputs(self, processor: Any, image: Any, prompt: str) -> dict[str, Any]:
        task = florence2.task_of(prompt)
        if not prompt.startswith("<") or task not in florence2.TASK_PARSING:
            raise InvalidInputError(
                f"a Florence-2 prompt starts with a task token ({', '.join(florence2.TASK_PARSING)}), got {prompt!r}"
            )
        try:
            return dict(processor(text=prompt, images=image, return_tensors="pt"))
        except ValueError as exc:  # e.g. text after a task token that takes none
            raise InvalidInputError(f"Florence-2 prompt {prompt!r}: {exc}") from None

    def decode(self, processor: Any, tokens: Any, prompt: str, size: tuple[int, int]) -> str | dict[str, Any]:
        text = processor.tokenizer.decode(tokens, skip_special_tokens=False)
        return florence2.parse_answer(text, florence2.task_of(prompt), size)


class PaliGemmaFamily(VLMFamily):
    """PaliGemma and PaliGemma 2 (§11): the raw prompt; the processor adds the image tokens."""

    name = "paligemma"
    default_prompt = "caption en"
    max_new_tokens = 400

    def model_class(self) -> Any:
        from transformers import PaliGemmaForConditionalGeneration

        return PaliGemmaForConditionalGeneration

    def load_processor(self, directory: Path) -> Any:
        from transformers import PaliGemmaProcessor

        return PaliGemmaProcessor(
            image_processor=_image_processor(directory, "SiglipImageProcessor"), tokenizer=_tokenizer(directory)
        )

    def inputs(self, processor: Any, image: Any, prompt: str) -> dict[str, Any]:
        return dict(processor(text=prompt, images=image, return_tensors="pt"))


class _ChatFamily(VLMFamily):
    """Families prompted through a chat template with an image item."""

    def messages(self, prompt: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

    def chat_text(self, processor: Any, prompt: str) -> str:
        template = processor.chat_template
        if not template:
            raise CacheIntegrityError(f"{self.name}: the checkpoint has no chat template")
        return str(
            processor.tokenizer.apply_chat_template(
                self.messages(prompt), chat_template=template, add_generation_prompt=True, tokenize=False
            )
        )


class Qwen25VLFamily(_ChatFamily):
    """Qwen2.5-VL (§12): ``user text<system_prompt>system text``, a system + user chat."""

    name = "qwen2.5-vl"
    default_prompt = "Describe what's in this image."
    default_system = "You are a Qwen2.5-VL model that can answer questions about any image."
    max_new_tokens = 512

    def model_class(self) -> Any:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def load_processor(self, directory: Path) -> Any:
        tokenizer = _tokenizer(directory)
        # Roboflow forces Qwen2VLImageProcessor whatever preprocessor_config.json names
        image_processor = _image_processor(directory, "Qwen2VLImageProcessor", force=True)
        token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        template = _chat_template(directory, tokenizer)
        return ImageOnlyProcessor(
            image_processor, tokenizer, template, token, qwen_image_tokens(image_processor, token)
        )

    def split(self, prompt: str) -> tuple[str, str]:
        user, _, system = prompt.partition("<system_prompt>")
        return user.strip() or self.default_prompt, system.strip() or self.default_system

    def messages(self, prompt: str) -> list[dict[str, Any]]:
        user, system = self.split(prompt)
        return [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]},
        ]

    def inputs(self, processor: Any, image: Any, prompt: str) -> dict[str, Any]:
        return dict(processor(self.chat_text(processor, prompt), image))

    def decode(self, processor: Any, tokens: Any, prompt: str, size: tuple[int, int]) -> str | dict[str, Any]:
        text = str(processor.tokenizer.decode(tokens, skip_special_tokens=True))
        # Roboflow strips these two leftovers of Qwen's template from the answer
        return text.replace("assistant\n", "").replace(" addCriterion\n", "").strip()


class SmolVLMFamily(_ChatFamily):
    """SmolVLM2 (§13): a user turn ``[image, text]``; the answer is the new text only."""

    name = "smolvlm2"
    default_prompt = "Describe what's in this image."
    max_new_tokens = 400

    def model_class(self) -> Any:
        from transformers import SmolVLMForConditionalGeneration

        return SmolVLMForConditionalGeneration

    def load_processor(self, directory: Path) -> Any:
        tokenizer = _tokenizer(directory)
        config = (
            _read_json(directory / "processor_config.json") if (directory / "processor_config.json").is_file() else {}
        )
        image_seq_len = int(config.get("image_seq_len", 169))
        return ImageOnlyProcessor(
            _image_processor(directory, "SmolVLMImageProcessor"),
            tokenizer,
            _chat_template(directory, tokenizer),
            getattr(tokenizer, "image_token", None) or "<image>",
            smolvlm_image_tokens(tokenizer, image_seq_len),
            {"return_row_col_info": True},
        )

    def inputs(self, processor: Any, image: Any, prompt: str) -> dict[str, Any]:
        return dict(processor(self.chat_text(processor, prompt), image))

    def decode(self, processor: Any, tokens: Any, prompt: str, size: tuple[int, int]) -> str | dict[str, Any]:
        text = str(processor.tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        # a checkpoint whose template leaves the speaker's tag in the answer
        return text.removeprefix("Assistant:").strip()


FLORENCE2 = Florence2Family()
PALIGEMMA = PaliGemmaFamily()
QWEN25VL = Qwen25VLFamily()
SMOLVLM = SmolVLMFamily()

# Roboflow model types -> (family, its flag in ModelSettings, whether the type is a LoRA fine-tune)
MODEL_TYPES: dict[str, tuple[VLMFamily, str, bool]] = {
    **{
        f"florence-2-{s}{p}": (FLORENCE2, "florence2_enabled", bool(p))
        for s in ("base", "large")
        for p in ("", "-peft")
    },
    **{
        f"{name}-3b-pt-{r}{p}": (PALIGEMMA, "paligemma_enabled", bool(p))
        for name in ("paligemma", "paligemma2")
        for r in (224, 448, 896)
        for p in ("", "-peft")
    },
    "paligemma": (PALIGEMMA, "paligemma_enabled", False),
    "paligemma-2": (PALIGEMMA, "paligemma_enabled", False),
    "qwen25-vl-7b": (QWEN25VL, "qwen_2_5_enabled", False),
    "qwen25-vl-7b-peft": (QWEN25VL, "qwen_2_5_enabled", True),
    "qwen25vl": (QWEN25VL, "qwen_2_5_enabled", False),
    "smolvlm-2.2b-instruct": (SMOLVLM, "smolvlm2_enabled", False),
    "smolvlm2-peft": (SMOLVLM, "smolvlm2_enabled", True),
    "smolvlm-256m-peft": (SMOLVLM, "smolvlm2_enabled", True),
    "smolvlm-v2": (SMOLVLM, "smolvlm2_enabled", False),
    "florence-2": (FLORENCE2, "florence2_enabled", False),
}


# config.json's model_type of a Hugging Face checkpoint -> the Roboflow model type it runs as
HF_MODEL_TYPES = {
    "florence2": "florence-2",
    "paligemma": "paligemma",
    "qwen2_5_vl": "qwen25vl",
    "smolvlm": "smolvlm-v2",
}


def is_vlm_type(model_type: str) -> bool:
    return model_type in MODEL_TYPES


def hf_checkpoint_type(directory: Path) -> tuple[str, str] | None:
    """("lmm", type) of a local Hugging Face vision-language checkpoint without model_type.json."""
    config = directory / "config.json"
    if not config.is_file():
        return None
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return ("lmm", HF_MODEL_TYPES[kind]) if kind in HF_MODEL_TYPES else None
