"""Foreign weights → a cnnlab model (import) and a cnnlab model → foreign weights (export).

Both directions run the same :class:`~cnnlab.models.foreign.mapping.Link` list, so a mapping that
imports right also exports right; the :class:`ForeignReport` says which tensors were copied as they
are, which were adapted (and how), and which keys were missing or unexpected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cnnlab.errors import RunError
from cnnlab.models.foreign.detect import ForeignCheckpoint
from cnnlab.models.foreign.files import listing
from cnnlab.models.foreign.mapping import SKIP_SUFFIX as SKIP
from cnnlab.models.foreign.mapping import Link, build_links
from cnnlab.models.foreign.specs import Target, bn_eps_of

# Keys some exports carry for heads the classifier never uses (ViTModel's pooler).
IGNORABLE_PREFIXES = ("vit.pooler.", "pooler.")
_HOW = {
    "reshape": "reshaped",
    "concat": "q/k/v fused",
    "bn_eps": "BatchNorm eps folded into running_var",
}


@dataclass
class ForeignReport:
    """What a conversion did, key by key (cnnlab names for copied/adapted/missing)."""

    source: str
    flavour: str
    architecture: str
    target: str
    container: str | None = None
    copied: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.flavour} {self.architecture} -> cnnlab {self.target}: "
            f"copied {len(self.copied)}, adapted {len(self.adapted)}, "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}"
        )
        return text + (f" (from '{self.container}')" if self.container else "")

    def lines(self) -> list[str]:
        """The summary and one line per non-empty category, for the CLI."""
        out = [str(self)]
        by_reason: dict[str, list[str]] = {}
        for item in self.adapted:
            key, _, reason = item.partition(" (")
            by_reason.setdefault(reason.rstrip(")"), []).append(key)
        for reason, keys in by_reason.items():
            out.append(f"  adapted ({reason}): {len(keys)}, e.g. {listing(keys, 2)}")
        if self.ignored:
            out.append(f"  ignored (unused heads): {listing(self.ignored, 4)}")
        if self.missing:
            out.append(f"  missing: {listing(self.missing)}")
        if self.unexpected:
            out.append(f"  unexpected: {listing(self.unexpected)}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def target_links(
    flavour: str,
    target: Target,
    foreign_shapes: dict[str, torch.Size],
    model: nn.Module,
    strict_shapes: bool = True,
) -> tuple[list[Link], list[str], list[str]]:
    """The links from ``foreign_shapes`` onto ``model``, with unexpected and missing keys."""
    tshapes = {k: v.shape for k, v in model.state_dict().items()}
    if target.family == "identity":
        links = [Link(k, (k,)) for k in foreign_shapes if k in tshapes and not k.endswith(SKIP)]
        bad = [
            f"{k} {tuple(foreign_shapes[k])} -> {tuple(tshapes[k])}"
            for k in foreign_shapes
            if k in tshapes and foreign_shapes[k] != tshapes[k]
        ]
        if bad and strict_shapes:
            raise RunError(f"shape mismatch: {listing(bad, 3)}")
        unexpected = [k for k in foreign_shapes if k not in tshapes]
        missing = [
            k for k in tshapes if k not in foreign_shapes and not k.endswith("num_batches_tracked")
        ]
        return links, unexpected, missing
    shift = target.bn_eps - bn_eps_of(model) if target.bn_eps is not None else 0.0
    return build_links(flavour, target.family, foreign_shapes, tshapes, shift, strict_shapes)


def convert(ckpt: ForeignCheckpoint, model: nn.Module) -> tuple[nn.Module, ForeignReport]:
    """Load ``ckpt`` into ``model`` (built as ``get_model(ckpt.target.name, **ckpt.target.kwargs)``)
    strictly, in eval mode. The caller builds the model: the registry's ``get_model`` loads
    pretrained weights through this package, so this package does not import the registry.

    Raises a one-line :class:`RunError` naming the architecture and the first offending keys when
    the weights do not fit it.
    """
    state, report = mapped_state(ckpt, model)
    model.load_state_dict(state, strict=False)
    return model.eval(), report


def mapped_state(
    ckpt: ForeignCheckpoint, model: nn.Module, strict_shapes: bool = True
) -> tuple[dict[str, torch.Tensor], ForeignReport]:
    """``ckpt``'s tensors renamed and adapted to ``model`` (built for ``ckpt.target``)."""
    report = ForeignReport(
        str(ckpt.path), ckpt.flavour, ckpt.architecture, ckpt.target.name, ckpt.container,
        notes=list(ckpt.notes),
    )  # fmt: skip
    shapes = {k: v.shape for k, v in ckpt.state.items()}
    try:
        links, unexpected, missing = target_links(
            ckpt.flavour, ckpt.target, shapes, model, strict_shapes
        )
    except RunError as e:
        raise RunError(
            f"cannot map {ckpt.flavour} {ckpt.architecture} onto cnnlab {ckpt.target.name}: {e}"
        ) from None
    report.ignored = [k for k in unexpected if k.startswith(IGNORABLE_PREFIXES)]
    report.unexpected = [k for k in unexpected if not k.startswith(IGNORABLE_PREFIXES)]
    report.missing = missing
    if report.missing or report.unexpected:
        parts = []
        if report.missing:
            parts.append(f"missing {listing(report.missing, 4)}")
        if report.unexpected:
            parts.append(f"unexpected {listing(report.unexpected, 4)}")
        raise RunError(
            f"{ckpt.path} does not hold a {ckpt.architecture} ({ckpt.flavour}) that maps onto cnnlab "
            f"{ckpt.target.name}: " + "; ".join(parts)
        )
    target_state = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for link in links:
        want = target_state[link.target]
        tensors = [ckpt.state[s] for s in link.sources]
        if link.how == "copy" and tensors[0].shape != want.shape:  # strict_shapes=False only
            state[link.target] = tensors[0]
            continue
        state[link.target] = link.forward(tensors, want.shape).to(want.dtype)
        if link.how == "copy":
            report.copied.append(link.target)
        else:
            report.adapted.append(f"{link.target} ({_HOW[link.how]})")
    return state, report


def foreign_state(
    flavour: str,
    target: Target,
    model: nn.Module,
    template: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Export: ``model``'s weights under the foreign ``template``'s names and shapes (the state dict
    of a freshly built foreign model), every template key filled or a one-line error."""
    shapes = {k: v.shape for k, v in template.items()}
    links, unexpected, missing = target_links(flavour, target, shapes, model)
    unexpected = [k for k in unexpected if not k.startswith(IGNORABLE_PREFIXES)]
    if unexpected or missing:
        raise RunError(
            f"cnnlab {target.name} does not map onto the foreign model: foreign keys without a "
            f"source {listing(unexpected, 4)}; cnnlab keys without a place {listing(missing, 4)}"
        )
    src = model.state_dict()
    out = dict(template)
    for link in links:
        parts = link.backward(src[link.target], [shapes[s] for s in link.sources])
        for key, t in zip(link.sources, parts):
            out[key] = t.to(template[key].dtype).contiguous().clone()
    return out
