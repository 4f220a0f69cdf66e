"""The report of a real hymenoptera run, opened in headless Chromium (integration + browser).

Playwright drives the system's Chromium (``/usr/bin/chromium``); it never downloads a
browser. Without Chromium the browser test is skipped, unless GRAFT_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from _datasets import CHROMIUM, CHROMIUM_ARGS, shared_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hym_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``graft train <hymenoptera>`` through the library (no report yet)."""
    import graft
    from graft.run import train_run

    data = shared_dataset("hymenoptera")
    out = tmp_path_factory.mktemp("hym") / "run"
    train_run(data, out, graft.Classifier(), argv=["graft", "train", str(data), "--out", str(out)])
    return out


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    msg = f"Chromium not found at {CHROMIUM} (install Debian's chromium or set GRAFT_CHROMIUM)"
    if os.environ.get("GRAFT_REQUIRE_BROWSER") == "1":
        pytest.fail(msg + "; GRAFT_REQUIRE_BROWSER=1 makes this an error", pytrace=False)
    pytest.skip(msg)


def test_report_is_fast_and_complete(hym_run: Path) -> None:
    from graft.report import write_report

    t0 = time.perf_counter()
    path = write_report(hym_run)
    seconds = time.perf_counter() - t0
    doc = path.read_text(encoding="utf-8")
    assert "could not be rendered" not in doc
    for anchor in ("data", "training", "evaluation", "calibration", "top-losses", "gradcam", "facts"):
        assert f'<section id="{anchor}">' in doc
    assert "ants" in doc and "bees" in doc and "chosen C=" not in doc  # C is in the figure, not the text
    # A few seconds on an idle 2-core machine; generous here because test workers share the CPU.
    assert seconds < 60, f"report took {seconds:.1f} s"
    assert path.stat().st_size < 3_000_000


@pytest.mark.browser
def test_report_opens_in_headless_chromium(hym_run: Path) -> None:
    _require_chromium()
    from graft.report import write_report

    path = write_report(hym_run)
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.resolve().as_uri(), wait_until="load")
            state = page.evaluate(
                "() => Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])"
            )
            title = page.title()
        finally:
            browser.close()
    assert not errors, errors
    assert title.startswith("graft report")
    assert len(state) >= 8
    bad = [s for s in state if not (s[0] and s[1] > 0 and s[2] > 0)]
    assert not bad, f"images not decoded: {bad}"
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not external, f"the report fetched {external}"
