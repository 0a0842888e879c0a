"""Make the INT8 copy that ships with ``builtin/shapes-v1`` (``weights.int8.onnx`` + ``weights.int8.json``).

    python -m tools.quantize_builtin

The same as ``edge-agent models quantize builtin/shapes-v1`` with its defaults (200 frames of the
bundled sample clip, a quarter held out, threshold 0.98), on the CPU provider, but written into the
package directory instead of MODEL_CACHE_DIR/.quantized/. Run it again whenever weights.onnx changes:
a copy whose record names other fp32 weights is never used.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edge_agent.models.identity.ids import BUILTIN_ROOT


def main(argv: list[str] | None = None) -> int:
    from edge_agent.models.common.errors import EdgeAgentError
    from edge_agent.models.common.settings import load_model_settings, set_model_settings
    from edge_agent.models.quantization.quantize import quantize_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="shapes-v1", help="built-in model directory name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_model_settings(load_model_settings(onnxruntime_execution_providers="cpu"))
    try:
        result = quantize_model(
            f"builtin/{args.name}", destination=BUILTIN_ROOT / args.name, status=lambda text: print(text, flush=True)
        )
    except EdgeAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    acc = result.record.accuracy
    print(f"wrote {result.weights_path} and {result.record_path}: mAP@0.5 {acc.map50} against fp32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
