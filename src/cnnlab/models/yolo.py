"""yolo family (to be written)."""
