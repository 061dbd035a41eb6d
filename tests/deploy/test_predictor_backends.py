"""The predictor on every backend, from run directories and exported files, with calibration."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import cnnlab
from cnnlab.data import load_dataset
from cnnlab.deploy.export import export_run
from cnnlab.errors import RunError, UnknownNameError


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits").test


@pytest.mark.parametrize("backend", ["channels_last", "jit", "onnx"])
def test_backends_agree_with_eager(digits_run, digits_test, backend):
    eager = cnnlab.load(digits_run)
    other = cnnlab.load(digits_run, backend=backend)
    assert other.backend_name == backend
    x = digits_test.images[:64].numpy()
    assert torch.allclose(eager.predict_proba(x), other.predict_proba(x), atol=1e-5)


def test_auto_measures_and_records_the_choice(digits_run):
    p = cnnlab.load(digits_run, backend="auto")
    medians = p.backend_choice.medians
    assert set(medians) == {"torch", "channels_last", "jit", "onnx"}
    assert p.backend_name == min(medians, key=medians.get)


def test_unknown_backend_lists_choices(digits_run):
    with pytest.raises(UnknownNameError, match="Valid backends"):
        cnnlab.load(digits_run, backend="tensorrt")


def test_exported_files_load_alone(digits_run, digits_test, tmp_path):
    export_run(digits_run, "onnx", tmp_path / "m.onnx")
    export_run(digits_run, "torchscript", tmp_path / "m.torchscript.pt")
    ref = cnnlab.load(digits_run).predict(digits_test.images[:32].numpy(), top_k=3)
    for f in ("m.onnx", "m.torchscript.pt"):
        p = cnnlab.load(tmp_path / f)
        got = p.predict(digits_test.images[:32].numpy(), top_k=3)
        assert [g.label for g in got] == [r.label for r in ref]
        assert max(abs(g.probability - r.probability) for g, r in zip(got, ref)) < 1e-5


def test_int8_accuracy_drop_within_one_point(digits_run, tmp_path):
    report = export_run(digits_run, "onnx", tmp_path / "m.onnx", int8=True)
    q = report.int8
    assert q["test_images"] == len(load_dataset("digits").test)
    assert q["accuracy_drop"] <= 1.0 and q["agreement"] >= 97.0
    assert set(q["candidates"]) >= {"U8S8-per-channel", "S8S8-per-channel"}
    p = cnnlab.load(tmp_path / "m.int8.onnx")
    assert p.backend_name == "int8" and len(p.classes) == 10


def test_temperature_changes_probabilities_not_labels(digits_run, digits_test, tmp_path):
    run = tmp_path / "calibrated"
    shutil.copytree(digits_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["calibration"] = {"temperature": 3.0}
    (run / "config.json").write_text(json.dumps(cfg))
    x = digits_test.images[:32].numpy()
    plain, hot = cnnlab.load(digits_run), cnnlab.load(run)
    logits = plain.logits(plain.preprocess(list(x)))
    assert torch.allclose(hot.predict_proba(x), torch.softmax(logits / 3.0, 1), atol=1e-6)
    assert [p.label for p in plain.predict(x)] == [p.label for p in hot.predict(x)]


def test_not_a_model_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hi")
    with pytest.raises(RunError, match="notes.txt"):
        cnnlab.load(f)
