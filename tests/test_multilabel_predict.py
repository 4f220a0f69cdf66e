"""Multi-label prediction and shipping: sigmoid rows with label sets from PyTorch, the exported ONNX
file and the torch-free predictor, ``graft predict`` JSON/CSV, the server's API and ``graft evaluate``
on a multi-label manifest (contract items 2 and 3 of issue 26).

The model is built here, not trained: the tiny backbone plus a linear head of one logit per
colour, fitted by ridge regression on its features to the images' colour sets (halves of two
colours), so its label sets are mostly right and vary from image to image.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _datasets import REPO_ROOT, shared_dataset
from conftest import TINY_BACKBONE, isolated_graft_home, run_cli
from graft.metrics_multilabel import compute_multilabel_metrics
from graft.predict.results import Outputs, prediction_rows, sigmoid

COLOURS = {"blue": (50, 70, 230), "green": (40, 200, 60), "red": (220, 40, 40)}
CLASSES = tuple(COLOURS)  # sorted, as a manifest's classes are
THRESHOLDS = (0.5, 0.4, 0.6)


@dataclass
class MultiLabelSetup:
    model: Path  # model folder (config.json with thresholds + model.safetensors)
    onnx: Path  # its export
    data: Path  # the images' folder
    with_split: Path  # labels.csv with a split column (train/val/test)
    no_split: Path  # plain.csv: the same rows, no split column (the model records its seeded split)
    truth: dict[str, set[str]]  # image path -> its colours


def _image(path: Path, left: str, right: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = np.empty((48, 48, 3), np.float32)
    arr[:, :24] = COLOURS[left]
    arr[:, 24:] = COLOURS[right]
    arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _dataset(root: Path) -> tuple[list[tuple[str, tuple[str, ...], str]], dict[str, set[str]]]:
    """27 images (every ordered pair of colours, three times); rows (file, labels, split)."""
    rows, truth = [], {}
    pairs = [(a, b) for a in CLASSES for b in CLASSES]
    for rep in range(3):
        for j, (a, b) in enumerate(pairs):
            name = f"img_{rep}_{j}.png"
            _image(root / name, a, b, seed=100 * rep + j)
            labels = tuple(sorted({a, b}))
            rows.append((name, labels, ("train", "val", "test")[rep]))
            truth[str(root / name)] = set(labels)
    return rows, truth


def _write_manifests(root: Path, rows: list[tuple[str, tuple[str, ...], str]]) -> tuple[Path, Path]:
    with_split, no_split = root / "labels.csv", root / "plain.csv"
    with with_split.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", "split"])
        w.writerows([name, "|".join(labels), split] for name, labels, split in rows)
    with no_split.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels"])
        w.writerows([name, "|".join(labels)] for name, labels, _ in rows)
    return with_split, no_split


def _build_model(out: Path, weights: Path, manifest: Path, thresholds: tuple[float, ...]) -> Path:
    """GraftNet(tiny backbone, linear head of a logit per label) fitted by ridge regression on every row of
    ``manifest``; saved with ``thresholds`` and the split training would have recorded."""
    import timm
    import torch
    from safetensors.torch import load_file

    from graft.artifact.model_dir import save_model
    from graft.artifact.spec import ArtifactSpec
    from graft.data.decode import load_image
    from graft.data.manifest import read_manifest
    from graft.data.manifest_splits import manifest_splits
    from graft.data.options import SplitOptions
    from graft.network import GraftNet, HeadSpec, build_head
    from graft.transforms.eval import Preprocessing

    torch.manual_seed(0)
    backbone = timm.create_model(TINY_BACKBONE, pretrained=False, num_classes=0)
    backbone.load_state_dict(load_file(str(weights)), strict=False)  # the stand-in's classifier is unused
    pre = Preprocessing.from_timm_config(timm.data.resolve_data_config({}, model=backbone))
    table = read_manifest(manifest)
    head_spec = HeadSpec("linear", int(backbone.num_features), len(table.classes), multi_label=True)
    net = GraftNet(backbone, build_head(head_spec)).eval()
    paths = [row.path for row in table.rows]
    with torch.no_grad():
        X = net.features(torch.from_numpy(np.stack([pre(load_image(p)) for p in paths]))).double().numpy()
    Y = np.zeros((len(paths), len(table.classes)))
    for i, row in enumerate(table.rows):
        Y[i, list(row.labels)] = 1
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    W = np.linalg.solve(Z.T @ Z + 1.0 * np.eye(Z.shape[1]), Z.T @ (6 * Y - 3))  # logits ~ +-3
    linear = net.head[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy((W / sd[:, None]).T))
        linear.bias.copy_(torch.from_numpy(-(mu / sd) @ W))
    split = manifest_splits(table, SplitOptions(), warn=lambda _m: None).split_record(0, 0.2, 0.0)
    spec = ArtifactSpec(
        tuple(table.classes),
        pre,
        backbone={"name": TINY_BACKBONE, "architecture": TINY_BACKBONE, "fine_tuned": False},
        head=head_spec.to_dict(),
        metrics={"map_macro": 0.9, "accuracy": 0.5, "multi_label": True},
        split=split,
        thresholds=thresholds,
    )
    return save_model(out, net, spec)


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> MultiLabelSetup:
    from graft.export import export_onnx

    root = tmp_path_factory.mktemp("multilabel")
    data = root / "data"
    rows, truth = _dataset(data)
    with_split, no_split = _write_manifests(data, rows)
    with isolated_graft_home(tmp_path_factory, "ml_home"):
        model = _build_model(root / "model", tiny_weights, no_split, THRESHOLDS)
        onnx_path = root / "ml.onnx"
        report = export_onnx(model, onnx_path, check_images=[str(data)])
    assert report.label_set_agreement == 1.0 and report.max_abs_diff < 1e-3
    assert "label-set agreement 100%" in "\n".join(report.lines())
    return MultiLabelSetup(model, onnx_path, data, with_split, no_split, truth)


def _sets(rows: list[dict]) -> dict[str, list[str]]:
    return {r["path"]: [t["label"] for t in r["labels"]] for r in rows}


# ---------------------------------------------------------------------------- rows
def test_rows_carry_label_sets_and_unknown_has_none() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -2.0, -4.0], [1.0, 0.2, 3.0]], np.float32)
    probs = sigmoid(logits)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-6)
    assert sigmoid(np.array([[-1000.0, 1000.0]]))[0].tolist() == [0.0, 1.0]  # no overflow
    out = Outputs(probs, np.array([0.1, 0.2, 0.9], np.float32))
    rows = prediction_rows(["a", "b", "c"], out, CLASSES, 2, threshold=0.5, thresholds=THRESHOLDS)
    a, b, c = rows
    assert [t["label"] for t in a["labels"]] == ["blue", "red"]  # 0.88 >= 0.5, 0.62 >= 0.6; green 0.27 < 0.4
    assert a["label"] == "blue" and a["probability"] == pytest.approx(float(probs[0, 0]))
    assert a["labels"][1]["probability"] == pytest.approx(float(probs[0, 2]))
    assert b["labels"] == [] and b["known"] is True and b["label"] == "green"  # nothing over its threshold
    assert c["known"] is False and c["label"] == "unknown" and c["labels"] == [] and c["best_label"] == "red"
    single = prediction_rows(["a"], Outputs(probs[:1]), CLASSES, 2)
    assert "labels" not in single[0]  # single-label rows unchanged


def test_torch_predictor_gives_sigmoid_label_sets(ml: MultiLabelSetup) -> None:
    import torch

    from graft.artifact.model_dir import load_model
    from graft.predict import open_predictor

    pred = open_predictor(ml.model, "torch", device="cpu")
    assert pred.spec.multi_label and pred.spec.thresholds == THRESHOLDS
    assert pred.info()["multi_label"] is True and pred.info()["thresholds"]["red"] == 0.6
    rows = pred.predict([str(ml.data)], top_k=3)
    assert len(rows) == 27 and all("error" not in r for r in rows)
    lm = load_model(ml.model)
    batch = np.stack([pred.preprocessing(Image.open(r["path"]).convert("RGB")) for r in rows])
    with torch.no_grad():
        ref = torch.sigmoid(lm.net(torch.from_numpy(batch))).numpy()
    for r, p in zip(rows, ref):
        want = [CLASSES[i] for i in np.argsort(-p) if p[i] >= THRESHOLDS[i]]
        assert [t["label"] for t in r["labels"]] == want
        np.testing.assert_allclose([t["probability"] for t in r["top_k"]], np.sort(p)[::-1], atol=1e-4)
    assert abs(ref.sum(1) - 1).max() > 0.05  # per-label probabilities, not a softmax
    sizes = {len(r["labels"]) for r in rows}
    assert len(sizes) > 1  # the label sets vary: the check above is not vacuous
    right = np.mean([set(_sets([r])[r["path"]]) == ml.truth[r["path"]] for r in rows])
    assert right > 0.5  # the fitted head mostly names both colours


# ---------------------------------------------------------------------------- ONNX
def test_onnx_file_applies_sigmoid_and_carries_thresholds(ml: MultiLabelSetup) -> None:
    import onnxruntime as ort

    from graft.predict.onnx import OnnxPredictor, read_onnx_metadata

    meta = read_onnx_metadata(ml.onnx)
    assert meta["thresholds"] == list(THRESHOLDS) and meta["probabilities"] == "sigmoid"
    assert meta["metrics"]["map_macro"] == 0.9
    onnx_pred = OnnxPredictor(ml.onnx)
    batch = np.stack([onnx_pred.preprocessing(Image.open(p).convert("RGB")) for p in sorted(ml.truth)[:6]])
    sess = ort.InferenceSession(str(ml.onnx), providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"input": batch})
    np.testing.assert_allclose(probs, sigmoid(logits), atol=1e-6)
    np.testing.assert_allclose(onnx_pred.predict_arrays(batch), probs, atol=1e-6)


def test_torch_free_predictor_gives_pytorchs_label_sets(ml: MultiLabelSetup) -> None:
    from graft.predict import open_predictor

    ref = _sets(open_predictor(ml.model, "torch", device="cpu").predict([str(ml.data)]))
    code = (
        "import sys, json\n"
        "from graft.predict.onnx import OnnxPredictor\n"
        f"rows = OnnxPredictor({str(ml.onnx)!r}).predict([{str(ml.data)!r}])\n"
        "print(json.dumps({'rows': rows, 'torch': 'torch' in sys.modules}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert _sets(out["rows"]) == ref and len(ref) == 27


def test_onnx_metadata_saying_softmax_for_a_multilabel_model_is_refused(ml: MultiLabelSetup, tmp_path: Path) -> None:
    import onnx

    from graft.artifact.onnx_meta import METADATA_KEY
    from graft.exceptions import ModelFileError
    from graft.predict.onnx import OnnxPredictor

    model = onnx.load(str(ml.onnx))
    entry = next(e for e in model.metadata_props if e.key == METADATA_KEY)
    doc = json.loads(entry.value)
    doc["probabilities"] = "softmax"
    entry.value = json.dumps(doc)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelFileError, match="probabilities are a 'softmax'"):
        OnnxPredictor(bad)


# ---------------------------------------------------------------------------- CLI and server
def test_cli_predict_json_csv_and_table(ml: MultiLabelSetup, capsys: pytest.CaptureFixture[str]) -> None:
    from graft.predict.onnx import OnnxPredictor

    ref = _sets(OnnxPredictor(ml.onnx).predict([str(ml.data)]))
    code, out, err = run_cli(["predict", ml.onnx, ml.data, "--json", "-k", "3"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert _sets(rows) == ref and all(len(r["top_k"]) == 3 for r in rows)
    code, out, err = run_cli(["predict", ml.onnx, ml.data, "--csv"], capsys)
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert "labels" in table[0] and len(table) == 27
    assert {r["path"]: r["labels"].split("|") if r["labels"] else [] for r in table} == ref
    code, out, err = run_cli(["predict", ml.onnx, sorted(ml.truth)[0]], capsys)
    assert code == 0, err
    first = ref[sorted(ml.truth)[0]]
    assert all(label in out for label in first) or "no label over its threshold" in out


def test_serve_returns_label_sets(ml: MultiLabelSetup) -> None:
    from fastapi.testclient import TestClient

    from graft.predict.onnx import OnnxPredictor
    from graft.serve import create_app

    paths = sorted(ml.truth)[:4]
    ref = _sets(OnnxPredictor(ml.onnx).predict(paths))
    with TestClient(create_app(ml.onnx)) as client:
        files = [("file", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in paths]
        r = client.post("/predict?top_k=2", files=files)
        assert r.status_code == 200, r.text
        got = {p["filename"]: [t["label"] for t in p["labels"]] for p in r.json()["predictions"]}
        assert got == {Path(p).name: ref[p] for p in paths}
        info = client.get("/model").json()
        assert info["multi_label"] is True and info["thresholds"] == dict(zip(CLASSES, THRESHOLDS))
        page = client.get("/").text
        assert "p.labels" in page and "label-set" in page


# ---------------------------------------------------------------------------- evaluate
def _expected(ml: MultiLabelSetup, m: dict) -> dict:
    Y = np.array([[int(c in ml.truth[p]) for c in CLASSES] for p in m["paths"]])
    return compute_multilabel_metrics(Y, np.array(m["probs"]), CLASSES, THRESHOLDS)


def test_evaluate_manifest_scores_its_test_rows(ml: MultiLabelSetup) -> None:
    from graft.predict import open_predictor
    from graft.predict.evaluate import evaluate_predictor

    m = evaluate_predictor(open_predictor(ml.onnx), ml.with_split)
    assert m["scored"]["split"] == "test" and m["n"] == 9 and "split column" in m["scored"]["description"]
    assert all(Path(p).name.startswith("img_2_") for p in m["paths"])  # the test rows
    want = _expected(ml, m)
    for key in ("map_macro", "map_micro", "f1_micro", "f1_macro", "subset_accuracy", "hamming_loss", "accuracy"):
        assert m[key] == pytest.approx(want[key]), key
    assert m["multi_label"] is True and m["thresholds"] == list(THRESHOLDS)
    assert m["labels"][0] == [int(c in ml.truth[m["paths"][0]]) for c in CLASSES]


def test_evaluate_manifest_without_split_column_uses_the_recorded_split(ml: MultiLabelSetup) -> None:
    from graft.predict import open_predictor
    from graft.predict.evaluate import evaluate_predictor

    pred = open_predictor(ml.onnx)
    m = evaluate_predictor(pred, ml.no_split)
    assert m["scored"]["split"] == "val" and "held out" in m["scored"]["description"]
    assert 0 < m["n"] < 27 and m["map_macro"] == pytest.approx(_expected(ml, m)["map_macro"])
    other = ml.no_split.with_name("other.csv")
    other.write_text("".join(ml.no_split.read_text().splitlines(keepends=True)[:20]))  # not the training rows
    m = evaluate_predictor(pred, other)
    assert m["scored"]["split"] == "all" and m["n"] == 19


def test_cli_evaluate_multilabel_table_and_json(ml: MultiLabelSetup, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["evaluate", ml.model, ml.with_split, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    m = json.loads(out)
    assert m["multi_label"] is True and m["scored"]["split"] == "test" and set(m["per_class"]) == set(CLASSES)
    code, out, err = run_cli(["evaluate", ml.onnx, ml.with_split], capsys)
    assert code == 0, err
    assert "mAP" in out and "Hamming loss" in out and "threshold" in out and "scored: 9 images" in out
    bad = ml.with_split.with_name("bad.csv")
    bad.write_text("path,labels\nimg_0_0.png,blue|purple\nimg_0_1.png,green\n")
    code, out, err = run_cli(["evaluate", ml.onnx, bad], capsys)
    assert code != 0 and "purple" in err and "Traceback" not in err


def test_parity_tolerates_only_probabilities_on_a_threshold() -> None:
    from graft.export.checks import label_set_agreement

    t = (0.5, 0.5)
    ref = np.array([[0.0, 3.0], [1e-5, -2.0]], np.float32)  # sigmoid(1e-5) ~ 0.5000025: on the threshold
    assert label_set_agreement(ref, ref, t) == (1.0, True)
    near = np.array([[0.0, 3.0], [-1e-5, -2.0]], np.float32)  # flips a label sitting on its threshold
    assert label_set_agreement(ref, near, t) == (0.5, True)
    far = np.array([[0.0, -3.0], [1e-5, -2.0]], np.float32)  # flips a confident label: a wrong export
    assert label_set_agreement(ref, far, t) == (0.5, False)


def test_evaluate_on_the_real_mosaic_manifest(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/make_multilabel.py's layout (images/ beside labels.csv, "0|4|5", train/val rows): its val rows."""
    root = shared_dataset("sign_digits")
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from make_multilabel import build

    manifest = build(tmp_path / "mosaics", n_train=30, n_val=12, root=root)
    model = _build_model(tmp_path / "model", tiny_weights, manifest, tuple([0.5] * 10))
    code, out, err = run_cli(["evaluate", model, manifest, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    m = json.loads(out)
    assert m["scored"]["split"] == "val" and m["n"] == 12 and m["multi_label"] is True
    assert set(m["per_class"]) == {str(d) for d in range(10)} and 0 < m["map_macro"] <= 1
    truth = {line.split(",")[0]: line.split(",")[1] for line in manifest.read_text().splitlines()[1:]}
    support = sum(pc["support"] for pc in m["per_class"].values())
    assert support == sum(len(set(v.split("|"))) for k, v in truth.items() if k.startswith("images/val_"))


@pytest.mark.browser
def test_web_page_shows_the_label_set(ml: MultiLabelSetup) -> None:
    """The served page in headless Chromium: one chip per label of the set, each with its probability."""
    import socket
    import threading
    import time

    import uvicorn

    from _datasets import CHROMIUM, CHROMIUM_ARGS
    from graft.predict.onnx import OnnxPredictor
    from graft.serve import create_app

    if not CHROMIUM.exists():
        msg = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("GRAFT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + "; GRAFT_REQUIRE_BROWSER=1 makes this an error", pytrace=False)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    image = next(p for p in sorted(ml.truth) if len(ml.truth[p]) == 2)
    (ref,) = OnnxPredictor(ml.onnx).predict([image])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ml.onnx), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.getElementById('meta').textContent.includes('multi-label')")
                page.set_input_files("#picker", image)
                page.wait_for_selector(".result[data-state=done] .top-label", timeout=30_000)
                chips = page.locator(".result .label-set .chip")
                assert [chips.nth(i).get_attribute("data-label") for i in range(chips.count())] == [
                    t["label"] for t in ref["labels"]
                ]
                assert page.inner_text(".result .top-label") == " + ".join(t["label"] for t in ref["labels"])
                assert f"{ref['labels'][0]['probability'] * 100:.1f}%" in chips.nth(0).inner_text()
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
