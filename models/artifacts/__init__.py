"""Layer 4, where a model's files come from and where they are stored.

The Roboflow API client (``api``); the cache primitives, locks and the legacy
``<project>/<version>/`` layout (``cache``); fetching legacy artifacts (``fetch``); reading an
artifact directory into ``ModelArtifacts`` (``artifact_loader``); the foundation core-model cache
(``core_cache``); the model packages of Roboflow's current registry and the ``inference-models``
layout (``packages``); deleting a model from every layout (``clear``).

May import: ``models.common``, ``models.identity``, ``models.maths``.
"""
