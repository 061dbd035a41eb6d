"""The predictor: a trained model plus its preprocessing, answering "what is in these images?".

``cnnlab.load("runs/x")`` rebuilds the model from the run directory alone (safetensors weights and
``config.json``; nothing is unpickled) and ``.predict(...)`` takes file paths, PIL images, numpy
arrays or tensors, preprocesses them exactly as in training, and returns class names with
probabilities, batched. ``cnnlab.load("model.onnx")`` (or an exported TorchScript file) does the
same from the preprocessing and class names stored inside the exported file.

The forward pass runs on a backend (:mod:`cnnlab.deploy.backends`): PyTorch eager by default,
channels_last, traced-and-frozen, ONNX Runtime or int8 — or ``backend="auto"``, which measures the
candidates on this machine and keeps the fastest (``predictor.backend_choice`` records the timings).
When the run was calibrated (``config.json`` ``"calibration": {"temperature": T}``), logits are
divided by ``T`` before the softmax: the probabilities change, the predicted classes never do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data.loader import normalize_batch
from cnnlab.deploy.backends import (
    AUTO_CANDIDATES,
    BACKENDS,
    OnnxBackend,
    TorchBackend,
    make_backend,
    pick_fastest,
)
from cnnlab.deploy.dense_predict import DENSE_TASKS, DensePredictor
from cnnlab.deploy.formats import read_metadata
from cnnlab.deploy.images import image_to_uint8
from cnnlab.errors import ConfigError, DataError, RunError, UnknownNameError
from cnnlab.run import load_model_from_run, load_run_splits


@dataclass(frozen=True)
class Prediction:
    """The answer for one image: best class, its probability, and the top-k list."""

    label: str
    index: int
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top_k": [{"label": k, "probability": p} for k, p in self.top_k],
        }


@dataclass(frozen=True)
class PredictionError:
    """A file that could not be predicted, with the reason (the other files still are)."""

    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error}


class Predictor:
    """A model ready for inference with its class names and preprocessing.

    Example::

        p = cnnlab.load("runs/simplecnn-digits")
        p.predict(["three.png"], top_k=3)[0].label
    """

    def __init__(
        self,
        model: torch.nn.Module,
        classes: Sequence[str],
        input_size: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        config: dict | None = None,
        backend: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device) if model is not None else None
        self.classes = list(classes)
        self.input_size = tuple(int(v) for v in input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = batch_size
        self.config = config or {}
        if backend is None and self.model is None:
            raise ValueError("a Predictor needs a model or a backend")
        self.backend = backend
        self.backend_name = getattr(backend, "name", "torch")
        self.backend_choice: Any = None  # set by load(backend="auto"): the measured timings
        temp = (self.config.get("calibration") or {}).get("temperature")
        self.temperature = float(temp) if temp else 1.0
        if not self.temperature > 0:
            raise RunError(f"calibration temperature must be positive; got {temp}")

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def check_outputs(self) -> None:
        """Refuse, with a one-line :class:`RunError`, a model whose output contradicts its class
        list (a config.json edited or copied from another run): one forward pass of zeros. Without
        it such a model loads, then fails on every request."""
        try:
            out = self.logits(torch.zeros(1, *self.input_size, device=self.device))
        except Exception as exc:  # noqa: BLE001 - any failure here means config and weights disagree
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(
                f"the model does not run on its configured input size {list(self.input_size)}: "
                f"{first}"
            ) from None
        if out.dim() != 2 or out.shape[1] != len(self.classes):
            raise RunError(
                f"the config lists {len(self.classes)} classes but the model outputs "
                f"{tuple(out.shape[1:])} scores per image; config.json contradicts the weights"
            )

    # -- preprocessing -------------------------------------------------------------------------
    def to_uint8(self, image: Any) -> torch.Tensor:
        """One image (path, PIL image, HxW / HxWxC / CxHxW array or tensor) → uint8 (C, H, W)."""
        return image_to_uint8(image, self.input_size)

    def preprocess(self, images: Iterable[Any]) -> torch.Tensor:
        """A normalised float batch (N, C, H, W) from a list of images in any supported form."""
        batch = torch.stack([self.to_uint8(im) for im in images])
        return normalize_batch(batch.to(self.device), self.mean, self.std)

    # -- inference -----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, images: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) on the CPU. A float tensor batch (N, C, H, W) is
        taken as already normalised; anything else is preprocessed first."""
        if isinstance(images, torch.Tensor) and images.dim() == 4 and images.is_floating_point():
            batches = images.split(self.batch_size)
        else:
            items = (
                list(images)
                if not (isinstance(images, torch.Tensor) and images.dim() == 4)
                else list(images)
            )
            batches = [
                self.preprocess(items[i : i + self.batch_size])
                for i in range(0, len(items), self.batch_size)
            ]
        out = [F.softmax(self.logits(b) / self.temperature, dim=1).cpu() for b in batches]
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def batch_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the service's micro-batcher asks of a predictor for a normalised batch: here the
        class probabilities (:meth:`predict_proba`)."""
        return self.predict_proba(x)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, num_classes) for a normalised float batch, from the chosen backend."""
        if self.backend is not None:
            return self.backend(x).float().cpu()
        out = self.model(x.to(self.device))
        return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu()

    def predict(self, images: Sequence[Any] | torch.Tensor, top_k: int = 1) -> list[Prediction]:
        """Predictions for ``images`` (paths, PIL images, arrays or tensors), in order."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4
        ):
            images = [images]
        probs = self.predict_proba(images)
        sources = (
            [str(s) if isinstance(s, (str, Path)) else None for s in images]
            if not isinstance(images, torch.Tensor)
            else [None] * len(probs)
        )
        return [self._to_prediction(p, src, top_k) for p, src in zip(probs, sources)]

    def predict_files(
        self, paths: Sequence[str | Path], top_k: int = 1
    ) -> list[Prediction | PredictionError]:
        """Like :meth:`predict` for files, but a bad file yields a :class:`PredictionError` for it
        while every other file is still predicted."""
        good: list[tuple[int, torch.Tensor]] = []
        results: list[Prediction | PredictionError | None] = [None] * len(paths)
        for i, p in enumerate(paths):
            try:
                good.append((i, self.to_uint8(p)))
            except DataError as exc:
                results[i] = PredictionError(str(p), str(exc))
        for start in range(0, len(good), self.batch_size):
            chunk = good[start : start + self.batch_size]
            x = normalize_batch(
                torch.stack([t for _, t in chunk]).to(self.device), self.mean, self.std
            )
            probs = self.predict_proba(x)
            for (i, _), pr in zip(chunk, probs):
                results[i] = self._to_prediction(pr, str(paths[i]), top_k)
        return results  # type: ignore[return-value]

    def _to_prediction(self, probs: torch.Tensor, source: str | None, top_k: int) -> Prediction:
        k = max(1, min(top_k, len(self.classes)))
        vals, idx = probs.topk(k)
        top = [(self.classes[j], float(v)) for v, j in zip(vals.tolist(), idx.tolist())]
        return Prediction(top[0][0], int(idx[0]), top[0][1], top, source)


EXPORTED_SUFFIXES = (".onnx", ".pt", ".pth", ".ts", ".torchscript", ".jit")


AnyPredictor = Predictor | DensePredictor


def load(
    path: str | Path,
    device: str = "cpu",
    batch_size: int = 64,
    *,
    backend: str = "torch",
    threads: int | None = None,
) -> AnyPredictor:
    """A :class:`Predictor` from a run directory (``runs/x``) or an exported ``.onnx`` /
    TorchScript file (made by ``cnnlab export``; its metadata holds classes and preprocessing).
    A detection or segmentation run (or its export) gives a
    :class:`~cnnlab.deploy.dense_predict.DensePredictor`, whose ``predict`` returns boxes or masks.

    ``backend`` (run directories): ``torch`` (eager), ``channels_last``, ``jit`` (traced and
    frozen), ``onnx`` (ONNX Runtime, exported in memory), ``int8`` (static quantisation calibrated
    on the run's training images) or ``auto`` (measures torch/channels_last/jit/onnx here and keeps
    the fastest; see ``predictor.backend_choice``). TorchScript files hold code as well as weights:
    load only ones you made; ``.onnx`` and run directories are loaded without unpickling.

    Example::

        import cnnlab
        p = cnnlab.load("runs/simplecnn-digits", backend="auto")
        for pred in p.predict(["a.png", "b.png"], top_k=3):
            print(pred.label, pred.probability)
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    if not path.exists():
        raise RunError(
            f"{path} does not exist; pass a run directory such as runs/<name> or an exported "
            ".onnx / TorchScript file"
        )
    if path.is_file():
        return _load_exported(path, batch_size, backend, threads)
    return _load_run(path, device, batch_size, backend, threads)


def _load_exported(path: Path, batch_size: int, backend: str, threads: int | None) -> AnyPredictor:
    if path.suffix.lower() not in EXPORTED_SUFFIXES:
        raise RunError(
            f"{path} is not a run directory or an exported model ({', '.join(EXPORTED_SUFFIXES)})"
        )
    meta = read_metadata(path)
    if path.suffix.lower() == ".onnx":
        runner: Any = OnnxBackend(path, "int8" if meta.get("int8") else "onnx", threads)
    else:
        if backend not in ("torch", "auto"):
            raise RunError(f"{path} is TorchScript; it runs on the torch backend only")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.load's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
        runner = TorchBackend(module, "torch")
        runner.name = "torchscript"
    if meta.get("task") in DENSE_TASKS:
        return DensePredictor.from_exported(meta, runner, batch_size)
    return Predictor(
        None,  # type: ignore[arg-type]
        meta["classes"],
        meta["input_size"],
        meta["mean"],
        meta["std"],
        batch_size=batch_size,
        config=meta,
        backend=runner,
    )


def _load_run(
    path: Path, device: str, batch_size: int, backend: str, threads: int | None
) -> AnyPredictor:
    model, cfg = load_model_from_run(path)
    for key in ("classes", "input_size", "mean", "std"):
        if key not in cfg:
            raise RunError(f"{path / 'config.json'} lacks '{key}'")
    task = cfg.get("task", "classification")
    if task in DENSE_TASKS and backend == "int8":
        raise ConfigError(
            f"the int8 backend is calibrated for classification; a {task} run runs on torch, "
            "channels_last, jit, onnx or auto"
        )
    runner = None
    choice = None
    if backend != "torch":
        runner, choice = _build_backend(model, cfg, backend, threads)
    if task in DENSE_TASKS:
        dense = DensePredictor(model, cfg, device=device, batch_size=batch_size, backend=runner)
        dense.backend_choice = choice
        return dense
    p = Predictor(
        model,
        cfg["classes"],
        cfg["input_size"],
        cfg["mean"],
        cfg["std"],
        device=device,
        batch_size=batch_size,
        config=cfg,
        backend=runner,
    )
    p.backend_choice = choice
    return p


def _build_backend(model: torch.nn.Module, cfg: dict, backend: str, threads: int | None):
    size = tuple(cfg["input_size"])
    if backend == "auto":
        cands = [make_backend(n, model, size, threads=threads) for n in AUTO_CANDIDATES]
        choice = pick_fastest(cands, torch.zeros(1, *size))
        return choice.backend, choice
    calib = None
    if backend == "int8":
        splits = load_run_splits(cfg)
        if splits is None:
            raise RunError(
                "the int8 backend calibrates on the run's training images, which could not be loaded"
            )
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(splits.train), generator=g)[:256]
        calib = normalize_batch(splits.train.images[idx], cfg["mean"], cfg["std"]).numpy()
    return make_backend(backend, model, size, calibration=calib, threads=threads), None
