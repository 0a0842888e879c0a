"""Layer 10, making INT8 copies (``edge-agent models quantize``): calibration frames
(``calibration``), the graph rewrites that keep INT8 accurate (``softmax_rewrite``) and the
quantize-and-check command itself (``quantize``), which loads the fp32 model through the registry.

May import: every other ``models`` subpackage.
"""
