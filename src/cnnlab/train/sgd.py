"""SGD with (Nesterov) momentum and L2 weight decay: torch.optim.SGD's update, as a plain class.

Why not ``torch.optim.SGD`` itself: every ``torch.optim.Optimizer`` imports ``torch._dynamo`` the
first time a parameter group is added, the gradients are zeroed or a step is taken (those methods
are wrapped to keep the compiler out). That import costs about as long as ``import torch`` (~1.5 s
on a 2-core CPU), which is 7 % of a 20-second training run; the time-to-accuracy recipes use SGD,
so they start that much sooner with this class. The update is the same as torch's (dampening 0,
the foreach path), tested to match it step for step, and ``state_dict()`` has torch's layout, so
checkpoints written with either load into the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class SGD:
    """``torch.optim.SGD(groups, lr, momentum, nesterov=..., weight_decay=...)`` without the
    ``torch._dynamo`` import: ``param_groups``, ``state``, ``step``, ``zero_grad``,
    ``state_dict`` and ``load_state_dict`` behave as torch's do.

    Example::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum and weight_decay >= 0; got {lr}, {momentum}, {weight_decay}"
            )
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.defaults: dict[str, Any] = {
            "lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": weight_decay,
            "nesterov": nesterov, "maximize": False, "foreach": None, "differentiable": False,
            "fused": None,
        }  # fmt: skip
        items = list(params)
        groups = items if items and isinstance(items[0], dict) else [{"params": items}]
        self.param_groups: list[dict[str, Any]] = [
            {**self.defaults, **g, "params": list(g["params"])} for g in groups
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if g["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=g["weight_decay"])
            if g["momentum"]:
                bufs = []
                for p, grad in zip(params, grads):
                    buf = self.state.setdefault(p, {}).get("momentum_buffer")
                    if buf is None:  # the first step: the buffer starts as the gradient
                        buf = torch.clone(grad).detach()
                        self.state[p]["momentum_buffer"] = buf
                    else:
                        buf.mul_(g["momentum"]).add_(grad)
                    bufs.append(buf)
                if g["nesterov"]:
                    grads = torch._foreach_add(grads, bufs, alpha=g["momentum"])
                else:
                    grads = bufs
            torch._foreach_add_(params, grads, alpha=-g["lr"])
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: parameters by index across the groups, their momentum buffers."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {
            index[id(p)]: {k: v.clone() for k, v in s.items()}
            for p, s in self.state.items()
            if id(p) in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)
        ):
            raise ValueError("the saved optimizer state has other parameter groups than this model")
        by_index = {
            i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])
        }
        for s, g in zip(saved, self.param_groups):
            g.update({k: v for k, v in s.items() if k != "params"})
        self.state = {
            by_index[int(i)]: {k: v.to(by_index[int(i)].device).clone() for k, v in st.items()}
            for i, st in state_dict["state"].items()
        }

    def __repr__(self) -> str:
        g = self.param_groups[0] if self.param_groups else self.defaults
        return (
            f"SGD(lr={g['lr']}, momentum={g['momentum']}, nesterov={g['nesterov']}, "
            f"weight_decay={g['weight_decay']}, groups={len(self.param_groups)})"
        )
