"""`cnnlab export`, `cnnlab bench` and `cnnlab predict --backend` through the real entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli


def test_export_onnx_prints_parity_table(digits_run, tmp_path):
    out = tmp_path / "m.onnx"
    res = run_cli(
        "export", "--run", str(digits_run), "--format", "onnx", "-o", str(out), "--fold-bn"
    )
    assert res.returncode == 0, res.stderr
    assert "max |diff|" in res.stdout and " ok " in res.stdout and out.stat().st_size > 0
    assert "test images of digits" in res.stdout


@pytest.mark.slow
def test_export_int8_reports_accuracy_drop(digits_run, tmp_path):
    res = run_cli(
        "export", "--run", str(digits_run), "-o", str(tmp_path / "m.onnx"), "--int8", "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    q = report["int8"]
    assert q["accuracy_drop"] <= 1.0
    assert (tmp_path / "m.int8.onnx").exists()
    # one set of figures: the table's int8 row quotes the full-split measurement
    row = report["rows"][1]
    assert row["top1_agreement"] == pytest.approx(q["agreement"] / 100)
    assert row["latency_ms"] == pytest.approx(q["int8_ms"])
    assert f"{q['test_images']} test images" in row["samples"] and q["test_images"] == 360
    assert "most accurate" in q["rule"]


def test_export_text_prints_accuracy_changes_with_their_sign(capsys):
    from cnnlab.cli.export import _print_report
    from cnnlab.deploy.export import ExportReport

    cand = {"latency_ms": 0.5, "int8_acc": 90.0, "accuracy_drop": 0.83, "agreement": 99.2}
    q = {
        "config": "U8S8-per-tensor", "rule": "RULE TEXT", "fp32_acc": 90.83, "int8_acc": 90.0,
        "accuracy_drop": 0.83, "agreement": 99.17, "test_images": 360, "fp32_ms": 0.6,
        "candidates": {"U8S8-per-tensor": cand},
    }  # fmt: skip
    _print_report(ExportReport(rows=[], int8=q), as_json=False)
    out = capsys.readouterr().out
    assert "(-0.83 points)" in out and "+0.83" not in out
    assert "rule: RULE TEXT" in out and "99.17%" in out and "360 test images" in out


def test_export_failed_check_fails_the_command(digits_run, tmp_path):
    # an impossible tolerance: the check must fail and say so, in one line, with exit code 1
    res = run_cli(
        "export",
        "--run",
        str(digits_run),
        "-o",
        str(tmp_path / "m.onnx"),
        "--atol",
        "-1",
    )
    assert res.returncode == 1
    assert res.stderr.strip().startswith("cnnlab export: error: export check failed")
    assert "Traceback" not in res.stderr


def test_export_torchscript_then_predict_with_it(digits_run, tmp_path):
    ts = tmp_path / "m.torchscript.pt"
    assert (
        run_cli(
            "export", "--run", str(digits_run), "--format", "torchscript", "-o", str(ts)
        ).returncode
        == 0
    )
    img = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(img)
    a = run_cli("predict", "--model", str(ts), str(img), "--format", "json")
    b = run_cli(
        "predict", "--run", str(digits_run), str(img), "--format", "json", "--backend", "onnx"
    )
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    pa, pb = json.loads(a.stdout)[0], json.loads(b.stdout)[0]
    assert pa["label"] == pb["label"] and abs(pa["probability"] - pb["probability"]) < 1e-5


def test_bench_prints_a_table_of_measurements():
    res = run_cli(
        "bench", "simplecnn", "--backend", "torch,onnx", "--batch", "1,4", "--rounds", "2"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["backend", "batch", "size"] and "MACs" in lines[0]
    rows = [ln.split() for ln in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("torch", "1"),
        ("onnx", "1"),
        ("torch", "4"),
        ("onnx", "4"),
    ]
    for r in rows:
        p50, p90, p99, ips = map(float, r[3:7])
        assert 0 < p50 <= p90 <= p99 and ips > 0
        assert r[7] == "421,642"  # the course SimpleCNN's real parameter count


def test_bench_unknown_backend_is_one_line(tmp_path):
    res = run_cli("bench", "simplecnn", "--backend", "tensorrt")
    assert res.returncode == 2 and "unknown backend 'tensorrt'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_serve_refuses_torchscript(tmp_path):
    f = tmp_path / "m.torchscript.pt"
    f.write_bytes(b"x")
    res = run_cli("serve", "--model", str(f))
    assert res.returncode == 2 and "onnx" in res.stderr and "Traceback" not in res.stderr


def test_bench_reports_each_phase_and_streams_rows():
    from cnnlab.deploy.bench import benchmark

    steps, rows = [], []
    out = benchmark(
        "simplecnn", ("torch",), (1, 2), rounds=1, per_round=2, on_row=rows.append,
        on_step=steps.append,
    )  # fmt: skip
    assert rows == out and [r.batch for r in rows] == [1, 2]
    assert any("warming up torch" in s for s in steps)
    assert any("timing round 1/1" in s for s in steps)


def test_predict_and_explain_print_no_python_warnings(digits_run, tmp_path):
    import os
    import subprocess
    import sys

    img = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # warnings shown
    for args in (
        ["predict", "--run", str(digits_run), str(img)],
        ["explain", "--run", str(digits_run), str(img), "--out", str(tmp_path / "ex")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, env=env,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr


def test_predictor_api_raises_no_warning(digits_run, tmp_path):
    import warnings

    import cnnlab

    img = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cnnlab.load(digits_run).predict([str(img)], top_k=3)
    assert len(out[0].top_k) == 3
