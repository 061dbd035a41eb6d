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
  var pre = document.createElement('pre');
  pre.id = 'cnnlab-check';
  pre.textContent = JSON.stringify({images: imgs.length, bad: bad, sections: secs,
                                    errors: window.__errors});
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
