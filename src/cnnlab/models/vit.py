"""vit family (to be written)."""
