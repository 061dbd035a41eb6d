"""The model zoo. Importing this package registers every family's builders (one module per family)."""

from cnnlab.layers.memory_format import prefers_channels_last, prepare_model
from cnnlab.models import (  # noqa: F401  (imported for their @register_model side effect)
    alexnet,
    convnext,
    densenet,
    efficientnet,
    inception,
    lenet,
    mobilenet,
    resnet,
    seg_heads,
    simple,
    unet,
    vgg,
    vit,
    yolo,
)
from cnnlab.models._base import ClassifierMixin, DefaultCfg
from cnnlab.models._registry import (
    get_model,
    get_model_builder,
    kwargs_for_input,
    list_models,
    register_model,
    small_input_sizes,
)

__all__ = [
    "ClassifierMixin",
    "DefaultCfg",
    "get_model",
    "get_model_builder",
    "kwargs_for_input",
    "small_input_sizes",
    "list_models",
    "prefers_channels_last",
    "prepare_model",
    "register_model",
]
