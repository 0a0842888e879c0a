"""CLIP's text tokenizer: byte-level BPE over OpenAI's 49,408-token vocabulary, context 77.

It comes from the ``instant-clip-tokenizer`` wheel (the ``edge-agent[clip]`` extra): a maintained
Rust implementation, aiming at exact compatibility with OpenAI's ``clip.tokenize``, that ships
CLIP's vocabulary inside the wheel, so it works offline and needs no torch. Like ``clip.tokenize``
with ``truncate=False``, a text longer than the context is an error, not silently cut.

A model that ships its own copy of the vocabulary (SAM3's ``bpe_simple_vocab_16e6.txt.gz``, OpenAI's
file as it is) is tokenized with that file, in that model's context length.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import InvalidInputError, MissingExtraError, ModelArtifactsError

CONTEXT_LENGTH = 77
#: OpenAI's vocabulary size: 512 byte tokens, 48,894 merges, start and end of text
VOCABULARY_SIZE = 49408


class ClipTokenizer:
    def __init__(
        self,
        what: str = "CLIP",
        vocabulary: Path | None = None,
        context_length: int = CONTEXT_LENGTH,
        extra: str = "clip",
    ) -> None:
        """``vocabulary``: an OpenAI BPE merges file (``.txt`` or ``.txt.gz``) instead of the wheel's."""
        try:
            from instant_clip_tokenizer import Tokenizer
        except ImportError:
            raise MissingExtraError(what, extra, "instant-clip-tokenizer") from None
        self.what = what
        self.context_length = context_length
        self._tokenizer: Any = Tokenizer() if vocabulary is None else _load_vocabulary(Tokenizer, vocabulary)

    @property
    def start_of_text(self) -> int:
        return int(self._tokenizer.start_of_text())

    @property
    def end_of_text(self) -> int:
        return int(self._tokenizer.end_of_text())

    def __call__(self, texts: list[str], dtype: Any = np.int64) -> np.ndarray:
        """(len(texts), context) token ids: start, BPE tokens, end, zero padding."""
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"{self.what} prompts must be strings, got {type(text).__name__}")
            count = len(self._tokenizer.encode(text)) + 2
            if count > self.context_length:
                raise InvalidInputError(
                    f"the text {text[:40]!r}... is {count} tokens long; {self.what} reads at most "
                    f"{self.context_length} (start and end tokens included)"
                )
        tokens = self._tokenizer.tokenize_batch(list(texts), self.context_length)
        return np.asarray(tokens).astype(dtype)


def _load_vocabulary(tokenizer_class: Any, path: Path) -> Any:
    """instant-clip-tokenizer reads a plain merges file; a gzipped one is unpacked to a temporary copy."""
    try:
        if not str(path).endswith(".gz"):
            return tokenizer_class.load(str(path), VOCABULARY_SIZE)
        with gzip.open(path, "rb") as packed:
            data = packed.read()
        handle, name = tempfile.mkstemp(suffix=".txt")
        try:
            with os.fdopen(handle, "wb") as plain:
                plain.write(data)
            return tokenizer_class.load(name, VOCABULARY_SIZE)
        finally:
            os.unlink(name)
    except (OSError, EOFError, ValueError, RuntimeError) as exc:
        raise ModelArtifactsError(path, f"is not a BPE vocabulary ({type(exc).__name__}: {exc})") from None
