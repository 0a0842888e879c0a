"""Layer 8, tier-2 foundation models (``family/variant`` ids): CLIP embeddings and zero-shot, PP-OCR.

CLIP's weights come from ``/core_model/clip/<variant>`` into the legacy cache layout; PP-OCR's
detection and recognition packages come from the package registry, as Roboflow's current stack
fetches them. Each family's optional runtime is an extra (``edge-agent[clip]``, ``edge-agent[ocr]``).
The core-model cache is ``models.artifacts.core_cache``; which family an id names and how its
model is built is ``models.resolution.foundation_loader``.

May import: ``models.common`` .. ``models.tasks`` (everything below it).
"""
