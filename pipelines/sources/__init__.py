"""Stream sources: URL parsing, per-stream options, the PyAV reader thread and its runner."""

from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.runner import StreamRunner, StreamStats
from edge_agent.pipelines.sources.spec import SourceSpec

__all__ = ["SourceOptions", "SourceSpec", "StreamRunner", "StreamStats"]
