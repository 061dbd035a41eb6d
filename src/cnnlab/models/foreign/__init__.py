"""Weights from timm and Hugging Face (and back), offline, onto cnnlab's torchvision-named zoo.

``read_foreign(path)`` detects what a path holds (a timm folder or file, a Hugging Face folder, a
torchvision state dict, a bare safetensors file with ``arch=``), unwraps training containers, strips
wrapper prefixes and reads labels and preprocessing; ``convert(ckpt)`` builds the matching zoo
model and maps every tensor onto it, with a :class:`ForeignReport`. Reading needs only safetensors,
json and torch (pickles through ``torch.load(weights_only=True)``): timm and transformers are never
imported here, and nothing is downloaded.

Example::

    from cnnlab.models.foreign import convert, read_foreign
    model, report = convert(read_foreign("hub/convnext_tiny.fb_in1k"))
    print(report)  # timm convnext_tiny -> cnnlab convnext_tiny: copied 178, adapted 18, ...
"""

from cnnlab.models.foreign.convert import ForeignReport, convert, foreign_state, mapped_state
from cnnlab.models.foreign.detect import (
    ForeignCheckpoint,
    detect_flavour,
    read_foreign,
    read_target,
)
from cnnlab.models.foreign.files import read_tensor_file
from cnnlab.models.foreign.preprocessing import Preprocessing, from_run_config
from cnnlab.models.foreign.specs import (
    SUPPORTED_HF,
    TIMM_ARCHS,
    Target,
    hf_config_for,
    supported_timm,
    timm_arch_for,
)

__all__ = [
    "SUPPORTED_HF",
    "TIMM_ARCHS",
    "ForeignCheckpoint",
    "ForeignReport",
    "Preprocessing",
    "Target",
    "convert",
    "detect_flavour",
    "foreign_state",
    "from_run_config",
    "hf_config_for",
    "mapped_state",
    "read_foreign",
    "read_target",
    "read_tensor_file",
    "supported_timm",
    "timm_arch_for",
]
