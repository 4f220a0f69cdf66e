"""Never lose work: each test here failed before its fix (issue "Never lose work").

Resume after SIGKILL, no hang with two trains on one cache, symlink cycles, inert model
folders, user text never read as markup, server limits, one-line errors, integrity.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset, run_cli
from graft.exceptions import ModelFileError


def _graft(*args: Any, home: Path, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "graft.cli.main", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def _train_args(data: Path, out: Path, weights: Path, *extra: Any) -> list[Any]:
    return [
        "train",
        data,
        "--out",
        out,
        "--backbone",
        TINY_BACKBONE,
        "--weights",
        weights,
        "--precision",
        "fp32",
        "--quiet",
        "--no-report",
        *extra,
    ]


# ---------------------------------------------------------------------------- 1. resume after a kill
def test_sigkill_mid_fine_tune_then_resume_from_the_run_folder_alone(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path
) -> None:
    home, out = tmp_path / "home", tmp_path / "run"
    args = _train_args(synthetic_dataset, out, tiny_weights, "--workers", "0", "--fine-tune", "--epochs", "40")
    env = {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graft.cli.main", *map(str, args), "--patience", "100"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    last = out / "checkpoints" / "last" / "state.json"
    deadline = time.monotonic() + 240
    while not (last.exists() and json.loads(last.read_text())["epoch"] >= 2):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no fine-tuning checkpoint appeared"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch: nothing gets to clean up
    proc.wait(30)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    done = json.loads(last.read_text())["epoch"]
    assert done < 40

    r = _graft("train", "--resume", out, "--quiet", "--no-report", home=home)  # no data dir, no flags
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["options"]["resume"] is True
    epochs = [h["epoch"] for h in json.loads((out / "history.json").read_text())["fine_tune"]]
    assert epochs == list(range(1, 41)), epochs  # every epoch once: the resumed run went on from `done`
    ckpt = json.loads(last.read_text())
    assert ckpt["epoch"] == 40 and ckpt["history"][done - 1]["epoch"] == done
    preds = graft.load(out / "model").predict(sorted((synthetic_dataset / "val").rglob("*.png")))
    assert len(preds) == 12 and all("label" in p for p in preds)


def test_resume_of_a_folder_without_run_json_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["train", "--resume", tmp_path], capsys)
    assert code == 2 and "not a graft run directory" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- 2. no hangs
def test_two_trains_on_one_cache_finish_in_bounded_time(tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path):
    """ONNX Runtime sessions plus forked decoder workers, two processes sharing one feature cache."""
    home = tmp_path / "shared_home"
    env = {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1", "GRAFT_RUNTIME": "onnxruntime"}
    for round_ in range(3):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "graft.cli.main"]
                + [str(a) for a in _train_args(synthetic_dataset, tmp_path / f"r{round_}{i}", tiny_weights)]
                + ["--workers", "1", "--batch-size", "4", "--augment-views", "2"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for p in procs:
            try:
                _, err = p.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                pytest.fail(f"round {round_}: graft train hung")
            assert p.returncode == 0, err


def test_embedder_holds_no_reference_cycle(tmp_path: Path) -> None:
    import gc
    import weakref

    import timm

    from graft.features import Embedder
    from graft.features.options import EmbedOptions
    from graft.transforms.eval import Preprocessing

    net = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=0)
    emb = Embedder(net, Preprocessing((64, 64)), EmbedOptions(device="cpu", precision="fp32", num_workers=0))
    ref = weakref.ref(emb)
    gc.disable()
    try:
        del emb
        assert ref() is None  # freed by reference counting alone, not by a later collection
    finally:
        gc.enable()


def test_stuck_worker_becomes_an_error_naming_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import Dataset

    from graft.exceptions import WorkerTimeoutError
    from graft.features import embedder

    class Stuck(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> Any:
            time.sleep(60)
            return i

    monkeypatch.setattr(embedder, "WORKER_TIMEOUT_S", 1.0)
    loader = embedder.make_loader(Stuck(), num_workers=1, batch_size=2)
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match="decoding worker gave no batch"):
        list(embedder.batches(loader))
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------------------- 3. symlinks
def test_symlink_cycles_and_links_out_of_a_class_are_ignored_and_reported(tmp_path: Path) -> None:
    from graft.data import scan_dataset

    root = make_synthetic_dataset(tmp_path / "ds", classes=("cats", "dogs"), per_class=6, split=False)
    (root / "cats" / "self").symlink_to(".")  # a cycle: 41 copies of each image before
    (root / "cats" / "again").symlink_to(".")  # two of them: exponential before
    (root / "cats" / "loop").symlink_to("..")  # leaves the class: dogs labelled cats before
    (root / "cats" / "dog.png").symlink_to(root / "dogs" / "dogs_00.png")
    (root / "dogs" / "twin.png").symlink_to("dogs_01.png")  # same file twice inside the class
    warnings: list[str] = []
    t0 = time.monotonic()
    ds = scan_dataset(root, warn=warnings.append)
    assert time.monotonic() - t0 < 10
    paths = [r.path for recs in ds.splits.values() for r in recs]
    assert len(paths) == 12 and len({os.path.realpath(p) for p in paths}) == 12
    for r in (r for recs in ds.splits.values() for r in recs):
        assert ds.classes[r.label] == Path(os.path.realpath(r.path)).parent.name
    text = "\n".join(warnings)
    for link in ("self", "again", "loop", "dog.png", "twin.png"):
        assert f"{link}:" in text, text


# ---------------------------------------------------------------------------- 4. inert model folders
def _copy_model(src: Path, dst: Path, **changes: Any) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for k in parents:
            node = node[k]
        node[leaf] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backbone__architecture": "hf-hub:timm/resnet18.a1_in1k"}, "not a plain timm model name"),
        ({"backbone__architecture": "local-dir:/etc"}, "not a plain timm model name"),
        ({"classes": ["blue", "green", "red", "extra"]}, "outputs but the config lists 4 classes"),
        ({"head__in_features": 10**9}, "sizes graft cannot build"),
        ({"head__in_features": 1 << 22, "head__type": "mlp", "head__hidden": 1 << 22}, "memory"),
        ({"preprocessing__input_size": [100000, 100000]}, "input size"),
        ({"classes": "blue"}, "'classes' must be a non-empty list"),
    ],
)
def test_a_damaged_or_hostile_model_folder_is_one_line_and_never_builds(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    import timm

    def no_build(*_a: Any, **_k: Any) -> None:
        raise AssertionError("timm.create_model was called for an invalid config")

    monkeypatch.setattr(timm, "create_model", no_build)
    bad = _copy_model(tiny_model_dir, tmp_path / "bad", **change)
    with pytest.raises(ModelFileError, match=message) as e:
        graft.load(bad)
    assert "\n" not in str(e.value)


def test_config_that_is_not_an_object_or_lacks_the_backbone(tmp_path: Path, tiny_model_dir: Path) -> None:
    for name, body in (("list", [1, 2]), ("nobackbone", None)):
        bad = shutil.copytree(tiny_model_dir, tmp_path / name)
        cfg = json.loads((bad / "config.json").read_text())
        if body is None:
            del cfg["backbone"]
            body = cfg
        (bad / "config.json").write_text(json.dumps(body))
        with pytest.raises(ModelFileError):
            graft.load(bad)


def test_model_folder_cannot_steer_where_graft_writes(
    tmp_path: Path, tiny_model_dir: Path, synthetic_dataset: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    folder = _copy_model(
        tiny_model_dir, tmp_path / "m", training__params__cache_dir=str(elsewhere), training__params__weights="/etc"
    )
    clf = graft.load(folder)
    assert clf.cache_dir is None and clf.weights is None
    clf.predict(sorted((synthetic_dataset / "val").rglob("*.png")))
    assert not elsewhere.exists()


# ---------------------------------------------------------------------------- 5. user text is never markup
def test_file_names_with_brackets_print_as_they_are(tmp_path: Path, tiny_model_dir: Path, synthetic_dataset: Path):
    img = tmp_path / "IMG_001 [edited].png"
    shutil.copy(synthetic_dataset / "val" / "red" / "red_08.png", img)
    bad = tmp_path / "x[" / "]y [red].png"  # a "[/]" in the path
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    env = {**os.environ, "GRAFT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    r = subprocess.run(
        [sys.executable, "-m", "graft.cli.main", "predict", str(tiny_model_dir), str(img), str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert str(img) in r.stdout and str(bad) in r.stdout, r.stdout


def test_dataset_path_with_markup_characters_trains(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_synthetic_dataset(tmp_path / "data[/]" / "[bold]set", per_class=6)
    (root / "train" / "red" / "broken [x].png").write_bytes(b"\x89PNG broken")
    code, _, err = run_cli(_train_args(root, tmp_path / "run", tiny_weights, "--workers", "0"), capsys)
    assert code == 0, err
    assert "broken [x].png" in err and "MarkupError" not in err


# ---------------------------------------------------------------------------- 6. the server
def test_model_endpoint_shows_no_server_path(tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    with TestClient(create_app(tiny_model_dir, backend="torch")) as client:
        body = client.get("/model").text
    assert str(tiny_model_dir) not in body and "/tmp/" not in body
    assert json.loads(body)["backbone"]["weights_source"].startswith("file:")


def test_per_request_pixel_budget_and_lower_image_cap(tiny_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    def png(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        Image.new("L", (w, h)).save(buf, "PNG")
        return buf.getvalue()

    app = create_app(tiny_model_dir, backend="torch", max_pixels=1_000_000, max_request_pixels=1_500_000)
    with TestClient(app) as client:
        one = client.post("/predict", files=[("file", ("a.png", png(900, 900)))])
        assert one.status_code == 200, one.text
        two = client.post("/predict", files=[("file", (f"{i}.png", png(900, 900))) for i in range(2)])
        assert two.status_code == 413 and "max-request-pixels" in two.json()["detail"]
        big = client.post("/predict", files=[("file", ("big.png", png(1100, 1000)))])
        assert big.status_code == 413
    from graft.serve import Limits

    assert Limits().max_pixels < 40_000_000 <= Limits().max_request_pixels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_idle_connections_are_closed_and_health_keeps_answering(tiny_model_dir: Path, tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    code = (
        "from graft.serve import create_app, run_server;"
        f"run_server(create_app({str(tiny_model_dir)!r}, backend='torch'), port={port}, "
        "read_timeout_s=1.0, max_connections=64, log_level='warning')"
    )
    env = {**os.environ, "GRAFT_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        idle = []
        for _ in range(150):  # more than max_connections, sending half a request head and nothing more
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            idle.append(s)
        time.sleep(2.5)  # past the read timeout
        closed = 0
        for s in idle:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
            s.close()
        assert closed == len(idle)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


# ---------------------------------------------------------------------------- 7. one line, never a traceback
def test_inputs_that_used_to_print_tracebacks(
    tmp_path: Path,
    tiny_model_dir: Path,
    synthetic_dataset: Path,
    tiny_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    nothing = tmp_path / "undecodable"  # headers read fine, pixels do not: found only when predicting
    for c in ("red", "green", "blue"):
        (nothing / "val" / c).mkdir(parents=True)
        whole = next((synthetic_dataset / "val" / c).glob("*.png")).read_bytes()
        (nothing / "val" / c / "x.png").write_bytes(whole[:120])
    cases = [
        (["train", synthetic_dataset, "--backbone", TINY_BACKBONE, "--weights", empty, "--out", tmp_path / "r1"], 3),
        (_train_args(synthetic_dataset, a_file, tiny_weights), 2),
        (["export", tiny_model_dir, "--out", a_file / "m.onnx", "--quiet"], 1),  # a file where --out needs a folder
        (["export", tiny_model_dir, "--format", "openvino", "--out", a_file / "m.xml", "--quiet"], 1),
        (["evaluate", tiny_model_dir, nothing], 2),
    ]
    for args, want in cases:
        code, _, err = run_cli(args, capsys)
        assert code == want, (args, err)
        assert "Traceback" not in err and [ln for ln in err.splitlines() if ln.startswith("error:")], err
        assert all(ln.startswith(("error:", "warning:")) for ln in err.strip().splitlines()), err


# ---------------------------------------------------------------------------- 8. integrity
def test_feature_cache_sees_an_edit_that_restores_size_and_mtime(tmp_path: Path) -> None:
    from graft.features.cache import file_key

    p = tmp_path / "a.bmp"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(p)
    st = p.stat()
    before = file_key(p)
    time.sleep(0.01)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(p)  # BMP: the same size on disk, other pixels
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored, as `touch -r` would
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    assert file_key(p) != before


def test_replace_dir_swaps_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graft import fileio

    target, tmp = tmp_path / "model", tmp_path / ".model.tmp"
    target.mkdir()
    (target / "old").write_text("old")
    tmp.mkdir()
    (tmp / "new").write_text("new")
    if not fileio._exchange(tmp, target):  # pragma: no cover - kernels without renameat2
        pytest.skip("this system cannot swap folders atomically")
    fileio._exchange(tmp, target)  # swap back: the helper itself works both ways
    renames: list[tuple[Any, Any]] = []
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)))  # a kill between two renames
    fileio.replace_dir(tmp, target)
    assert renames == [] and sorted(os.listdir(target)) == ["new"] and not tmp.exists()


def test_out_cannot_be_the_dataset_or_a_folder_with_other_files(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", per_class=6)
    for out in (root, root / "runs" / "x"):
        code, _, err = run_cli(_train_args(root, out, tiny_weights, "--workers", "0", "--overwrite"), capsys)
        assert code == 2 and "inside the dataset folder" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    code, _, err = run_cli(_train_args(root, busy, tiny_weights, "--workers", "0"), capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(_train_args(root, busy, tiny_weights, "--workers", "0", "--overwrite"), capsys)
    assert code == 0, err
    assert (busy / "thesis.tex").read_text() == "precious" and (busy / "model" / "config.json").exists()


def test_fit_does_not_mutate_the_splits_it_is_given(tmp_path: Path, tiny_weights: Path) -> None:
    from graft.data import scan_dataset

    root = make_synthetic_dataset(tmp_path / "ds", per_class=6)
    (root / "train" / "red" / "truncated.png").write_bytes((root / "train" / "red" / "red_00.png").read_bytes()[:80])
    splits = scan_dataset(root)
    before = ({k: list(v) for k, v in splits.splits.items()}, list(splits.skipped))
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(splits)
    assert ({k: list(v) for k, v in splits.splits.items()}, list(splits.skipped)) == before
    assert len(clf.data_.skipped) >= len(splits.skipped)
