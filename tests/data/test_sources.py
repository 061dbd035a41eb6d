"""CSV manifests and CIFAR-10 (binary, and pickles that must hold nothing but plain data)."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import list_datasets, load_dataset
from cnnlab.data.cifar import load_plain_pickle
from cnnlab.errors import DataError


def test_all_sources_registered():
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "imagefolder", "csv"} <= set(
        list_datasets()
    )


def _png(path, v):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (v, v, v)).save(path)


def test_csv_manifest_with_header_and_split_column(tmp_path):
    rows = ["filename,label,split"]
    for i in range(6):
        _png(tmp_path / "img" / f"{i}.png", i * 40)
        rows.append(f"img/{i}.png,{'10' if i % 2 else '9'},{'val' if i >= 4 else 'train'}")
    (tmp_path / "img" / "bad.png").write_bytes(b"")
    rows.append("img/bad.png,9,train")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = load_dataset("csv", data_dir=tmp_path / "m.csv", image_size=5, cache_dir=tmp_path / "c")
    assert s.train.classes == ["9", "10"]  # integer labels sort numerically
    assert len(s.train) == 4 and len(s.test) == 2
    assert s.train.skipped[0][0].endswith("bad.png")
    assert s.test.labels.tolist() == [0, 1]


def test_csv_without_header_uses_a_stratified_split(tmp_path):
    lines = []
    for i in range(10):
        _png(tmp_path / f"{i}.png", i)
        lines.append(f"{tmp_path / f'{i}.png'},{'cat' if i < 5 else 'dog'}")
    (tmp_path / "list.csv").write_text("\n".join(lines))
    s = load_dataset(
        "csv", data_dir=tmp_path, image_size=4, cache_dir=tmp_path / "c", val_fraction=0.2
    )
    assert s.train.class_counts() == [4, 4] and s.test.class_counts() == [1, 1]


@pytest.mark.parametrize("case", ["missing_files", "one_label", "empty"])
def test_bad_csv_is_a_one_line_error(tmp_path, case):
    _png(tmp_path / "a.png", 1)
    text = {
        "missing_files": "path,label\na.png,x\nnope1.png,y\nsub/nope2.png,y\n",
        "one_label": "a.png,x\na.png,x\n",
        "empty": "",
    }[case]
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError) as exc:
        load_dataset("csv", data_dir=tmp_path / "m.csv", cache_dir=tmp_path / "c")
    msg = str(exc.value)
    assert "\n" not in msg
    if case == "missing_files":
        assert "2 missing file(s)" in msg and "nope1.png" in msg


def _cifar_arrays(n, seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 3072), dtype=np.uint8), g.integers(0, 10, n)


def test_cifar10_binary_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    expected = {}
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        data, labels = _cifar_arrays(7, len(expected))
        rec = np.concatenate([labels.astype(np.uint8)[:, None], data], 1)
        rec.tofile(d / f"{name}.bin")
        expected[name] = (data, labels)
    s = load_dataset("cifar10", data_dir=tmp_path)
    assert s.train.images.shape == (14, 3, 32, 32) and s.test.images.shape == (7, 3, 32, 32)
    assert s.train.classes[0] == "airplane" and s.train.num_classes == 10
    d1, l1 = expected["data_batch_1"]
    assert torch.equal(s.train.images[0], torch.from_numpy(d1[0].reshape(3, 32, 32)))
    assert s.train.labels[:7].tolist() == l1.tolist()


def test_cifar10_truncated_binary_is_an_error(tmp_path):
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3073)
    with pytest.raises(DataError, match="not a CIFAR-10 binary batch"):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_pickles_load_as_plain_data(tmp_path, protocol):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in ["data_batch_1", "test_batch"]:
        data, labels = _cifar_arrays(5, 1)
        batch = {
            b"batch_label": b"x",
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [b"a"] * 5,
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    s = load_dataset("cifar10", data_dir=tmp_path)
    assert s.train.images.shape == (5, 3, 32, 32)
    assert torch.equal(s.test.images[1], torch.from_numpy(data[1].reshape(3, 32, 32)))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Custom:
    pass


@pytest.mark.parametrize(
    "payload",
    [
        {b"data": _Evil()},
        {b"data": _Custom()},
        {b"data": np.array([1, "a"], dtype=object)},
        {b"data": np.zeros(3), b"f": np.float64(1.0).__class__},
    ],
)
def test_pickles_holding_anything_but_plain_data_are_refused(tmp_path, payload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as exc:
        load_plain_pickle(bad)
    assert "not a plain-data CIFAR pickle" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path)
