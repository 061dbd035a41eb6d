"""CIFAR-10 from its distributed files, read without trusting them.

The binary layout (``cifar-10-batches-bin``: ``data_batch_1.bin`` … ``test_batch.bin``, each record one
label byte and 3,072 pixel bytes) is read as raw bytes. The "python version" (``cifar-10-batches-py``)
is a pickle, and unpickling runs code; it is read only through :class:`PlainDataUnpickler`, which
accepts dicts, lists, strings, numbers and plain numeric numpy arrays and refuses every other object
with a :class:`DataError` — a tampered file cannot execute anything.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.base import DatasetSplits, ImageDataset, register_dataset
from cnnlab.errors import DataError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
DEFAULT_DIRS = ["/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10", "data/cifar10"]
HOW_TO_GET = (
    "download cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir to the folder "
    "holding cifar-10-batches-bin (or cifar-10-batches-py)"
)
RECORD = 1 + 3 * 32 * 32


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _numpy_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    return _frombuffer


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than text→latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


class PlainDataUnpickler(pickle.Unpickler):
    """An unpickler for plain data: containers, strings, numbers and numeric numpy arrays only.

    Pickle can call any importable function while loading; this one resolves only the globals numpy
    itself uses to rebuild an ndarray (``_reconstruct``/``_frombuffer``, ``ndarray``, ``dtype``), plus
    the two Python uses to spell bytes in protocol 2 (``_codecs.encode`` to latin-1 and an empty
    ``bytes()``), each wrapped to accept only those uses, and refuses every other global. Arrays of Python objects are refused after loading too.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        ):
            return _numpy_reconstruct()
        if (module, name) in (
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        ):
            return _numpy_frombuffer()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _empty_bytes
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 20:
        raise pickle.UnpicklingError("nesting too deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"refusing an array of dtype {obj.dtype}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, depth + 1)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None))):
        raise pickle.UnpicklingError(f"refusing an object of type {type(obj).__name__}")


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing plain data only; anything else is a one-line :class:`DataError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
        obj = PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
        _check_plain(obj)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{path} is not a plain-data CIFAR pickle and was not loaded ({exc}); "
            "use the binary version (cifar-10-batches-bin) or a trusted copy"
        ) from None
    return obj


def _get(d: dict, key: str) -> Any:
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes is not a multiple of {RECORD})"
        )
    rec = raw.reshape(-1, RECORD)
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    if int(labels.max()) >= 10:
        raise DataError(f"{path} holds label {int(labels.max())}; CIFAR-10 labels are 0..9")
    images = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def _read_py(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_plain_pickle(path)
    try:
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, "labels"), dtype=np.int64)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(f"{path} lacks the 'data' and 'labels' entries of a CIFAR batch") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected data of shape (N, 3072); got {data.shape}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _resolve(data_dir: str | Path | None) -> tuple[Path, str]:
    cands = [Path(data_dir)] if data_dir is not None else [Path(c) for c in DEFAULT_DIRS]
    for c in cands:
        for folder, kind in (
            (c / "cifar-10-batches-bin", "bin"),
            (c / "cifar-10-batches-py", "py"),
            (c, "bin"),
            (c, "py"),
        ):
            probe = "data_batch_1.bin" if kind == "bin" else "data_batch_1"
            if (folder / probe).is_file():
                return folder, kind
    where = str(data_dir) if data_dir is not None else ", ".join(DEFAULT_DIRS)
    raise DataError(f"CIFAR-10 files not found in {where}; {HOW_TO_GET}")


@register_dataset("cifar10")
def load_cifar10(*, data_dir: str | Path | None = None, **_: object) -> DatasetSplits:
    """CIFAR-10 (50,000 train / 10,000 test, 3x32x32) from the binary or (safely) the pickled files."""
    folder, kind = _resolve(data_dir)
    read = _read_bin if kind == "bin" else _read_py
    suffix = ".bin" if kind == "bin" else ""
    train_files = sorted(folder.glob(f"data_batch_[0-9]{suffix}"))
    test_file = folder / f"test_batch{suffix}"
    if not test_file.is_file():
        raise DataError(f"{folder} lacks {test_file.name}; {HOW_TO_GET}")
    parts = [read(f) for f in train_files]
    test_x, test_y = read(test_file)
    train = ImageDataset(
        torch.cat([x for x, _ in parts]),
        torch.cat([y for _, y in parts]),
        list(CIFAR10_CLASSES),
        "cifar10",
    )
    return DatasetSplits(train, ImageDataset(test_x, test_y, list(CIFAR10_CLASSES), "cifar10"))
