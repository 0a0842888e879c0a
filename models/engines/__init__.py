"""Layer 6, runtimes that execute a network: they own sessions, devices, input names and the batch axis.

ONNX Runtime and TorchScript engines (``onnx``, ``torch``), picking one for a weights file
(``factory``), execution providers and their options (``providers``) and what this box can run
(``box``: GPUs, providers, torch; package selection asks it). An engine knows nothing of images,
classes or boxes; a task (``models.tasks``) takes any engine.

May import: ``models.common``, ``models.identity``, ``models.maths``, ``models.artifacts``,
``models.speed``.
"""

from edge_agent.models.engines.base import Engine, TensorSpec

__all__ = ["Engine", "TensorSpec"]
