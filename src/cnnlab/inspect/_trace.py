"""One instrumented forward pass that records what every layer does to shapes, MACs and geometry.

Why a concrete trace instead of ``torch.fx.symbolic_trace``: cnnlab models (and many user models)
branch on Python values of shapes (``self.check_input(x)``, ``if x.shape[-2:] != (7, 7)``), which a
symbolic tracer cannot follow. Running the model once on a real input under two interception modes
sees the graph the model actually executes, branches, residual adds and concatenations included:

- a ``TorchFunctionMode`` sees every functional op (``conv2d``, ``max_pool2d``, ``cat``, ``add_``,
  ``permute``…) with its arguments and propagates each tensor's *geometry* (which input pixels
  its first unit sees, and the jump between neighbouring units) from inputs to outputs;
- a ``TorchDispatchMode`` sees the aten ops underneath and counts their FLOPs with PyTorch's own
  formulas (``torch.utils.flop_counter``: convolutions, matmuls, attention), so functional matmuls
  such as a ViT's attention are counted too;
- forward hooks on every module name the rows (leaf modules, plus geometric or MAC-bearing
  functional ops called directly in a container's ``forward``).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from cnnlab.errors import CnnlabError, InputShapeError

_ATTR = "_cnnlab_geo"


@dataclass(frozen=True)
class Geo:
    """Where unit 0 of a tensor looks in the input: pixels ``lo..hi`` per axis (h, w), units
    ``jump`` input pixels apart; ``axes`` are the tensor dims holding h and w. ``is_global``: a unit
    depends on the whole input (after flatten + linear, global pooling, attention…). ``context``:
    a local unit that also sees the whole input through a global gate (squeeze-excitation)."""

    lo: tuple[float, float]
    hi: tuple[float, float]
    jump: tuple[float, float]
    axes: tuple[int, int]
    is_global: bool = False
    context: bool = False

    def with_axes(self, axes: tuple[int, int]) -> Geo:
        return replace(self, axes=axes)


def _global(axes: tuple[int, int] = (-2, -1)) -> Geo:
    return Geo((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), axes, True)


def _union(geos: list[Geo], axes: tuple[int, int]) -> Geo:
    if any(g.is_global for g in geos):
        return _global(axes)
    lo = tuple(min(g.lo[i] for g in geos) for i in range(2))
    hi = tuple(max(g.hi[i] for g in geos) for i in range(2))
    jump = tuple(max(g.jump[i] for g in geos) for i in range(2))
    return Geo(lo, hi, jump, axes, context=any(g.context for g in geos))  # type: ignore[arg-type]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list, torch.Size)):
        return (int(v[0]), int(v[-1])) if len(v) else (1, 1)
    return int(v), int(v)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _window(g: Geo, k, s, p, d) -> Geo:
    """The receptive-field recurrence for a sliding window: unit 0 of the output covers input
    units ``-p .. -p + d(k-1)``; the jump multiplies by the stride."""
    lo = tuple(g.lo[i] - p[i] * g.jump[i] for i in range(2))
    hi = tuple(g.hi[i] + (d[i] * (k[i] - 1) - p[i]) * g.jump[i] for i in range(2))
    jump = tuple(g.jump[i] * s[i] for i in range(2))
    return Geo(lo, hi, jump, g.axes)  # type: ignore[arg-type]


def _spatial(t: torch.Tensor, axes: tuple[int, int]) -> tuple[int, int]:
    return int(t.shape[axes[0]]), int(t.shape[axes[1]])


# Ops that mix every spatial position into each output unit even though the shape is preserved.
_GLOBAL_OPS = {"group_norm", "instance_norm", "softmax_over_space"}
GEOMETRIC_OPS = {
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "avg_pool2d",
    "lp_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
    "interpolate",
    "upsample",
    "pixel_shuffle",
    "pixel_unshuffle",
    "pad",
}


def _geometry(
    name: str, args: tuple, kwargs: dict, x: torch.Tensor, g: Geo, out: torch.Tensor
) -> Geo:
    """Geometry of ``out`` for the spatial ops; ``x`` is the op's (first) input."""
    if g.is_global:
        return g
    if name == "conv2d":
        w = _arg(args, kwargs, 1, "weight", None)
        k = tuple(w.shape[-2:])
        s = _pair(_arg(args, kwargs, 3, "stride", 1))
        d = _pair(_arg(args, kwargs, 5, "dilation", 1))
        pad = _arg(args, kwargs, 4, "padding", 0)
        if isinstance(pad, str):
            p = (0, 0) if pad == "valid" else tuple(d[i] * (k[i] - 1) // 2 for i in range(2))
        else:
            p = _pair(pad)
        return _window(g, k, s, p, d)
    if name == "conv_transpose2d":
        w = _arg(args, kwargs, 1, "weight", None)
        k = tuple(w.shape[-2:])
        s = _pair(_arg(args, kwargs, 3, "stride", 1))
        p = _pair(_arg(args, kwargs, 4, "padding", 0))
        d = _pair(_arg(args, kwargs, 7, "dilation", 1))
        # Output unit o gathers input units (o + p - t*d) / s: a continuous approximation whose
        # jump is 1/s of the input's (exact for the extent, up to the stride phase).
        lo = tuple(g.lo[i] - (d[i] * (k[i] - 1) - p[i]) * g.jump[i] / s[i] for i in range(2))
        hi = tuple(g.hi[i] + p[i] * g.jump[i] / s[i] for i in range(2))
        return Geo(lo, hi, tuple(g.jump[i] / s[i] for i in range(2)), g.axes)  # type: ignore[arg-type]
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
        stride = _arg(args, kwargs, 2, "stride", None)
        s = (
            k
            if stride is None or (isinstance(stride, (list, tuple)) and not stride)
            else _pair(stride)
        )
        p = _pair(_arg(args, kwargs, 3, "padding", 0))
        d = _pair(_arg(args, kwargs, 4, "dilation", 1)) if name != "avg_pool2d" else (1, 1)
        return _window(g, k, s, p, d)
    if name == "lp_pool2d":
        k = _pair(_arg(args, kwargs, 2, "kernel_size", 1))
        stride = _arg(args, kwargs, 3, "stride", None)
        return _window(g, k, k if stride is None else _pair(stride), (0, 0), (1, 1))
    if name.startswith("adaptive_"):
        n_in, n_out = _spatial(x, g.axes), _spatial(out, g.axes)
        if n_out == (1, 1) and n_in != (1, 1):
            return _global(g.axes)
        # Window i spans floor(i*n/o) .. ceil((i+1)*n/o); use the widest window and mean stride.
        k = tuple(
            max(math.ceil((j + 1) * a / b) - (j * a) // b for j in range(b))
            for a, b in zip(n_in, n_out)
        )
        lo = g.lo
        hi = tuple(g.hi[i] + (k[i] - 1) * g.jump[i] for i in range(2))
        jump = tuple(g.jump[i] * n_in[i] / n_out[i] for i in range(2))
        return Geo(lo, hi, jump, g.axes)  # type: ignore[arg-type]
    if name in ("interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle"):
        n_in, n_out = _spatial(x, g.axes), _spatial(out, g.axes)
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        extra = 0 if name != "interpolate" or mode in ("nearest", "nearest-exact", "area") else 1
        if name == "pixel_unshuffle":
            r = _arg(args, kwargs, 1, "downscale_factor", 1)
            return _window(g, (r, r), (r, r), (0, 0), (1, 1))
        scale = tuple(n_out[i] / n_in[i] for i in range(2))
        hi = tuple(g.hi[i] + extra * g.jump[i] for i in range(2))
        return Geo(g.lo, hi, tuple(g.jump[i] / scale[i] for i in range(2)), g.axes)  # type: ignore[arg-type]
    if name == "pad":
        pad = list(_arg(args, kwargs, 1, "pad", ()))
        pad += [0] * (4 - len(pad))
        # F.pad lists the last dim first: (left, right, top, bottom).
        before = (pad[2], pad[0]) if g.axes[1] % x.ndim == x.ndim - 1 else (0, 0)
        return Geo(
            tuple(g.lo[i] - before[i] * g.jump[i] for i in range(2)),  # type: ignore[arg-type]
            tuple(g.hi[i] - before[i] * g.jump[i] for i in range(2)),  # type: ignore[arg-type]
            g.jump,
            g.axes,
        )
    raise AssertionError(name)


def _getitem_geo(x: torch.Tensor, g: Geo, index: Any, out: torch.Tensor) -> Geo | None:
    """Cropping with plain slices (``x[:, :, 2:-2, 2:-2]``) shifts unit 0; other indexing → None."""
    if not isinstance(index, tuple):
        index = (index,)
    if not all(isinstance(i, slice) for i in index) or len(index) > x.ndim:
        return None
    axes = tuple(a % x.ndim for a in g.axes)
    lo, hi, jump = list(g.lo), list(g.hi), list(g.jump)
    for k, ax in enumerate(axes):
        if ax >= len(index):
            continue
        start, _, step = index[ax].indices(x.shape[ax])
        lo[k] += start * g.jump[k]
        hi[k] += start * g.jump[k]
        jump[k] *= step
    return Geo(tuple(lo), tuple(hi), tuple(jump), axes)  # type: ignore[arg-type]


def _propagate(name: str, args: tuple, kwargs: dict, out: Any, tagged_refs: list) -> None:
    """Tag every tensor in ``out`` with its geometry, computed from the tagged inputs; weak
    references to the tagged tensors go to ``tagged_refs`` so the tags can be removed afterwards
    (an in-place op may have tagged one of the model's buffers)."""
    flat_in, _ = tree_flatten((args, kwargs))
    tagged = [
        (t, getattr(t, _ATTR)) for t in flat_in if isinstance(t, torch.Tensor) and hasattr(t, _ATTR)
    ]
    if not tagged:
        return
    outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    if not outs:
        return
    x, g = tagged[0]
    gaxes = tuple(a % x.ndim for a in g.axes)
    g = g.with_axes(gaxes)  # type: ignore[arg-type]
    for o in outs:
        geo: Geo | None = None
        if name in GEOMETRIC_OPS and o.ndim == x.ndim:
            geo = _geometry(name, args, kwargs, x, g, o)
        elif (
            name in ("permute", "transpose", "swapaxes", "swapdims", "movedim") and o.ndim == x.ndim
        ):
            perm = _permutation(name, args, kwargs, x.ndim)
            if perm is not None:
                geo = g.with_axes((perm.index(gaxes[0]), perm.index(gaxes[1])))
        elif name == "__getitem__":
            geo = _getitem_geo(x, g, args[1] if len(args) > 1 else kwargs.get("idx"), o)
        elif name in _GLOBAL_OPS:
            geo = _global(gaxes)
        elif name == "layer_norm":
            shape = _arg(args, kwargs, 1, "normalized_shape", ())
            n = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
            geo = _global(gaxes) if x.ndim - n <= min(gaxes) else g
        if geo is None:
            geo = _elementwise(tagged, o)
        elif g.context and not geo.is_global and not geo.context:
            geo = replace(geo, context=True)
        with contextlib.suppress(AttributeError, RuntimeError):  # exotic tensor subclasses
            setattr(o, _ATTR, geo)
            tagged_refs.append(weakref.ref(o))


def _permutation(name: str, args: tuple, kwargs: dict, ndim: int) -> list[int] | None:
    order = list(range(ndim))
    if name == "permute":
        dims = args[1:] if len(args) > 2 else _arg(args, kwargs, 1, "dims", None)
        if dims is None:
            return None
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        return [int(d) % ndim for d in dims]
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = (
            int(_arg(args, kwargs, 1, "dim0", 0)) % ndim,
            int(_arg(args, kwargs, 2, "dim1", 0)) % ndim,
        )
        order[a], order[b] = order[b], order[a]
        return order
    return None


def _elementwise(tagged: list[tuple[torch.Tensor, Geo]], o: torch.Tensor) -> Geo:
    """Shape-preserving ops (activations, norms, adds, concatenations, channel linears): the union
    of the inputs that share the output's spatial grid. Inputs broadcast in from another grid (a
    squeeze-excitation gate computed from globally pooled features) make each unit depend on the
    whole image as well: the result keeps the local window and is marked ``context``. An output on
    no input's grid (flatten + linear, global pooling) is global."""
    same: list[Geo] = []
    other = False
    for t, tg in tagged:
        ta = tuple(a % t.ndim for a in tg.axes)
        oa: tuple[int, int] | None = None
        if t.ndim == o.ndim:
            oa = ta  # type: ignore[assignment]
        elif ta == (t.ndim - 2, t.ndim - 1) and o.ndim >= 2:
            oa = (o.ndim - 2, o.ndim - 1)
        if (
            oa is not None
            and not tg.is_global
            and o.shape[oa[0]] == t.shape[ta[0]]
            and o.shape[oa[1]] == t.shape[ta[1]]
        ):
            same.append(tg.with_axes(oa))
        else:
            other = True
    if not same:
        return _global((o.ndim - 2, o.ndim - 1) if o.ndim >= 2 else (0, 0))
    geo = _union(same, same[0].axes)
    return replace(geo, context=True) if other else geo


@dataclass
class TraceRow:
    """One executed layer: a leaf module call or a functional op called in a container."""

    name: str
    kind: str
    output_shapes: list[tuple[int, ...]]
    params: int
    trainable: int
    macs: int
    geo: Geo | None
    output_bytes: int
    is_module: bool = True


@dataclass
class Trace:
    """Everything one forward pass told us."""

    input_shape: tuple[int, ...]
    rows: list[TraceRow] = field(default_factory=list)
    total_macs: int = 0
    output_geo: Geo | None = None
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    unused_params: int = 0


_aten = torch.ops.aten
# PyTorch's registry covers the CUDA attention kernels but not the CPU one; same formula.
_FLOPS = dict(flop_registry)
if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _FLOPS[_aten._scaled_dot_product_flash_attention_for_cpu] = flop_registry[
        _aten._scaled_dot_product_flash_attention
    ]


class _MacCounter(TorchDispatchMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in _FLOPS and func is not torch.ops.prim.device.default:
            # Like FlopCounterMode: count an uncovered op through its decomposition, if any.
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        if packet in _FLOPS:
            flops = int(_FLOPS[packet](*args, **kwargs, out_val=out))
            self.tracer.total_flops += flops
            if self.tracer.acc:
                self.tracer.acc[-1] += flops
        return out


class _GeoMode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tr = self.tracer
        name = getattr(func, "__name__", str(func))
        in_container = not tr.stack or not tr.stack[-1][2]
        if in_container:
            tr.acc.append(0)
        try:
            out = func(*args, **kwargs)
        finally:
            flops = tr.acc.pop() if in_container else 0
        if name in ("dim", "size", "numel", "__len__", "__bool__", "is_floating_point", "__get__"):
            return out
        _propagate(name, args, kwargs, out, tr.tagged_refs)
        if in_container and (flops or name in GEOMETRIC_OPS):
            if tr.acc:
                tr.acc[-1] += flops
            owner = tr.stack[-1][0] if tr.stack else ""
            tr.add_row(
                f"{owner}.{name}" if owner else name, f"F.{name}", out, 0, 0, flops // 2, False
            )
        return out


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.stack: list[tuple[str, nn.Module, bool]] = []
        self.acc: list[int] = []
        self.total_flops = 0
        self.rows: list[TraceRow] = []
        self.seen_params: set[int] = set()
        self.called: set[nn.Module] = set()
        self.tagged_refs: list[weakref.ref] = []

    def add_row(self, name, kind, out, params, trainable, macs, is_module) -> None:
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        geo = getattr(outs[0], _ATTR, None) if outs else None
        self.rows.append(
            TraceRow(
                name=name,
                kind=kind,
                output_shapes=[tuple(t.shape) for t in outs],
                params=params,
                trainable=trainable,
                macs=macs,
                geo=geo,
                output_bytes=sum(t.numel() * t.element_size() for t in outs),
                is_module=is_module,
            )
        )

    def pre_hook(self, name: str, leaf: bool):
        def hook(mod, inputs):
            self.stack.append((name, mod, leaf))
            self.acc.append(0)

        return hook

    def post_hook(self, name: str, leaf: bool):
        def hook(mod, inputs, output):
            flops = self.acc.pop() if self.acc else 0
            if self.stack:
                self.stack.pop()
            if self.acc:  # a container's total includes its children
                self.acc[-1] += flops
            if leaf:
                params, trainable = self.claim(mod.parameters())
                kind = type(mod).__name__
                self.add_row(name or kind, kind, output, params, trainable, flops // 2, True)
                return
            # A container that uses weights directly (a ViT's position embedding, attention's
            # in-projection, a child module it calls functionally) gets a row for them.
            own = list(mod.parameters(recurse=False))
            if name:
                own += [
                    p
                    for sub_name, sub in mod.named_modules()
                    if sub_name and sub not in self.called
                    for p in sub.parameters(recurse=False)
                ]
            params, trainable = self.claim(own)
            if params:
                self.add_row(
                    name or "(model)", type(mod).__name__, output, params, trainable, 0, True
                )

        return hook

    def claim(self, params) -> tuple[int, int]:
        """Count parameters not already counted by an earlier row (shared weights count once)."""
        total = trainable = 0
        for p in params:
            if id(p) not in self.seen_params:
                self.seen_params.add(id(p))
                total += p.numel()
                trainable += p.numel() if p.requires_grad else 0
        return total, trainable

    def called_hook(self):
        def hook(mod, inputs):
            self.called.add(mod)

        return hook


def run_trace(model: nn.Module, input_shape: tuple[int, ...]) -> Trace:
    """Run ``model`` once in eval mode on a seeded random input of ``input_shape`` (with batch) and
    record every layer. The model's train/eval flags and weights are left as they were."""
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(input_shape, generator=gen).to(device=device, dtype=dtype)
    setattr(x, _ATTR, Geo((0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (x.ndim - 2, x.ndim - 1)))
    tracer = _Tracer(model)
    handles = []
    flags = {m: m.training for m in model.modules()}
    for name, mod in model.named_modules():
        leaf = next(iter(mod.children()), None) is None
        handles.append(mod.register_forward_pre_hook(tracer.pre_hook(name, leaf)))
        handles.append(mod.register_forward_pre_hook(tracer.called_hook()))
        handles.append(mod.register_forward_hook(tracer.post_hook(name, leaf), always_call=True))
    model.eval()
    try:
        with torch.no_grad(), _MacCounter(tracer), _GeoMode(tracer):
            out = model(x)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        out_geo = getattr(outs[0], _ATTR, None) if outs else None
    except CnnlabError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputShapeError(
            f"{type(model).__name__} cannot run on an input of shape {tuple(input_shape)}: {first}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for ref in tracer.tagged_refs:
            t = ref()
            if t is not None and hasattr(t, _ATTR):
                delattr(t, _ATTR)
        for m, flag in flags.items():
            m.train(flag)
    return Trace(
        input_shape=tuple(input_shape),
        rows=tracer.rows,
        total_macs=tracer.total_flops // 2,
        output_geo=out_geo,
        output_shapes=[tuple(t.shape) for t in outs],
        unused_params=sum(p.numel() for p in model.parameters() if id(p) not in tracer.seen_params),
    )
