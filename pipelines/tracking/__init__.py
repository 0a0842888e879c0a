"""Multi-object tracking: a ByteTrack-style tracker in frame time (pure numpy + scipy)."""
