"""Layer 5, how fast a model runs: which weights a model loads, fp32 or its INT8 copy, and the
records that justify the choice (``precision``); OpenVINO's options and compiled-model cache
(``openvino``); how many runs of one model go at once (``concurrency``, the run plans).

May import: ``models.common``, ``models.identity``, ``models.maths``, ``models.artifacts``.
(Making INT8 copies is ``models.quantization``, at the top: it needs whole models.)
"""
