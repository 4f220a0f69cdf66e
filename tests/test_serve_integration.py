"""Real model, real images: ONNX vs PyTorch agreement, the served page in headless Chromium.

A hymenoptera classifier is trained once per session with the real EfficientNet-Lite0
weights (about 25 s on 2 cores), exported, and shared by the tests below.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _datasets import CHROMIUM, CHROMIUM_ARGS, shared_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hym_model(tmp_path_factory: pytest.TempPathFactory, hymenoptera_model: tuple[Path, Path]) -> tuple[Path, Path]:
    """(model_dir, exported .onnx) of the session's head-only lite0 model on hymenoptera."""
    from graft.export import export_onnx

    model_dir, data = hymenoptera_model
    root = tmp_path_factory.mktemp("hym")
    report = export_onnx(model_dir, root / "hym.onnx", check_images=[data / "val" / "bees"])
    assert report.max_abs_diff < 1e-3 and report.top1_agreement == 1.0
    return model_dir, root / "hym.onnx"


def _sample(folder: Path, n: int) -> list[str]:
    from graft.data.files import walk_image_files

    images, _ = walk_image_files(folder)
    idx = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    return [str(images[i]) for i in sorted(set(idx))]


@pytest.mark.parametrize("name", ["hymenoptera", "cats_dogs_filtered", "flowers_kaggle_128", "sign_digits"])
def test_onnx_and_pytorch_agree_on_shared_datasets(hym_model: tuple[Path, Path], name: str) -> None:
    """Same decode + preprocessing + network on both paths, on each dataset's formats and sizes."""
    import graft
    from graft.predict.onnx import OnnxPredictor

    paths = _sample(shared_dataset(name), 16)
    ref = graft.load(hym_model[0], device="cpu", precision="fp32").predict(paths, top_k=2)
    got = OnnxPredictor(hym_model[1]).predict(paths, top_k=2)
    assert [r["path"] for r in got] == [r["path"] for r in ref]
    for g, r in zip(got, ref):
        assert ("error" in g) == ("error" in r)
        if "error" not in r:
            assert g["label"] == r["label"], g["path"]
            np.testing.assert_allclose(
                [t["probability"] for t in g["top_k"]], [t["probability"] for t in r["top_k"]], atol=1e-3
            )


def test_onnx_accuracy_on_hymenoptera_val(hym_model: tuple[Path, Path]) -> None:
    from graft.predict.onnx import OnnxPredictor

    val = shared_dataset("hymenoptera") / "val"
    res = OnnxPredictor(hym_model[1]).predict([val], top_k=1)
    correct = [Path(r["path"]).parent.name == r["label"] for r in res]
    assert len(res) == 153 and np.mean(correct) > 0.9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live_server(hym_model: tuple[Path, Path]):
    """uvicorn serving the exported model on a free loopback port, in a thread."""
    import uvicorn

    from graft.serve import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(hym_model[1]), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def _card_class(page: Any) -> str:
    """The class a card shows: its label, or for an "unknown" card the best guess in its note."""
    label = page.inner_text(".result .top-label")
    if label != "unknown":
        return label
    return page.inner_text(".result .unknown-note").rsplit("best guess: ", 1)[-1].rstrip(")")


@pytest.mark.browser
def test_web_page_in_headless_chromium(live_server: str) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        msg = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("GRAFT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + "; GRAFT_REQUIRE_BROWSER=1 makes this an error", pytrace=False)
        pytest.skip(msg)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    bee = shared_dataset("hymenoptera") / "val" / "bees" / "1032546534_06907fe3b3.jpg"
    ant = shared_dataset("hymenoptera") / "val" / "ants" / "10308379_1b6c72e180.jpg"
    sign = sorted((shared_dataset("sign_digits") / "3").glob("*.JPG"))[0]
    external: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on(
                "request",
                lambda req: (
                    external.append(req.url) if not req.url.startswith((live_server, "blob:", "data:")) else None
                ),
            )
            page.goto(live_server)
            page.wait_for_function("document.getElementById('meta').textContent.includes('2 classes')", timeout=15_000)
            # Layout: the drop zone is a block spanning the content width, below the header line.
            drop = page.eval_on_selector("#drop", "e => e.getBoundingClientRect().toJSON()")
            main = page.eval_on_selector(
                "main",
                "e => { const r = e.getBoundingClientRect(), s = getComputedStyle(e); "
                "return {left: r.left + parseFloat(s.paddingLeft), "
                "width: r.width - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight)}; }",
            )
            header = page.eval_on_selector("header", "e => e.getBoundingClientRect().toJSON()")
            assert abs(drop["width"] - main["width"]) < 2 and abs(drop["left"] - main["left"]) < 2, (drop, main)
            assert drop["top"] >= header["bottom"] - 1 and drop["height"] > 60, (drop, header)
            page.set_input_files("#picker", str(bee))
            page.wait_for_selector(".result[data-state=done] .top-label", timeout=30_000)
            assert _card_class(page) == "bees"
            assert page.locator(".result .row").count() == 2  # top-2 bars (2 classes)
            width = page.eval_on_selector(".result .bar span", "e => parseFloat(e.style.width)")
            assert width > 50
            page.set_input_files("#picker", str(ant))  # newest card first
            page.wait_for_function("document.querySelectorAll('.result[data-state=done]').length == 2", timeout=30_000)
            assert _card_class(page) == "ants"
            # A hand sign is nothing like ants or bees: the card says "unknown", in its own style.
            page.set_input_files("#picker", str(sign))
            page.wait_for_function("document.querySelectorAll('.result[data-state=done]').length == 3", timeout=30_000)
            assert page.inner_text(".result .top-label") == "unknown"
            assert "card result unknown" in page.get_attribute(".result", "class")
            assert "best guess" in page.inner_text(".result .unknown-note")
            page.set_input_files(
                "#picker", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"plain text"}]
            )
            page.wait_for_selector(".result[data-state=error]", timeout=15_000)
            assert "415" in page.inner_text(".result[data-state=error] .error")
        finally:
            browser.close()
    assert external == []  # the page works offline
