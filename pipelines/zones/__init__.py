"""Zones and lines: geometry, configuration, and per-track membership and crossings."""
