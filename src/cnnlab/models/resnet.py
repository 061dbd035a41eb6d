"""resnet family (to be written)."""
