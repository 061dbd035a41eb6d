"""Every command of the README's quick tour, and its Python snippet, runs.

The commands are read from README.md itself (the ``bash`` block under "Quick tour"), so a command
added there without a way to run it here fails :func:`test_every_tour_command_has_a_fast_form`.
The fast set runs each one as written except for what makes it long: ``--epochs`` 1 (4 where
``--unfreeze-at 3`` needs it), a handful of LR-finder steps, small benchmark sizes, tiny
Fashion-MNIST IDX files through ``--data-dir``, and ``report --quick``. Placeholders become real
files: ``runs/<name>`` a trained run, ``img.png`` / ``photo.png`` / ``more/`` / ``"*.jpg"`` images,
``photos/`` a small image folder, ``runs/base`` a ResNet-18 run on it. ``-m slow`` runs the tour
exactly as written (the full epochs, the real Fashion-MNIST).
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import DatasetSplits, ImageDataset, list_datasets, register_dataset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def tour_commands(text: str | None = None) -> list[str]:
    """The commands of the README's quick-tour block, continuation lines joined, comments off."""
    text = README.read_text() if text is None else text
    block = text.split("## Quick tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    out = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def python_snippet() -> str:
    text = README.read_text()
    return text.split("```python", 1)[1].split("```", 1)[0]


COMMANDS = tour_commands()


# --- the files the tour's placeholders stand for --------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _tiny_fashion(folder: Path) -> Path:
    """Fashion-MNIST's four IDX files with 60 training and 20 test images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for c in range(10):  # learnable: a bright band at a class-dependent row
            images[labels == c, 2 * c : 2 * c + 4] = 230
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def _photos(folder: Path) -> Path:
    for k, c in enumerate(("cats", "dogs")):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            arr = np.full((40, 40, 3), 30 + 20 * i, np.uint8)
            arr[:, :, k] = 200  # red cats, green dogs
            Image.fromarray(arr).save(folder / c / f"{i}.png")
    return folder


def _register_resumable_source() -> None:
    if "readme-tiny" in list_datasets():
        return

    @register_dataset("readme-tiny")
    def _load(**_: object) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(32) % 2
        images = torch.randint(0, 60, (32, 1, 28, 28), dtype=torch.uint8, generator=g)
        images[labels == 1, :, :14] = 240
        ds = ImageDataset(images, labels, ["dark", "bright"], "readme-tiny")
        return DatasetSplits(ds, ds)


def _interrupted_run(out: Path) -> Path:
    """A run stopped by Ctrl-C after its first of three epochs (what --resume continues)."""
    from cnnlab.train import TrainConfig, fit
    from cnnlab.train.callbacks import Callback
    from cnnlab.train.config import DataConfig

    class CtrlC(Callback):
        def on_epoch_start(self, state) -> None:
            if state.epoch == 1:
                raise KeyboardInterrupt

    _register_resumable_source()
    cfg = TrainConfig(
        model="simplecnn", data=DataConfig(name="readme-tiny"), epochs=3, batch_size=16,
        out_dir=str(out), name="killed", progress=False, report=False,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callbacks=[CtrlC()])
    return out / "killed"


@pytest.fixture(scope="module")
def tour(digits_run, tmp_path_factory):
    """A working directory holding every file the tour names, and the substitutions."""
    from cnnlab.train import TrainConfig, fit
    from cnnlab.train.config import DataConfig

    work = tmp_path_factory.mktemp("tour")
    runs = work / "runs"
    runs.mkdir()
    for name in ("trained", "a", "b", "c"):
        shutil.copytree(digits_run, runs / name)
    digit = np.asarray(Image.new("L", (28, 28), 0))
    for p in ("img.png", "photo.png", "digit.png", "more/one.png", "two.jpg"):
        (work / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digit).convert("RGB" if p.endswith("jpg") else "L").save(work / p)
    _photos(work / "photos")
    fit(
        TrainConfig(
            model="resnet18", data=DataConfig(name="imagefolder", data_dir=str(work / "photos"),
            image_size=64), epochs=1, batch_size=4, out_dir=str(runs), name="base",
            progress=False, report=False,
        )
    )  # fmt: skip
    killed = _interrupted_run(runs)
    fashion = _tiny_fashion(work / "fashion-tiny")
    return {"work": work, "runs": runs, "killed": killed, "fashion": fashion}


# --- each command in its fast form -------------------------------------------------------------


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced, or the flag appended."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def fast_form(command: str, tour: dict) -> tuple[str, list[str]]:
    """How to run ``command`` quickly: ``("cli", argv)`` in this process, ``("torchrun", argv)``
    or ``("serve", argv)`` as a child process. Unknown shapes raise, so the README cannot grow
    a command this file does not run."""
    argv = shlex.split(command)
    tool, args = argv[0], argv[1:]
    if tool == "torchrun":
        # `...` stands for any train options: a small image folder, one epoch
        assert args[-1] == "...", command
        extra = ["--data", "imagefolder", "--data-dir", "photos/", "--image-size", "28",
                 "--epochs", "1", "--batch-size", "4", "--report", "false", "--no-progress"]  # fmt: skip
        return "torchrun", [*args[:-1], *extra]
    assert tool == "cnnlab", command
    name = "runs/killed" if args[:2] == ["train", "--resume"] else "runs/trained"
    args = [a.replace("runs/<name>", name) for a in args]
    sub = args[0]
    if sub == "train" and "--resume" not in args:
        epochs = "4" if "--unfreeze-at" in args else "1"
        args = _set(args, "--epochs", epochs)
        args = [*args, "--report", "false", "--no-progress", "--out-dir", "runs"]
        if "fashion-mnist" in args or "--recipe" in args:
            args = _set(args, "--data-dir", str(tour["fashion"]))
            args = _set(args, "--batch-size", "16")
        if "--data-dir" in args and "photos/" in args:
            args = _set(args, "--batch-size", "4")
    elif sub == "train":
        args = [*args, "--no-progress"]
    elif sub == "lr-find":
        args = [*args, "--steps", "5", "--batch-size", "8", "--no-progress"]
    elif sub == "report":
        args = [*args, "--quick"]
    elif sub == "bench":
        args = _set(_set(args, "--size", "32"), "--batch", "1,2")
        args = [*args, "--rounds", "1"]
    elif sub == "serve":
        return "serve", args
    elif sub not in ("models", "arith", "rf", "summary", "kernels", "viz", "augment-preview",
                     "eval", "explain", "predict", "export"):  # fmt: skip
        raise AssertionError(f"no fast form for README command: {command}")
    return "cli", args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_serve(args: list[str], cwd: Path) -> None:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *args, "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise AssertionError("cnnlab serve did not answer /health within 120 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _run_torchrun(args: list[str], cwd: Path) -> None:
    launcher = Path(sys.executable).with_name("torchrun")
    cmd = [str(launcher), "--master_port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy" in done.stdout


def test_every_tour_command_has_a_fast_form(tour):
    assert len(COMMANDS) >= 20
    for command in COMMANDS:
        fast_form(command, tour)  # raises for an unknown command


def test_the_tour_is_read_from_the_readme():
    cmds = tour_commands(
        "## Quick tour\n```bash\n# a comment\ncnnlab a --x 1 \\\n    --y '2 3'   # note\n\n```\n"
    )
    assert cmds == ["cnnlab a --x 1 --y '2 3'"]


@pytest.mark.parametrize("command", COMMANDS)
def test_tour_command_runs(command, tour, monkeypatch, capsys):
    kind, args = fast_form(command, tour)
    monkeypatch.chdir(tour["work"])
    if kind == "serve":
        _run_serve(args, tour["work"])
        return
    if kind == "torchrun":
        _run_torchrun(args, tour["work"])
        return
    code = main(args)
    cap = capsys.readouterr()
    assert code == 0, f"`{shlex.join(args)}` exited {code}: {cap.err[-2000:]}"
    assert "Traceback" not in cap.err


def test_python_snippet_runs(tour, monkeypatch, capsys):
    code = python_snippet()
    code = code.replace('TrainConfig(model="simplecnn", epochs=5)',
                        'TrainConfig(model="simplecnn", epochs=1, progress=False, report=False)')  # fmt: skip
    assert "epochs=1" in code, "the README's fit(...) line changed: update this test"
    monkeypatch.chdir(tour["work"])
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"\[\('\d', [0-9.]+\)", out), out


# --- exactly as written (long) -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_tour_command_runs_as_written(command, tour, monkeypatch, capsys):
    args = shlex.split(command)
    if args[0] == "torchrun" or "serve" in args:
        pytest.skip("covered by the fast form (needs a process of its own)")
    if ("fashion-mnist" in args or "--recipe" in args) and not FASHION_DIR.exists():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_DIR}")
    name = "runs/killed" if args[1:3] == ["train", "--resume"] else "runs/trained"
    args = [a.replace("runs/<name>", name) for a in args[1:]]
    monkeypatch.chdir(tour["work"])
    code = main(args)
    assert code == 0, capsys.readouterr().err[-2000:]
