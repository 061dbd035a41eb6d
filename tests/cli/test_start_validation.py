"""A config that cannot run fails before anything is written: exit 2, one line, no run directory."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--augment", "flp"], "augmentation"),
        (["--schedule.name", "cosnie"], "schedule"),
        (["--model", "vgg11", "--image-size", "8"], "8x8"),
        (["--model", "fastnet", "--model_kwargs.bogus", "3"], "its options: bn_scale"),
        (
            [
                "--model",
                "fastnet",
                "--model_kwargs.whiten_kernel",
                "5",
                "--model_kwargs.whiten",
                "true",
            ],
            "whiten_kernel must be 2 or 3",
        ),
    ],
)
def test_bad_config_exits_2_and_leaves_no_run_directory(tmp_path, extra, message):
    res = run_cli(
        "train", "--data", "digits", "--epochs", "1", "--out-dir", str(tmp_path / "runs"),
        "--name", "x", "--no-progress", *extra,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
