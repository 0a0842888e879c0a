"""CLIP's text tokenizer: byte-level BPE over OpenAI's 49,408-token vocabulary, context 77.

It comes from the ``instant-clip-tokenizer`` wheel (the ``edge-agent[clip]`` extra): a maintained
Rust implementation, aiming at exact compatibility with OpenAI's ``clip.tokenize``, that ships
CLIP's vocabulary inside the wheel, so it works offline and needs no torch. Like ``clip.tokenize``
with ``truncate=False``, a text longer than the context is an error, not silently cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, MissingExtraError

CONTEXT_LENGTH = 77


class ClipTokenizer:
    def __init__(self, what: str = "CLIP") -> None:
        try:
            from instant_clip_tokenizer import Tokenizer
        except ImportError:
            raise MissingExtraError(what, "clip", "instant-clip-tokenizer") from None
        self._tokenizer: Any = Tokenizer()

    def __call__(self, texts: list[str], dtype: Any = np.int64) -> np.ndarray:
        """(len(texts), 77) token ids: start, BPE tokens, end, zero padding."""
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"CLIP prompts must be strings, got {type(text).__name__}")
            count = len(self._tokenizer.encode(text)) + 2
            if count > CONTEXT_LENGTH:
                raise InvalidInputError(
                    f"the text {text[:40]!r}... is {count} tokens long; CLIP reads at most {CONTEXT_LENGTH} "
                    f"(start and end tokens included)"
                )
        tokens = self._tokenizer.tokenize_batch(list(texts), CONTEXT_LENGTH)
        return np.asarray(tokens).astype(dtype)
