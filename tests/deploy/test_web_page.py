"""The web page at ``/``, driven in a real headless Chromium (Playwright, the system browser).

Upload an image and see its prediction with top-k bars; upload a non-image and see it named as
rejected; turn on Grad-CAM and see the overlay; see a detection run's boxes and a segmentation
run's mask; open ``/docs``. Every request the page makes must
go to the cnnlab server itself (it works offline). Skips when no Chromium is installed; no browser
is ever downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.deploy.conftest import KEY

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()),
    shutil.which("chromium"),
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium (apt-get install chromium); none is downloaded"
)


@pytest.fixture(scope="module")
def page(shared_server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(extra_http_headers=KEY)
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        hosts: set[str] = set()
        # blob: and data: URLs (thumbnails, the heat map) have no host and never leave the page
        pg.on(
            "request",
            lambda r: (
                hosts.add(urlparse(r.url).netloc)
                if urlparse(r.url).scheme in ("http", "https", "ws", "wss")
                else None
            ),
        )
        pg.hosts = hosts  # type: ignore[attr-defined]
        yield pg
        context.close()
        browser.close()


def test_page_shows_the_model_card(page, shared_server):
    page.goto(shared_server.base + "/")
    page.locator('dd[data-field="architecture"]').filter(has_text="simplecnn").wait_for()
    assert page.locator('dd[data-field="input size"]').inner_text() == "1 × 28 × 28"
    assert "%" in page.locator('dd[data-field="test accuracy"]').inner_text()
    assert page.locator("#card-classes span").count() == 10
    assert "16 images per request" in page.locator("#limits").inner_text()


def test_upload_an_image_and_a_non_image(page, shared_server, digit_pngs, tmp_path):
    png, label = digit_pngs[0]
    image = tmp_path / "digit.png"
    image.write_bytes(png)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.goto(shared_server.base + "/")
    page.locator('dd[data-field="architecture"]').wait_for()
    page.fill("#top-k", "3")
    page.set_input_files("#file-input", [str(image), str(notes)])
    good = page.locator('.result[data-file="digit.png"]')
    good.locator(".label").wait_for()
    assert good.locator(".label").inner_text() == str(label)  # the model is right on this one
    assert good.locator(".bar").count() == 3
    bad = page.locator('.result[data-file="notes.txt"]')
    bad.locator(".message").wait_for()
    assert "unsupported content type" in bad.locator(".message").inner_text()
    assert "rejected" in (bad.get_attribute("class") or "")


def test_gradcam_overlay(page, shared_server, digit_pngs, tmp_path):
    image = tmp_path / "cam.png"
    image.write_bytes(digit_pngs[1][0])
    page.goto(shared_server.base + "/")
    page.locator('dd[data-field="architecture"]').wait_for()
    page.check("#gradcam")
    page.set_input_files("#file-input", [str(image)])
    heat = page.locator('.result[data-file="cam.png"] img.heat')
    heat.wait_for()
    assert heat.get_attribute("src").startswith("data:image/png;base64,")


def test_api_docs_page_lists_the_routes(page, shared_server):
    page.goto(shared_server.base + "/docs")
    page.locator("code", has_text="POST /predict").wait_for()
    assert page.locator("code", has_text="POST /v2/models/{name}/infer").count() == 1
    assert page.hosts == {urlparse(shared_server.base).netloc}  # nothing fetched from elsewhere


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_dense_runs_show_boxes_or_a_mask(page, task, tmp_path):
    """A detection run's page lists the boxes; a segmentation run's lays the mask over the image."""
    from PIL import Image

    from cnnlab.data import load_dataset
    from tests.deploy.conftest import start_server
    from tests.deploy.test_dense_deploy import _train

    scenes = load_dataset("digits-scenes", image_size=64, num_train=16, num_test=4)
    run = _train(tmp_path, scenes, task)
    image = tmp_path / "scene.png"
    Image.fromarray(scenes.test.images[0, 0].numpy()).save(image)
    server = start_server(run, tmp_path / "server.log", "--backend", "torch")
    try:
        page.goto(server.base + "/")
        page.locator('dd[data-field="architecture"]').wait_for()
        page.set_input_files("#file-input", [str(image)])
        result = page.locator('.result[data-file="scene.png"]')
        if task == "detection":
            result.locator("ul.boxes li").first.wait_for()
            first = result.locator("ul.boxes li").first.inner_text().split()
            assert first[0] in [str(d) for d in range(10)] and "object(s)" in result.inner_text()
        else:
            mask = result.locator("img.heat")
            mask.wait_for()
            assert mask.get_attribute("src").startswith("data:image/png;base64,")
            text = result.inner_text()
            assert "pixels per class: " in text and "background: " in text
    finally:
        server.stop()
