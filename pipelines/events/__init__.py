"""Events of tracked objects: the per-stream event builder, counts and snapshots."""
