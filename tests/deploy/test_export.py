"""Exported ONNX and TorchScript files reproduce PyTorch, carry their metadata, and fold BN right."""

from __future__ import annotations

import io
import json

import pytest
import torch

from cnnlab.deploy.backends import OnnxBackend, TorchBackend
from cnnlab.deploy.export import (
    compare_logits,
    export_onnx,
    export_run,
    export_torchscript,
    read_metadata,
)
from cnnlab.deploy.fold_bn import fold_batchnorm
from cnnlab.errors import RunError
from cnnlab.models import get_model

ZOO = [
    ("resnet18", {}, 64),
    ("vit_tiny", {}, 32),
    pytest.param("mobilenet_v2", {}, 64, marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", {}, 64, marks=pytest.mark.slow),
    pytest.param("convnext_tiny", {}, 64, marks=pytest.mark.slow),
]


def _randomised(name, kwargs):
    """A zoo model whose every weight is non-trivial (zero-initialised heads would hide errors)."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("name,kwargs,size", ZOO)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_zoo_export_parity(tmp_path, name, kwargs, size, fmt):
    model = _randomised(name, kwargs)
    shape = (3, size, size)
    meta = {
        "classes": [str(i) for i in range(10)],
        "input_size": list(shape),
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "model": {"name": name},
    }
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))  # batch 3 ≠ traced 2
    with torch.no_grad():
        ref = model(x)
    if fmt == "onnx":
        path = tmp_path / "m.onnx"
        export_onnx(model, path, input_size=shape, metadata=meta)
        out = OnnxBackend(path)(x)
    else:
        path = tmp_path / "m.torchscript.pt"
        export_torchscript(model, path, input_size=shape, metadata=meta)
        out = TorchBackend(torch.jit.load(str(path)))(x)
    parity = compare_logits(ref, out)
    assert ref.std() > 1e-3, "reference logits are degenerate"
    assert parity.max_abs_diff <= 1e-4 and parity.top1_agreement == 1.0, parity
    assert read_metadata(path)["classes"] == meta["classes"]


def test_compare_logits_detects_a_difference():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = compare_logits(a, a + torch.tensor([[0.0, 2.0], [0.0, 0.0]]))
    assert not p.passed and p.top1_agreement == 0.5 and p.max_abs_diff == pytest.approx(2.0)


def test_fold_bn_removes_batchnorm_and_keeps_outputs():
    model = _randomised("resnet18", {"small_input": True})
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    folded, n = fold_batchnorm(model, (3, 32, 32))
    assert n == 20
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - folded(x)).abs().max() < 1e-4


def test_onnx_has_dynamic_batch_and_metadata(tmp_path):
    import onnx

    buf = io.BytesIO()
    export_onnx(get_model("simplecnn").eval(), buf, input_size=(1, 28, 28), metadata={"a": 1})
    proto = onnx.load_from_string(buf.getvalue())
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    assert json.loads(proto.metadata_props[0].value) == {"a": 1}


def test_read_metadata_refuses_foreign_files(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(RunError, match="x.onnx"):
        read_metadata(bad)
    plain = tmp_path / "plain.onnx"
    export_onnx(get_model("simplecnn").eval(), plain, input_size=(1, 28, 28))
    with pytest.raises(RunError, match="no cnnlab metadata"):
        read_metadata(plain)


def test_export_run_checks_on_the_runs_test_images(digits_run, tmp_path):
    report = export_run(digits_run, "onnx", tmp_path / "m.onnx", fold_bn=True)
    row = report.rows[0]
    assert row["passed"] and row["max_abs_diff"] <= 1e-4 and row["top1_agreement"] == 1.0
    assert "test images of digits" in row["samples"] and row["size_mb"] > 0
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["classes"] == [str(i) for i in range(10)] and len(meta["weights_sha256"]) == 64


# --- latency and the int8 recipe (issue 20) -------------------------------------------------


def _slow_start(slow_calls: int, slow_s: float, fast_s: float):
    """A callable whose first ``slow_calls`` calls take ``slow_s`` and the rest ``fast_s``: the
    shape of a fresh process's first inferences."""
    import time

    n = [0]

    def fn():
        n[0] += 1
        time.sleep(slow_s if n[0] <= slow_calls else fast_s)

    return fn


def test_latency_waits_out_a_slow_start():
    from cnnlab.deploy.latency import measure_latency

    # 60 slow calls then fast ones: a fixed few-call window measured only the slow ones
    lat = measure_latency(_slow_start(60, 0.004, 0.0002), budget_s=0.1)
    assert lat.stable and lat.warmup_calls > 60
    assert lat.median < 0.001 and lat.p90 >= lat.median and lat.calls >= 10
    d = lat.to_dict()
    assert d["median_ms"] == pytest.approx(lat.median * 1000)


def test_percentile_matches_numpy():
    import numpy as np

    from cnnlab.deploy.latency import percentile

    xs = [0.3, 0.1, 0.9, 0.4, 0.2, 0.7]
    for q in (0, 25, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_int8_recipe_rule_prefers_accuracy_within_timing_noise():
    from cnnlab.deploy.int8 import choose_recipe

    rows = {  # the case: the fastest by a hair lost 0.83 points, another only 0.28
        "U8S8-per-channel": {"latency_ms": 0.50, "accuracy_drop": 0.83},
        "U8S8-per-tensor": {"latency_ms": 0.52, "accuracy_drop": 0.28},
        "S8S8-per-channel": {"latency_ms": 0.90, "accuracy_drop": 0.0},
    }
    best, rule = choose_recipe(rows, max_drop=1.0, noise=0.05)
    assert best == "U8S8-per-tensor"
    assert "5%" in rule and "most accurate" in rule
    # clearly slower recipes are not "equally fast", however accurate
    assert choose_recipe(rows, 1.0, 0.01)[0] == "U8S8-per-channel"
    # beyond the allowed drop: refused as fast, the most accurate is kept and the rule says so
    best, rule = choose_recipe(rows, max_drop=0.1, noise=0.05)
    assert best == "S8S8-per-channel"
    best, rule = choose_recipe({"a": {"latency_ms": 1, "accuracy_drop": 3}}, 1.0, 0.05)
    assert best == "a" and "no recipe within" in rule


def test_timing_noise_is_the_relative_spread_with_a_floor():
    from cnnlab.deploy.int8 import MIN_NOISE, timing_noise

    assert timing_noise([1.0] * 20) == MIN_NOISE
    assert timing_noise([1.0, 1.0, 1.2, 1.4, 0.8, 0.6, 1.0]) > MIN_NOISE
