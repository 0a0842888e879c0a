"""Stream sources: URL parsing, per-stream options, the PyAV reader thread and its runner."""

from pipelines.sources.options import SourceOptions
from pipelines.sources.runner import StreamRunner, StreamStats
from pipelines.sources.spec import SourceSpec

__all__ = ["SourceOptions", "SourceSpec", "StreamRunner", "StreamStats"]
