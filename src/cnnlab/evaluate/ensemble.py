"""Combining several trained runs: mean, weighted (weights fitted on held-out data) or majority vote.

Pure functions of member probabilities (M, N, K); the run-level orchestration (loading each member
with its own preprocessing on one shared test set) is in :mod:`cnnlab.evaluate.run_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cnnlab.errors import DataError, UnknownNameError

METHODS = ("mean", "weighted", "vote")


def check_same_classes(class_lists: Sequence[Sequence[str]], names: Sequence[str]) -> None:
    """Refuse members whose class lists differ from the first member's, naming the difference."""
    ref = list(class_lists[0])
    for classes, name in zip(class_lists[1:], names[1:]):
        classes = list(classes)
        if classes == ref:
            continue
        missing = [c for c in ref if c not in classes]
        extra = [c for c in classes if c not in ref]
        if missing or extra:
            diff = f"lacks {missing or 'none'} and adds {extra or 'none'}"
        else:
            diff = f"has the same classes in a different order ({classes} vs {ref})"
        raise DataError(
            f"ensemble members must share one class list: {name} {diff} compared with {names[0]}"
        )


def combine(
    member_probs: np.ndarray, method: str = "mean", weights: Sequence[float] | None = None
) -> np.ndarray:
    """Ensemble scores (N, K) from member probabilities (M, N, K).

    - ``mean``: the average of the members' probabilities.
    - ``weighted``: ``sum_m w_m p_m`` with ``weights`` normalised to sum to 1.
    - ``vote``: majority vote of the members' top-1 classes, ties broken by the mean probability.
      Returned as ``(votes + mean_prob / 2) / (M + 1/2)``: a distribution that ranks classes
      exactly by votes first, and keeps the log-loss finite.
    """
    p = np.asarray(member_probs, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"member probabilities must be (members, samples, classes); got {p.shape}")
    m, _, k = p.shape
    if method == "mean":
        return p.mean(0)
    if method == "weighted":
        if weights is None:
            raise ValueError("the weighted ensemble needs weights (see fit_weights)")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (m,) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"need {m} non-negative weights with a positive sum; got {list(w)}")
        return np.tensordot(w / w.sum(), p, axes=1)
    if method == "vote":
        votes = np.zeros(p.shape[1:], dtype=np.float64)
        np.add.at(votes, (np.arange(p.shape[1])[None, :].repeat(m, 0), p.argmax(2)), 1.0)
        return (votes + p.mean(0) / 2) / (m + 0.5)
    raise UnknownNameError("ensemble method", method, METHODS)


def fit_weights(member_probs: np.ndarray, labels: np.ndarray, steps: int = 200) -> np.ndarray:
    """Member weights on the simplex minimising the NLL of the weighted mixture on ``labels``.

    The mixture NLL is convex in the weights, so L-BFGS on a softmax parametrisation (starting from
    equal weights) converges to the same answer every time.
    """
    p = torch.as_tensor(np.asarray(member_probs), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    true_p = p[:, torch.arange(len(y)), y]  # (M, N) probability each member gives the truth
    a = torch.zeros(p.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = torch.softmax(a, 0)
        loss = -torch.log((w[:, None] * true_p).sum(0).clamp_min(1e-12)).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(a, 0).detach().numpy()
