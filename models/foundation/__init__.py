"""Tier-2 foundation models (``family/variant`` ids): CLIP embeddings and zero-shot, PP-OCR.

CLIP's weights come from ``/core_model/clip/<variant>`` into the legacy cache layout; PP-OCR's
detection and recognition packages come from the package registry, as Roboflow's current stack
fetches them. Each family's optional runtime is an extra (``edge-agent[clip]``, ``edge-agent[ocr]``).
"""
