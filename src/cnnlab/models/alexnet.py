"""alexnet family (to be written)."""
