"""Hostile or damaged ``config.json`` files: every one is a one-line error naming the field, exit
code 2, no traceback, and nothing allocated from the bad values (eval, predict, export, summary)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tests.conftest import run_cli

from cnnlab.errors import RunError
from cnnlab.run import load_model_from_run, read_run_config

HOSTILE = {
    "num_classes is a word": (("model", "kwargs", "num_classes"), "ten", "num_classes"),
    "a kwarg is a mapping": (("model", "kwargs", "channels"), {"a": 1}, "model.kwargs.channels"),
    "mean is a string": (("mean",), "0.5", "'mean'"),
    "std is zero": (("std",), [0.0], "'std' must be positive"),
    "temperature is hot": (("calibration",), {"temperature": "hot"}, "calibration.temperature"),
    "temperature is negative": (("calibration",), {"temperature": -1}, "calibration.temperature"),
    "input_size is huge": (("input_size",), [1, 100000, 100000], "'input_size'"),
    "input_size is a string": (("input_size",), "28x28", "'input_size'"),
    "fewer classes than outputs": (
        ("classes",),
        ["0", "1", "2"],
        "lists 3 classes but the model outputs 10",
    ),
    "model name is a number": (("model", "name"), 7, "model.name"),
}


def _poison(src, dst, path, value):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    node = cfg
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_config_is_one_line_naming_the_field(digits_run, tmp_path, case):
    path, value, needle = HOSTILE[case]
    run = _poison(digits_run, tmp_path / "run", path, value)
    with pytest.raises(RunError) as exc:
        load_model_from_run(run)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("command", ["predict", "eval", "export", "summary"])
def test_cli_commands_refuse_a_hostile_config_in_one_line(digits_run, tmp_path, command):
    run = _poison(digits_run, tmp_path / "run", ("input_size",), [1, 100000, 100000])
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    args = {
        "predict": ["predict", "--run", str(run), str(img)],
        "eval": ["eval", "--run", str(run)],
        "export": ["export", "--run", str(run)],
        "summary": ["summary", str(run)],
    }[command]
    res = run_cli(*args, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "input_size" in lines[0] and "Traceback" not in res.stderr


def test_oversized_and_non_json_configs_are_refused(digits_run, tmp_path):
    run = shutil.copytree(digits_run, tmp_path / "run")
    (run / "config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(RunError, match="not valid JSON"):
        read_run_config(run)
    (run / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RunError, match="not valid JSON|must be a JSON object"):
        read_run_config(run)
