"""Thin per-hardware-class shims around the portable edge_min core."""
