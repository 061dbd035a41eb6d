"""Weight-name mappings between timm / Hugging Face models and cnnlab's (torchvision-named) zoo.

A mapping is a list of :class:`Link`: one cnnlab key, the foreign key(s) it comes from and how the
tensor changes on the way. The same links run backwards for export, so each architecture's
correspondence is written once. Two styles, chosen per family:

* **renames** (ResNet, ConvNeXt, ViT): a regular expression per module, because the two libraries
  order their modules differently (Hugging Face's bottleneck registers its shortcut first);
* **aligned order** (MobileNet v2/v3, EfficientNet): both libraries register the same layers in the
  same forward order (stem, blocks with expand → depthwise → SE → project, head), only the names and
  the block grouping differ, so the i-th tensor of one is the i-th of the other. Every pair is still
  checked: same parameter kind (``weight``/``running_var``…) and same shape, or the import fails.

Tensor changes are exact: ``reshape`` (a 1x1 conv head ↔ a linear layer, ``gamma`` (C,) ↔
``layer_scale`` (C, 1, 1)), ``concat`` (Hugging Face ViT's separate q/k/v ↔ the fused in-projection)
and ``bn_eps`` (two BatchNorms with different ``eps`` give the same output when the running variance
is shifted by the difference: ``sqrt(var + eps_a) == sqrt((var + eps_a - eps_b) + eps_b)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.errors import RunError
from cnnlab.models.foreign.files import listing

SKIP_SUFFIX = "num_batches_tracked"  # a step counter, not a weight; neither side needs it


@dataclass(frozen=True)
class Link:
    """cnnlab key ``target`` made from foreign ``sources``; ``how`` is copy/reshape/concat/bn_eps."""

    target: str
    sources: tuple[str, ...]
    how: str = "copy"
    shift: float = 0.0  # bn_eps: target running_var = source running_var + shift

    def forward(self, tensors: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
        """The cnnlab tensor (of ``shape``) from the foreign tensors."""
        if self.how == "concat":
            return torch.cat(tensors, 0)
        t = tensors[0]
        if self.how == "bn_eps":
            return t + self.shift
        return t.reshape(shape) if self.how == "reshape" else t

    def backward(self, tensor: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
        """The foreign tensors (of ``shapes``) from the cnnlab tensor."""
        if self.how == "concat":
            return list(torch.split(tensor, [s[0] for s in shapes], 0))
        if self.how == "bn_eps":
            return [tensor - self.shift]
        return [tensor.reshape(shapes[0]) if self.how == "reshape" else tensor]


# -- renames ------------------------------------------------------------------------------------

Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _rules(*pairs: tuple[str, str | Callable[[re.Match], str]]) -> list[Rule]:
    out: list[Rule] = []
    for pattern, repl in pairs:
        fn = repl if callable(repl) else (lambda m, r=repl: m.expand(r))
        out.append((re.compile(f"^{pattern}$"), fn))
    return out


def _block_part(rules: list[Rule]) -> Callable[[str], str | None]:
    """A rename function: the first matching rule's replacement, or None (an unexpected key)."""

    def rename(key: str) -> str | None:
        for pattern, fn in rules:
            m = pattern.match(key)
            if m:
                return fn(m)
        return None

    return rename


_CONVNEXT_PARTS = {
    "timm": {"conv_dw": "block.0", "norm": "block.2", "mlp.fc1": "block.3", "mlp.fc2": "block.5"},
    "hf": {"dwconv": "block.0", "layernorm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5"},
}


def _convnext_rename(flavour: str) -> Callable[[str], str | None]:
    """ConvNeXt stage S holds its downsampler (features.2S) and its blocks (features.2S+1)."""
    parts = _CONVNEXT_PARTS[flavour]
    part_re = "|".join(re.escape(p) for p in parts)
    if flavour == "timm":
        stages, down, blocks, gamma = r"stages", "downsample", "blocks", "gamma"
        outer = [
            (r"stem\.0\.(weight|bias)", r"features.0.0.\1"),
            (r"stem\.1\.(weight|bias)", r"features.0.1.\1"),
            (r"head\.norm\.(weight|bias)", r"classifier.0.\1"),
            (r"head\.fc\.(weight|bias)", r"classifier.2.\1"),
        ]
    else:
        stages, down, blocks = r"convnext\.encoder\.stages", "downsampling_layer", "layers"
        gamma = "layer_scale_parameter"
        outer = [
            (r"convnext\.embeddings\.patch_embeddings\.(weight|bias)", r"features.0.0.\1"),
            (r"convnext\.embeddings\.layernorm\.(weight|bias)", r"features.0.1.\1"),
            (r"convnext\.layernorm\.(weight|bias)", r"classifier.0.\1"),
            (r"classifier\.(weight|bias)", r"classifier.2.\1"),
        ]
    return _block_part(
        _rules(
            *outer,
            (
                rf"{stages}\.(\d+)\.{down}\.(\d)\.(weight|bias)",
                lambda m: f"features.{2 * int(m[1])}.{m[2]}.{m[3]}",
            ),
            (
                rf"{stages}\.(\d+)\.{blocks}\.(\d+)\.{gamma}",
                lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.layer_scale",
            ),
            (
                rf"{stages}\.(\d+)\.{blocks}\.(\d+)\.({part_re})\.(weight|bias)",
                lambda m: f"features.{2 * int(m[1]) + 1}.{m[2]}.{parts[m[3]]}.{m[4]}",
            ),
        )
    )


def _resnet_hf_rename() -> Callable[[str], str | None]:
    return _block_part(
        _rules(
            (r"resnet\.embedder\.embedder\.convolution\.weight", "conv1.weight"),
            (r"resnet\.embedder\.embedder\.normalization\.(\w+)", r"bn1.\1"),
            (
                r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.weight",
                lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.weight",
            ),
            (
                r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.(\w+)",
                lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}",
            ),
            (
                r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.convolution\.weight",
                lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.weight",
            ),
            (
                r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d)\.normalization\.(\w+)",
                lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}",
            ),
            (r"classifier\.1\.(weight|bias)", r"fc.\1"),
        )
    )


_VIT_LAYER = "encoder.layers.encoder_layer_"


def _vit_rename(flavour: str) -> Callable[[str], str | None]:
    if flavour == "timm":
        return _block_part(
            _rules(
                (r"cls_token", "class_token"),
                (r"pos_embed", "encoder.pos_embedding"),
                (r"patch_embed\.proj\.(weight|bias)", r"conv_proj.\1"),
                (r"blocks\.(\d+)\.norm1\.(weight|bias)", _VIT_LAYER + r"\1.ln_1.\2"),
                (
                    r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
                    _VIT_LAYER + r"\1.self_attention.in_proj_\2",
                ),
                (
                    r"blocks\.(\d+)\.attn\.proj\.(weight|bias)",
                    _VIT_LAYER + r"\1.self_attention.out_proj.\2",
                ),
                (r"blocks\.(\d+)\.norm2\.(weight|bias)", _VIT_LAYER + r"\1.ln_2.\2"),
                (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", _VIT_LAYER + r"\1.mlp.0.\2"),
                (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", _VIT_LAYER + r"\1.mlp.3.\2"),
                (r"norm\.(weight|bias)", r"encoder.ln.\1"),
                (r"head\.(weight|bias)", r"heads.head.\1"),
            )
        )
    # Files (and transformers < 5) name layers vit.encoder.layer.N.attention.attention.query...;
    # transformers 5 models hold vit.layers.N.attention.q_proj... in memory. Both are read.
    layer = r"vit\.(?:encoder\.layer|layers)\.(\d+)\."
    qkv = r"attention\.(?:attention\.(?:query|key|value)|q_proj|k_proj|v_proj)"
    return _block_part(
        _rules(
            (r"vit\.embeddings\.cls_token", "class_token"),
            (r"vit\.embeddings\.position_embeddings", "encoder.pos_embedding"),
            (r"vit\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"conv_proj.\1"),
            (layer + r"layernorm_before\.(weight|bias)", _VIT_LAYER + r"\1.ln_1.\2"),
            # q, k and v are three Linear layers in Hugging Face, one fused projection here.
            (layer + qkv + r"\.(weight|bias)", _VIT_LAYER + r"\1.self_attention.in_proj_\2"),
            (layer + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", _VIT_LAYER + r"\1.self_attention.out_proj.\2"),
            (layer + r"layernorm_after\.(weight|bias)", _VIT_LAYER + r"\1.ln_2.\2"),
            (layer + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", _VIT_LAYER + r"\1.mlp.0.\2"),
            (layer + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", _VIT_LAYER + r"\1.mlp.3.\2"),
            (r"vit\.layernorm\.(weight|bias)", r"encoder.ln.\1"),
            (r"classifier\.(weight|bias)", r"heads.head.\1"),
        )
    )  # fmt: skip


def _renamers() -> dict[tuple[str, str], Callable[[str], str | None]]:
    return {
        ("timm", "resnet"): lambda k: k,  # timm's ResNet keeps torchvision's names
        ("timm", "convnext"): _convnext_rename("timm"),
        ("hf", "convnext"): _convnext_rename("hf"),
        ("hf", "resnet"): _resnet_hf_rename(),
        ("timm", "vit"): _vit_rename("timm"),
        ("hf", "vit"): _vit_rename("hf"),
    }


ALIGNED_FAMILIES = ("mobilenet_v2", "mobilenet_v3", "efficientnet")
_QKV = re.compile(r"\.(query|key|value|q_proj|k_proj|v_proj)\.")


def _links_by_rename(
    rename: Callable[[str], str | None], foreign_keys: list[str]
) -> tuple[list[Link], list[str]]:
    groups: dict[str, list[str]] = {}
    unexpected: list[str] = []
    for key in foreign_keys:
        target = rename(key)
        if target is None:
            unexpected.append(key)
        else:
            groups.setdefault(target, []).append(key)
    links = []
    for target, sources in groups.items():
        if len(sources) > 1:
            order = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
            sources.sort(key=lambda s: order[_QKV.search(s)[1]])  # type: ignore[index]
            links.append(Link(target, tuple(sources), "concat"))
        else:
            links.append(Link(target, (sources[0],)))
    return links, unexpected


# Files do not keep module order (safetensors stores keys sorted by name), so the aligned families
# are put back into forward order by rank tables: siblings sort by these ranks, indices numerically.
_PARAM_ORDER = ("weight", "bias", "running_mean", "running_var")
_HF_ORDER = (
    "mobilenet_v2", "efficientnet", "embeddings", "conv_stem", "first_conv", "encoder", "blocks",
    "layer", "expansion", "expand_conv", "expand_bn", "expand_1x1", "depthwise_conv",
    "depthwise_norm", "conv_3x3", "squeeze_excite", "reduce", "expand", "projection",
    "project_conv", "project_bn", "reduce_1x1", "top_conv", "top_bn", "conv_1x1", "convolution",
    "batchnorm", "normalization", "classifier", *_PARAM_ORDER,
)  # fmt: skip
# timm's EfficientNet-family blocks reuse names (``bn1`` follows conv_pw in an inverted residual but
# conv_dw in a depthwise-separable block), so the order depends on the block's kind.
_TIMM_TOP = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier")
_TIMM_BLOCKS = {
    "ir": ("conv_pw", "bn1", "conv_dw", "bn2", "se", "conv_pwl", "bn3"),
    "ds": ("conv_dw", "bn1", "se", "conv_pw", "bn2"),
    "cba": ("conv", "bn1"),
}
_SE_ORDER = ("conv_reduce", "conv_expand")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")


def _rank(names: tuple[str, ...], token: str) -> tuple[int, int | str]:
    if token.isdigit():
        return (0, int(token))
    return (1, names.index(token)) if token in names else (2, token)


def forward_order(flavour: str, keys: list[str]) -> list[str]:
    """``keys`` of an EfficientNet-family state dict sorted into the layers' forward order."""
    if flavour == "hf":
        return sorted(keys, key=lambda k: [_rank(_HF_ORDER, t) for t in k.split(".")])
    kinds: dict[tuple[str, str], str] = {}
    for k in keys:
        m = _TIMM_BLOCK.match(k)
        if m:
            part = m[3].split(".")[0]
            kind = "ir" if part == "conv_pwl" else "ds" if part == "conv_dw" else "cba"
            if kinds.get((m[1], m[2])) != "ir":  # an inverted residual has conv_dw too
                kinds[(m[1], m[2])] = (
                    kind if kinds.get((m[1], m[2])) != "ds" or kind == "ir" else "ds"
                )

    def sort_key(k: str) -> list:
        m = _TIMM_BLOCK.match(k)
        if not m:
            return [_rank(_TIMM_TOP, t) for t in k.split(".")] and [
                _rank(_TIMM_TOP, k.split(".")[0]),
                _rank(_PARAM_ORDER, k.rsplit(".", 1)[-1]),
            ]
        names = _TIMM_BLOCKS[kinds[(m[1], m[2])]]
        rest = m[3].split(".")
        tail = [_rank(_SE_ORDER + _PARAM_ORDER, t) for t in rest[1:]]
        return [
            _rank(_TIMM_TOP, "blocks"),
            (0, int(m[1])),
            (0, int(m[2])),
            _rank(names, rest[0]),
            *tail,
        ]

    return sorted(keys, key=sort_key)


def _links_by_order(
    flavour: str, foreign_keys: list[str], target_keys: list[str]
) -> tuple[list[Link], list[str]]:
    if len(foreign_keys) != len(target_keys):
        raise RunError(
            f"the file has {len(foreign_keys)} tensors where the cnnlab model has "
            f"{len(target_keys)}: it is a different variant of the architecture"
        )
    links = []
    for src, dst in zip(forward_order(flavour, foreign_keys), target_keys):
        if src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]:
            raise RunError(
                f"layer order differs at {src} (file) vs {dst} (cnnlab): not the same architecture"
            )
        links.append(Link(dst, (src,)))
    return links, []


def build_links(
    flavour: str,
    family: str,
    foreign_shapes: dict[str, torch.Size],
    target_shapes: dict[str, torch.Size],
    bn_shift: float = 0.0,
    strict_shapes: bool = True,
) -> tuple[list[Link], list[str], list[str]]:
    """Links from ``foreign_shapes`` keys onto a cnnlab model's keys, plus the foreign keys nothing
    uses (unexpected) and the cnnlab keys nothing fills (missing). Raises a one-line
    :class:`RunError` naming the first shape mismatches, unless ``strict_shapes=False`` (transfer
    learning: a new head or stem is the caller's to adapt, so mismatched tensors pass through)."""
    fkeys = [k for k in foreign_shapes if not k.endswith(SKIP_SUFFIX)]
    tkeys = [k for k in target_shapes if not k.endswith(SKIP_SUFFIX)]
    if family in ALIGNED_FAMILIES:
        links, unexpected = _links_by_order(flavour, fkeys, tkeys)
    else:
        links, unexpected = _links_by_rename(_renamers()[(flavour, family)], fkeys)
    known = set(target_shapes)
    unexpected += [s for link in links if link.target not in known for s in link.sources]
    links = [link for link in links if link.target in known]
    out, mismatched = [], []
    for link in links:
        want = target_shapes[link.target]
        shapes = [foreign_shapes[s] for s in link.sources]
        have = (
            torch.Size([sum(s[0] for s in shapes), *shapes[0][1:]])
            if len(shapes) > 1
            else shapes[0]
        )
        how = link.how
        if have != want:
            if (
                how == "copy"
                and have.numel() == want.numel()
                and _squeezed(have) == _squeezed(want)
            ):
                how = "reshape"
            else:
                mismatched.append(f"{link.sources[0]} {tuple(have)} -> {link.target} {tuple(want)}")
                if strict_shapes:
                    continue
        if how == "copy" and bn_shift and link.target.endswith("running_var"):
            out.append(Link(link.target, link.sources, "bn_eps", bn_shift))
        else:
            out.append(Link(link.target, link.sources, how))
    if mismatched and strict_shapes:
        raise RunError(f"shape mismatch: {listing(mismatched, 3)}")
    filled = {link.target for link in out}
    missing = [k for k in tkeys if k not in filled]
    return out, unexpected, missing


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)
