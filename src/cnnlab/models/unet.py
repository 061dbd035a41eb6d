"""unet family (to be written)."""
