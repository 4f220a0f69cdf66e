"""graft label: answers appended and fsynced one by one, resumed on restart, the page driven by the keyboard."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _datasets import CHROMIUM, CHROMIUM_ARGS
from conftest import _colour_image, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("label") / "photos"
    for i in range(8):
        _colour_image(root / f"img{i}.png", i % 3, seed=900 + i)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_session_appends_answers_resumes_and_undoes(images: Path, tmp_path: Path) -> None:
    from graft.label import open_session

    out = tmp_path / "labels.csv"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir())
    s = open_session(str(images), ["red", "green", "blue"], str(out))
    first = s.state()["item"]
    s.answer(first["id"], "green")
    assert _rows(out) == [{"path": first["name"], "label": "green"}]  # on disk before the next image
    nxt = s.state()["item"]
    s.skip(nxt["id"])
    third = s.state()["item"]
    s.answer(third["id"], "blue")
    with pytest.raises(LookupError):
        s.answer(third["id"], "red")  # no longer the current image
    with pytest.raises(ValueError):
        s.answer(s.state()["item"]["id"], "purple")
    s.undo()
    assert [r["path"] for r in _rows(out)] == [first["name"]] and s.state()["item"]["id"] == third["id"]
    s.answer(third["id"], "red")
    again = open_session(str(images), ["red", "green", "blue"], str(out))  # a restart
    st = again.state()
    assert st["done"] == 2 and st["left"] == 6 and st["item"]["name"] not in {first["name"], third["name"]}
    assert sorted((p.name, p.stat().st_mtime_ns) for p in images.iterdir()) == before  # image folder untouched


def test_bad_label_inputs_are_one_line(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.csv"
    for args, words in (
        (["--classes", "cat,dog,cat"], "listed twice"),
        (["--classes", "cat"], "at least two"),
        ([], "no classes"),
        (["--classes", "a,b", "--out", images / "labels.csv"], "inside the image folder"),
    ):
        code, _, err = run_cli(["label", images, "--out", out, *args], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["label", empty, "--classes", "a,b", "--out", out], capsys)
    assert code == 2 and "no images found" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(images: Path, out: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "graft", "label", str(images), "--classes", "red,green,blue"]
    proc = subprocess.Popen(cmd + ["--out", str(out), "--port", str(port)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"graft label exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.2)
    proc.kill()
    pytest.fail("graft label did not start")


@pytest.mark.browser
def test_label_five_images_with_the_keyboard_then_kill_the_server(images: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        msg = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("GRAFT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + "; GRAFT_REQUIRE_BROWSER=1 makes this an error", pytrace=False)
        pytest.skip(msg)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    out, port = tmp_path / "labels.csv", _free_port()
    proc = _start(images, out, port)
    url = f"http://127.0.0.1:{port}/"
    keys = ["1", "2", "3", "1", "2"]
    names = ["red", "green", "blue"]
    external: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 800}, has_touch=True)  # a phone
                page.on("request", lambda r: external.append(r.url) if not r.url.startswith(url) else None)
                page.goto(url)
                page.wait_for_function("document.getElementById('name').textContent.length > 0", timeout=15_000)
                assert page.locator("#classes button").count() == 3
                shown = []
                for n, key in enumerate(keys, 1):
                    shown.append(page.inner_text("#name"))
                    page.keyboard.press(key)
                    page.wait_for_function(
                        f"document.getElementById('progress-text').textContent.startsWith('{n} of 8')"
                    )
                    # the page moved on only after the server wrote the answer: it is in the file now
                    assert _rows(out)[-1] == {"path": shown[-1], "label": names[int(key) - 1]}
                page.keyboard.press("s")  # skip the sixth
                page.wait_for_function(f"document.getElementById('name').textContent !== {shown[-1]!r}")
                page.tap("#classes button:nth-child(2)")  # a tap answers too
                page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('6 of 8')")
                page.keyboard.press("u")  # undo the tap
                page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('5 of 8')")
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-session, no chance to clean up
        proc.wait(10)
    rows = _rows(out)
    assert [r["path"] for r in rows] == shown and [r["label"] for r in rows] == [names[int(k) - 1] for k in keys]
    assert external == []  # the page works offline
    from graft.label import open_session

    assert open_session(str(images), names, str(out)).state()["done"] == 5  # a restart resumes


def test_label_with_a_model_orders_by_uncertainty_and_shows_its_guesses(
    tiny_model_dir: Path,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fastapi.testclient import TestClient

    import graft.serve
    import graft.suggest.core

    served = []
    monkeypatch.setattr(graft.serve, "run_server", lambda app, **kw: served.append((app, kw)))
    # the tiny random backbone puts every image of a colour within 0.95 of a training image of it
    monkeypatch.setattr(graft.suggest.core, "_training_rows", lambda pred: None)
    code, _, err = run_cli(["label", images, "--model", tiny_model_dir, "--out", tmp_path / "l.csv"], capsys)
    assert code == 0, err
    # what the ranking left out is said (on the tiny backbone, same-colour images are near copies)
    assert re.search(r"already in .*; left out: \d+ repeat in pool\)", " ".join(err.split())), err
    app, kw = served[0]
    assert kw["host"] == "127.0.0.1"
    client = TestClient(app)
    st = client.get("/api/state").json()
    assert st["classes"] == ["blue", "green", "red"] and st["item"]["guess"] in st["classes"]
    assert st["item"]["reason"].startswith("uncertain")
    assert client.get("/api/image/999").status_code == 404
    assert client.get(f"/api/image/{st['item']['id']}").content == (images / st["item"]["name"]).read_bytes()
    r = client.post("/api/answer", json={"id": st["item"]["id"], "label": "blue"})
    assert r.status_code == 200 and r.json()["done"] == 1
    assert (
        client.post("/api/answer", content=b"x" * 20000, headers={"content-type": "application/json"}).status_code
        == 413
    )
