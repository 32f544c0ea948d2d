"""Web app end to end in a real headless Chromium (Debian ``chromium`` driven by playwright).

Loads the demo study, runs Mode A, checks the NiiVue canvas draws non-empty pixels and that moving the Tmax
slider changes the hypoperfusion volume shown.  Skipped where chromium or playwright is absent (CI installs both).
Set CTPERF_WEB_SCREENSHOTS=DIR to also save screenshots of the main screens there (docs/images/ holds them).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from web_helpers import modeb_inputs, small_settings

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")

from ctperf.apps.web import create_app

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("webe2e")
    settings = small_settings(root)
    settings.demo_matrix = int(os.environ.get("CTPERF_WEB_DEMO_MATRIX", settings.demo_matrix))  # docs: 160
    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not srv.started:
        assert time.monotonic() - t0 < 20, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.requests_seen = []
        pg.on("request", lambda r: pg.requests_seen.append(r.url))
        yield pg
        browser.close()


def _canvas_pixels(pg) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(pg.locator("#gl").screenshot())).convert("RGB")).astype(int)


def _shot(pg, name: str, full: bool = False) -> None:
    target = os.environ.get("CTPERF_WEB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(target) / name), full_page=full)


def test_demo_study_runs_and_viewer_renders_and_tmax_slider_updates_volume(server, page):
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('version').textContent.length > 0")
    page.click("#demo-btn")
    page.wait_for_function("document.getElementById('study-path').value.includes('demo')", timeout=60_000)
    page.click("#run-btn")
    page.wait_for_function("document.getElementById('progress-log').children.length >= 4", timeout=60_000)
    page.wait_for_function("document.body.dataset.viewer === 'ready'", timeout=120_000)
    page.wait_for_timeout(300)
    log = page.inner_text("#progress-log")
    assert "deconvolution" in log and "write" in log  # live progress arrived over SSE
    assert "No QA flags" in page.inner_text("#qa-banner") or "QA flags" in page.inner_text("#qa-banner")

    px = _canvas_pixels(page)
    lit = (px.sum(axis=2) > 60).mean()
    assert lit > 0.05, f"viewer canvas nearly empty ({lit:.3f} of pixels lit)"
    reds = ((px[..., 0] > 150) & (px[..., 1] < 90)).sum()
    greens = ((px[..., 1] > 120) & (px[..., 0] < 90)).sum()
    assert reds > 10 and greens > 10, (reds, greens)  # core and penumbra overlays drawn
    _shot(page, "web_viewer.png")

    before = float(page.inner_text("#vol-hypo"))
    page.fill("#tmax-slider", "4")
    page.dispatch_event("#tmax-slider", "input")
    page.wait_for_function(f"document.getElementById('vol-hypo').textContent !== '{page.inner_text('#vol-hypo')}'",
                           timeout=30_000)
    page.wait_for_function("document.body.dataset.tuned === '4/0.3'", timeout=30_000)
    after = float(page.inner_text("#vol-hypo"))
    assert after > before, (before, after)
    page.wait_for_function("document.body.dataset.viewer === 'ready'")
    page.wait_for_timeout(500)
    greens_after = ((_canvas_pixels(page)[..., 1] > 120) & (_canvas_pixels(page)[..., 0] < 90)).sum()
    assert greens_after > greens  # the penumbra overlay grew with the lower Tmax threshold
    _shot(page, "web_tuned.png")

    page.check("input[name=map][value=cbf]")
    page.wait_for_function("document.getElementById('map-label').textContent.includes('mL/100 g/min')")
    page.wait_for_timeout(500)
    assert (_canvas_pixels(page).sum(axis=2) > 60).mean() > 0.05
    _shot(page, "web_cbf.png")

    origin = server.rstrip("/")
    outside = [u for u in page.requests_seen if not u.startswith((origin, "data:", "blob:"))]
    assert not outside, outside  # no CDN or other network use


def test_mode_b_from_the_same_page(server, page, tmp_path):
    ph, names = modeb_inputs(tmp_path)
    page.goto(server + "/")
    page.click("#modeb summary")
    for field, name in names.items():
        page.set_input_files(f"#modeb-form input[name={field}]", str(tmp_path / name))
    page.click("#run-b-btn")
    page.wait_for_function("document.getElementById('viewer-title').textContent.includes('Mode B')", timeout=60_000)
    assert page.locator(".viewer-grid").is_hidden()  # no saved maps in Mode B: indices and downloads only
    hypo = float(page.locator("#metrics-table tbody tr").first.locator("td").nth(1).inner_text())
    assert hypo == pytest.approx(ph.truth_metrics["hypoperfusion_ml"], rel=0.1)
    assert "metrics.json" in page.inner_text("#downloads")


@pytest.mark.skipif(not os.environ.get("CTPERF_WEB_SCREENSHOTS"),
                    reason="doc utility: saves docs/images screenshots only when CTPERF_WEB_SCREENSHOTS is set")
def test_screens_for_docs(server, page):
    page.goto(server + "/")
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length >= 1")
    _shot(page, "web_home.png")
