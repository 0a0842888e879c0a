"""Small CLIP-shaped ONNX models (real CLIP weights cannot be had offline), with numpy references.

* visual: ``(B, 3, R, R)`` -> per-channel means (3) and 2x2 quadrant means (12) -> ``@ W`` -> ``(B, D)``;
* textual: ``(B, 77)`` token ids -> embedding table lookup -> mean over the 77 positions -> ``(B, D)``.

``W``'s first three output dims copy the channel means, and the table maps the tokens of "red",
"green" and "blue" to those dims, so a red frame's best prompt is the red one: zero-shot must
work through the real tokenizer, not only produce numbers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_factory import IR_VERSION, OPSET

VOCAB = 49408
DIM = 15
COLOUR_WORDS = ("red", "green", "blue")


def _save(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def visual_weights(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.1, (15, DIM)).astype(np.float32)
    w[:3, :3] += np.eye(3, dtype=np.float32) * 3.0
    return w


def visual_model(resolution: int = 64, seed: int = 0) -> bytes:
    half = resolution // 2
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["chan"], axes=[2, 3], keepdims=0),  # (B, 3)
        helper.make_node("AveragePool", ["images"], ["quad"], kernel_shape=[half, half], strides=[half, half]),
        helper.make_node("Flatten", ["quad"], ["quad_flat"], axis=1),  # (B, 12)
        helper.make_node("Concat", ["chan", "quad_flat"], ["features"], axis=1),  # (B, 15)
        helper.make_node("MatMul", ["features", "w"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_visual_test",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, resolution, resolution])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(visual_weights(seed), "w")],
    )
    return _save(graph)


def visual_reference(batch: np.ndarray, seed: int = 0) -> np.ndarray:
    """What ``visual_model`` computes, in numpy, for a pre-processed (B, 3, R, R) batch."""
    b, _, r, _ = batch.shape
    half = r // 2
    chan = batch.mean(axis=(2, 3))
    quads = batch.reshape(b, 3, 2, half, 2, half).mean(axis=(3, 5)).reshape(b, 12)
    return np.concatenate([chan, quads], axis=1) @ visual_weights(seed)


def text_table(token_of: dict[str, int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = rng.normal(0, 0.01, (VOCAB, DIM)).astype(np.float32)
    for axis, word in enumerate(COLOUR_WORDS):
        table[token_of[word]] = 0.0
        table[token_of[word], axis] = 77.0
    return table


def textual_model(table: np.ndarray, dtype: int = TensorProto.INT64) -> bytes:
    nodes = [
        helper.make_node("Cast", ["tokens"], ["tokens64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "tokens64"], ["looked_up"], axis=0),  # (B, 77, D)
        helper.make_node("ReduceMean", ["looked_up"], ["embeddings"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_textual_test",
        [helper.make_tensor_value_info("tokens", dtype, ["batch", 77])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    return _save(graph)


def colour_tokens() -> dict[str, int]:
    from instant_clip_tokenizer import Tokenizer

    tokenizer = Tokenizer()
    out = {}
    for word in COLOUR_WORDS:
        (token,) = tokenizer.encode(word)
        out[word] = token
    return out
