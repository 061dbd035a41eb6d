"""The model registry: ``@register_model`` builders, :func:`get_model` and :func:`list_models`.

Shaped like torchvision's: each architecture family lives in its own module and registers its public
builders with a decorator; the registry refuses duplicate names so two families can never shadow each
other silently, and an unknown name is answered with the closest valid names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from cnnlab.errors import UnknownNameError

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a model builder under its function name (or ``name``).

    Example::

        @register_model
        def resnet18(*, num_classes=1000, in_chans=3, **kwargs): ...
    """

    def wrap(f: F) -> F:
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(
                f"model name '{key}' is already registered by {_MODELS[key].__module__}"
            )
        _MODELS[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the package registers every family; done lazily to avoid an import cycle.
    import cnnlab.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally filtered by a glob such as ``"resnet*"``."""
    _ensure_loaded()
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; raises :class:`UnknownNameError` with close matches."""
    _ensure_loaded()
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, _MODELS) from None


def builder_options(name: str) -> list[str]:
    """The keyword options model ``name``'s builder takes (through to its class when the builder
    passes ``**kwargs`` on), for error messages that list the valid choices."""
    import inspect

    builder = get_model_builder(name)
    sig = inspect.signature(builder)
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        ret = sig.return_annotation
        cls = builder.__globals__.get(ret) if isinstance(ret, str) else ret
        if inspect.isclass(cls):
            init = inspect.signature(cls.__init__).parameters.values()
            names += [
                p.name
                for p in init
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
    return sorted(set(names))


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Keyword arguments go to the builder: ``num_classes``, ``in_chans`` and family-specific options.
    ``pretrained=PATH`` loads local weights (never downloads): a ``.safetensors`` / ``.pth`` file,
    a cnnlab run, or a timm / Hugging Face folder, whose exactness options (such as Hugging Face
    EfficientNet's ``tf_padding=True``) are filled in unless given. Example::

        model = get_model("resnet18", num_classes=10, in_chans=1, small_input=True)
        model = get_model("convnext_tiny", num_classes=5, pretrained="hub/convnext-tiny-224")
    """
    pretrained = kwargs.pop("pretrained", None)
    if pretrained:
        from cnnlab.models.pretrained import builder_defaults  # lazy: pretrained imports the zoo

        for key, value in builder_defaults(pretrained, name).items():
            kwargs.setdefault(key, value)
    model = get_model_builder(name)(**kwargs)
    # Record how the model was built so a checkpoint can rebuild it with no code from the run.
    model.cnnlab_arch = {"name": name, "kwargs": dict(kwargs)}
    if pretrained:
        from cnnlab.models.pretrained import load_pretrained

        load_pretrained(model, pretrained)
    return model


def small_input_sizes(name: str, **kwargs: Any) -> tuple[int, int] | None:
    """(standard minimum, small-input minimum) image size of a family with a small-input stem
    (ResNet's ``small_input``), or None for a family without one (or when ``kwargs`` chose)."""
    if "small_input" in kwargs:
        return None
    builder = get_model_builder(name)
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = builder(**kwargs)
            cfg = getattr(model, "default_cfg", None)
            if cfg is None or getattr(model, "small_input", None) is not False:
                return None
            small = builder(**kwargs, small_input=True)
    except Exception:  # noqa: BLE001 - a builder that cannot say keeps its own error for later
        return None
    return cfg.min_size, small.default_cfg.min_size


def kwargs_for_input(name: str, size: int, **kwargs: Any) -> dict[str, Any]:
    """Builder options that let model ``name`` take ``size``-pixel images its standard form
    refuses: ``{"small_input": True}`` for a family with a small-input stem (ResNet: a 3x3
    stride-1 convolution instead of the 7x7/2 stem and max-pool) when ``size`` is below the
    standard minimum, else ``{}`` (it fits, the family has no such variant, or ``kwargs``
    already chose). This is what lets the course's ``--model resnet18 --data digits`` (28 px)
    run as written. Example::

        >>> kwargs_for_input("resnet18", 28), kwargs_for_input("resnet18", 224)
        ({'small_input': True}, {})
    """
    sizes = small_input_sizes(name, **kwargs)
    if sizes is None:
        return {}
    standard, small = sizes
    return {"small_input": True} if small <= size < standard else {}
