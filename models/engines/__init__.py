"""Runtimes that execute a network: they own sessions, devices, input names and the batch axis.

An engine knows nothing of images, classes or boxes; a task (``models.tasks``) takes any engine.
"""

from edge_agent.models.engines.base import Engine, TensorSpec

__all__ = ["Engine", "TensorSpec"]
