"""The package version, in a module of its own so every layer can read it without importing the
lazy top-level ``cnnlab`` namespace (which reaches up to the predictor)."""

__version__ = "0.1.0"
