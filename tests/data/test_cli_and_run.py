"""Through the real entry point: augment-preview, and a training run on a folder with bad files."""

from __future__ import annotations

import warnings

from PIL import Image
from tests.conftest import run_cli

from cnnlab.cli import main


def test_augment_preview_writes_a_grid(tmp_path):
    out = tmp_path / "preview.png"
    res = run_cli(
        "augment-preview", "--data", "digits", "--augment", "crop:4,flip", "--out", str(out),
        "--n", "3", "--seed", "1", "--variants", "4",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout
    im = Image.open(out)
    # 3 rows x (1 original + 4 variants) of 28x28 digits, scaled up 3x, with 2px gutters, under a
    # 46-px band holding the title and the column labels
    assert im.size == ((5 * 30 + 2) * 3, (3 * 30 + 2) * 3 + 46)


def test_augment_preview_bad_spec_is_one_line(tmp_path, capsys):
    code = main(["augment-preview", "--augment", "flip,blurr", "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unknown augmentation 'blurr'" in err[0]
    assert not (tmp_path / "p.png").exists()


def test_training_on_a_folder_with_bad_files_lists_them_in_skipped_txt(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    for cls, color in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 12), tuple(c + i for c in color)).save(root / cls / f"{i}.png")
    (root / "red" / "zero.jpg").write_bytes(b"")
    (root / "blue" / "fake.png").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            [
                "train", "--model", "simplecnn", "--data", "imagefolder", "--data-dir", str(root),
                "--image-size", "28", "--epochs", "1", "--batch-size", "4", "--name", "r",
                "--out-dir", str(tmp_path / "runs"), "--no-progress",
            ]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert [str(w.message) for w in caught if "skipped" in str(w.message)] == []  # no raw warning
    listed = (tmp_path / "runs" / "r" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(
        [str(root / "red" / "zero.jpg"), str(root / "blue" / "fake.png")]
    )
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if "skipped" in line]
    assert len(summary) == 1 and "skipped 2" in summary[0] and "skipped.txt" in summary[0]
