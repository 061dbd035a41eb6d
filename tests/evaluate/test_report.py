"""report.html: self-contained, every section present, and it renders in a real headless browser."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cnnlab.evaluate.report import COMPARE_SECTIONS, SECTIONS, write_comparison, write_report

CHECK_HEAD = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.tagName)) || 'error'));
}, true);
(function () {
  var orig = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
</script>"""
CHECK_TAIL = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.alt || i.src.slice(0, 40); });
  var secs = Array.prototype.map.call(document.querySelectorAll('section'), function (s) {
    return s.id;
  });
  // rendered size of the labels under the gallery images, per section (px)
  var labels = {};
  Array.prototype.forEach.call(document.querySelectorAll('section'), function (s) {
    var caps = s.querySelectorAll('figcaption');
    if (!caps.length) return;
    var sizes = Array.prototype.map.call(caps, function (c) {
      return parseFloat(getComputedStyle(c).fontSize);
    });
    var tiles = Array.prototype.map.call(s.querySelectorAll('figure img'), function (i) {
      return i.getBoundingClientRect().width;
    });
    labels[s.id] = {count: caps.length, min_font_px: Math.min.apply(null, sizes),
                    min_image_px: Math.min.apply(null, tiles)};
  });
  var pre = document.createElement('pre');
  pre.id = 'cnnlab-check';
  pre.textContent = JSON.stringify({images: imgs.length, bad: bad, sections: secs,
                                    errors: window.__errors, labels: labels});
  document.body.appendChild(pre);
});
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "chromium"],
                capture_output=True,
                timeout=900,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        path = _find_chromium()
    if path is None:
        pytest.skip(
            "chromium is not installed and could not be installed (apt-get install chromium)"
        )
    return path


def browser_check(chromium: str, page: Path, tmp_path: Path) -> tuple[dict, str]:
    """Load a copy of ``page`` with an error recorder and an image/section checker injected;
    returns the checker's findings and chromium's stderr."""
    text = page.read_text(encoding="utf-8")
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(
        text.replace("<head>", "<head>" + CHECK_HEAD, 1).replace(
            "</body>", CHECK_TAIL + "</body>", 1
        ),
        encoding="utf-8",
    )
    res = subprocess.run(
        [
            chromium,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'chrome-profile'}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    m = re.search(r'<pre id="cnnlab-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the page did not finish loading in chromium: {res.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), res.stderr


def _console_errors(stderr: str) -> list[str]:
    return [
        ln for ln in stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "rror" in ln)
    ]


@pytest.fixture(scope="module")
def report(digits_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(digits_run, run)
    return write_report(run, device="cpu")


def test_report_is_self_contained_with_every_section(report):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in text and html.escape(title) in text, sid
    assert not re.search(r'(src|href)="(https?:|//)', text), "external resources"
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(srcs) >= 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for needle in ("macro avg", "weighted avg", "parameters", "MACs", "ms per image", "TTA (flip)"):
        assert needle in text, needle
    assert "not available" not in text, re.findall(r'class="missing">([^<]*)', text)


def test_report_renders_in_headless_chromium(report, chromium, tmp_path):
    found, stderr = browser_check(chromium, report, tmp_path)
    assert found["errors"] == [] and _console_errors(stderr) == []
    assert found["sections"] == [sid for sid, _ in SECTIONS]
    assert found["images"] >= 9 and found["bad"] == []
    # the true/pred labels of Grad-CAM and top losses are readable text, not 5-px pixels in a PNG
    for sid in ("gradcam", "top-losses"):
        labels = found["labels"][sid]
        assert labels["count"] >= 6 and labels["min_font_px"] >= 12, (sid, labels)
        assert labels["min_image_px"] >= 96, (sid, labels)


def test_browser_check_catches_broken_images_and_script_errors(report, chromium, tmp_path):
    """The harness itself can fail: a broken image and a script error are both reported."""
    broken = tmp_path / "broken.html"
    bad = '<img alt="broken" src="data:image/png;base64,AAAA"><script>noSuchFunction();</script>'
    broken.write_text(
        report.read_text(encoding="utf-8").replace("</main>", bad + "</main>", 1), encoding="utf-8"
    )
    found, _ = browser_check(chromium, broken, tmp_path)
    assert found["bad"] == ["broken"]
    assert any("noSuchFunction" in e for e in found["errors"])


def test_comparison_page(digits_run, report, chromium, tmp_path):
    out = write_comparison(
        [digits_run, report.parent], tmp_path / "cmp" / "compare.html", device="cpu"
    )
    text = out.read_text(encoding="utf-8")
    assert digits_run.name in text and report.parent.name in text
    found, stderr = browser_check(chromium, out, tmp_path)
    assert found["sections"] == [sid for sid, _ in COMPARE_SECTIONS]
    assert found["errors"] == [] and found["bad"] == [] and found["images"] >= 1
    assert _console_errors(stderr) == []


# --- issue 20: what the report says about its weights, its data and its quick version ---------

THREE = ["cat", "dog", "fox"]


def _register_three_class_source() -> None:
    import torch

    from cnnlab.data import DatasetSplits, ImageDataset, list_datasets, register_dataset

    if "report-three" in list_datasets():
        return

    @register_dataset("report-three")
    def _load(**_: object) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)
        n = 36
        labels = torch.arange(n) % 3
        images = torch.randint(0, 80, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
        for c in range(3):  # learnable: a bright band whose row depends on the class
            images[labels == c, :, 8 * c : 8 * c + 6] = 240
        ds = ImageDataset(images, labels, list(THREE), "report-three")
        return DatasetSplits(ds, ds)


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory) -> Path:
    """Two epochs on three classes, frozen for the first, whose best epoch is made epoch 1 (the
    best checkpoint of epoch 2, if any, is removed and summary.json says so)."""
    from cnnlab.train import TrainConfig, fit
    from cnnlab.train.config import DataConfig, TransferConfig

    _register_three_class_source()
    out = tmp_path_factory.mktemp("three")
    res = fit(
        TrainConfig(
            model="simplecnn", data=DataConfig(name="report-three"), epochs=2, batch_size=12,
            out_dir=str(out), name="three", progress=False, report=False,
            transfer=TransferConfig(freeze="early", unfreeze_at=1),
        )
    )  # fmt: skip
    run = res.run_dir
    for d in (run / "checkpoints").glob("best-0002"):
        shutil.rmtree(d)
    summary = json.loads((run / "summary.json").read_text())
    final = summary["final"]["test_acc"]
    summary["best"] = {**summary["best"], "epoch": 1, "value": min(final + 0.25, 1.0)}
    if summary["best"]["value"] == final:
        summary["best"]["value"] = final - 0.25
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _section(text: str, sid: str) -> str:
    return text.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def test_top_k_is_hidden_when_it_cannot_miss(three_class_run):
    text = write_report(three_class_run, quick=True, device="cpu").read_text()
    summary = _section(text, "summary")
    assert "top-5" not in summary and "top-1 accuracy" in summary


def test_report_says_which_weights_and_offers_the_best(three_class_run):
    text = write_report(three_class_run, quick=True, device="cpu").read_text()
    note = _section(text, "summary")
    assert "describes the <b>final</b> weights" in note
    assert "The best epoch was <b>1</b>" in note and "checkpoints/best-0001" in note
    assert "--weights best" in note
    best = write_report(three_class_run, quick=True, device="cpu", weights="best")
    assert best.name == "report-best.html"
    assert "describes the <b>best</b> epoch" in best.read_text()
    assert (three_class_run / "report-best" / "confusion.png").exists()  # the final's untouched


def test_report_has_a_data_summary_and_explains_quick(three_class_run):
    (three_class_run / "skipped.txt").write_text("a.png\tcannot decode\nb.png\tcannot decode\n")
    text = write_report(three_class_run, quick=True, device="cpu").read_text()
    data = _section(text, "data")
    for needle in ("report-three", "training images", "test images", "2 (listed in skipped.txt)"):
        assert needle in data, needle
    assert all(c in data for c in THREE)
    header = text.split("</header>", 1)[0]
    assert "quick report, written at the end of training" in header
    assert "cnnlab report RUN" in header


def test_unfreezing_is_marked_on_the_curves(three_class_run):
    from cnnlab.evaluate.plots import run_markers

    cfg = json.loads((three_class_run / "config.json").read_text())
    assert run_markers(cfg["train_config"]) == {1.5: "unfrozen after epoch 1 (--unfreeze-at 1)"}
    text = write_report(three_class_run, quick=True, device="cpu").read_text()
    assert "Dashed line: unfrozen after epoch 1" in _section(text, "curves")
    assert run_markers({"transfer": {"freeze": "none", "unfreeze_at": 3}, "epochs": 5}) == {}
