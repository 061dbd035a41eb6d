"""cnnlab: convolutional neural networks, from the arithmetic to a served model.

The public API in one place::

    import cnnlab
    model = cnnlab.get_model("resnet18", num_classes=10)
    predictor = cnnlab.load("runs/my-run")
    predictor.predict(["cat.png"])
"""

from __future__ import annotations

from typing import Any

from cnnlab._version import __version__

__all__ = ["__version__", "get_model", "list_models", "load"]


def __getattr__(name: str) -> Any:
    # Lazy attributes keep `import cnnlab` (and so the CLI's start-up) cheap.
    if name in ("get_model", "list_models"):
        from cnnlab import models

        return getattr(models, name)
    if name == "load":
        from cnnlab.deploy.predictor import load

        return load
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
