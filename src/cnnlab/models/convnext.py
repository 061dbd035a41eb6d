"""convnext family (to be written)."""
