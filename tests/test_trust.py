"""Trust: calibrated probabilities, "unknown" for what the model never saw, honesty about shift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset, run_cli
from graft.training.head.calibration import fit_temperature, nll


@pytest.fixture(scope="module")
def noise_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Random-noise pictures: nothing like the colour-stripe classes."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = root / f"noise_{i}.png"
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------- calibration
def test_temperature_recovers_a_known_miscalibration() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 4000)
    true_logits = rng.normal(0, 1, (4000, 4))
    true_logits[np.arange(4000), y] += 2.0
    # Draw labels from the true model, then make the logits 3x overconfident.
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    t = fit_temperature(3.0 * true_logits, y)
    assert 2.6 < t < 3.4
    assert nll(3.0 * true_logits, y, t) < nll(3.0 * true_logits, y, 1.0)
    assert fit_temperature(true_logits[:5], y[:5]) == 1.0  # too few rows: no change


def test_no_mistake_out_of_fold_is_no_licence_to_sharpen() -> None:
    """Held-out logits all right (a small, easy dataset): the likelihood has no finite optimum, T stays 1."""
    from graft.training.head.calibration import fit_label_temperatures

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 24)
    z = rng.normal(0, 0.3, (24, 2))
    z[np.arange(24), y] += 1.0 + rng.random(24)  # every row right, by margins of 1 to 2
    assert fit_temperature(z, y) == 1.0  # the bare likelihood's fit: 0.05, the search's edge
    z[0] = z[0][::-1]  # one mistake: a finite optimum, fitted as before
    assert 0.05 < fit_temperature(z, y) < 20.0
    Y = rng.integers(0, 2, (24, 2)).astype(float)  # multi-label: the same, per label
    logits = (2 * Y - 1) * (1.0 + rng.random((24, 2)))  # every sign right
    logits[0, 0] = -logits[0, 0]  # one mistake, in label 0 only
    t = fit_label_temperatures(logits, Y)
    assert t[1] == 1.0 and t[0] != 1.0


def test_fit_records_the_temperature_and_both_eces(tiny_model_dir: Path) -> None:
    clf = graft.load(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    t = cfg["training"]["head"]["temperature"]
    assert t > 0 and np.isfinite(t)
    assert "ece" in clf.metrics_ and "ece_uncalibrated" in clf.metrics_


def test_calibration_split_is_stratified_seeded_and_skipped_when_too_small() -> None:
    from graft.training.fit.stage_two import calibration_split

    y = np.repeat([0, 1, 2], 40)
    held = calibration_split(y, seed=0)
    assert held.sum() == 12 and np.bincount(y[held]).tolist() == [4, 4, 4]
    assert (calibration_split(y, seed=0) == held).all()  # a resumed run holds out the same images
    assert not calibration_split(np.repeat([0, 1], 12)).any()  # 2 held out: too few to fit T


def test_a_kept_fine_tune_is_recalibrated_on_held_out_training_images(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from graft.training.fit import stage_two

    data = make_synthetic_dataset(tmp_path / "d", per_class=60)  # 40 train images per class
    seen: list[int] = []
    real = stage_two.train_network
    monkeypatch.setattr(stage_two, "train_network", lambda *a, **k: seen.append(len(a[2][0])) or real(*a, **k))
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(data)
    from graft.training.fit import targets

    fitted: list[tuple[int, float]] = []  # (held-out rows, temperature) of each fit on a network's logits
    real_t = targets.fit_temperature
    monkeypatch.setattr(targets, "fit_temperature", lambda z, y: fitted.append((len(y), real_t(z, y))) or fitted[-1][1])
    clf.fine_tune(epochs=1, unfreeze=1, lr=1e-3, batch_size=16)
    summary = clf.stage_metrics_["fine_tune"]
    assert seen == [108] and summary["calibration_images"] == 12  # 10% of train never trained on
    assert summary["kept"], "the colour classes are easy: fine-tuning should not fall below stage 1"
    t2 = summary["temperature"]
    assert fitted and fitted[-1][0] == 12 and t2 == fitted[-1][1] > 0  # fitted on the held-out 12, and kept
    assert "ece_uncalibrated" in clf.metrics_ and clf.metrics_["ece"] >= 0
    # The temperature is folded into the network: every predictor gives the calibrated probabilities.
    probs, _ok, _bad = clf.predict_proba(clf.val_paths_)
    np.testing.assert_allclose(probs, clf.val_probs_, atol=2e-4)
    out = tmp_path / "run"
    args = [
        "train",
        data,
        "--backbone",
        TINY_BACKBONE,
        "--weights",
        tiny_weights,
        "--out",
        out,
        "--fine-tune",
        "--epochs",
        "1",
        "--quiet",
        "--no-report",
        "--workers",
        "0",
        "--precision",
        "fp32",
    ]
    assert run_cli(args, capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["temperature"] > 0


# ---------------------------------------------------------------------------- unknown
def test_unfamiliar_images_are_unknown_and_keep_their_best_guess(
    tiny_model_dir: Path, synthetic_dataset: Path, noise_images: list[Path]
) -> None:
    clf = graft.load(tiny_model_dir)
    spec = json.loads((tiny_model_dir / "config.json").read_text())["ood"]
    assert spec["method"] == "knn_cosine" and spec["threshold"] > 0 and spec["pass_rate"] == 0.95
    val = clf.predict(sorted((synthetic_dataset / "val").rglob("*.png")))
    assert np.mean([r["known"] for r in val]) >= 0.75
    odd = clf.predict(noise_images, top_k=2)
    assert all(r["label"] == "unknown" and not r["known"] for r in odd)
    assert all(r["best_label"] in clf.classes_ and r["top_k"][0]["label"] == r["best_label"] for r in odd)
    assert all(r["ood_score"] > spec["threshold"] for r in odd)
    kept = clf.predict(noise_images, reject=False)
    assert all(r["label"] in clf.classes_ and "ood_score" in r for r in kept)


def test_onnx_and_cli_reject_the_same_images(
    tmp_path: Path,
    tiny_model_dir: Path,
    noise_images: list[Path],
    synthetic_dataset: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from graft.export import export_onnx
    from graft.predict.onnx import OnnxPredictor

    onnx_path = tmp_path / "m.onnx"
    export_onnx(tiny_model_dir, onnx_path)
    onnx = OnnxPredictor(onnx_path)
    assert "ood_score" in onnx.output_names
    files = noise_images + sorted((synthetic_dataset / "val").rglob("*.png"))[:6]
    a, b = graft.load(tiny_model_dir).predict(files), onnx.predict(files)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    np.testing.assert_allclose([r["ood_score"] for r in a], [r["ood_score"] for r in b], atol=1e-4)
    code, out, _ = run_cli(["predict", onnx_path, *noise_images[:2], "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all(r["label"] == "unknown" and r["known"] is False and "ood_score" in r for r in rows)
    code, out, _ = run_cli(["predict", tiny_model_dir, *noise_images[:2], "--json", "--no-reject"], capsys)
    assert code == 0 and all(json.loads(line)["label"] != "unknown" for line in out.splitlines())


def test_evaluate_reports_the_unknown_rate(tiny_model_dir: Path, synthetic_dataset: Path) -> None:
    from graft.predict import open_predictor
    from graft.predict.evaluate import evaluate_predictor

    m = evaluate_predictor(open_predictor(tiny_model_dir), synthetic_dataset)
    assert 0.0 <= m["unknown_rate"] <= 0.25


def test_server_marks_unknown(tiny_model_dir: Path, noise_images: list[Path], synthetic_dataset: Path) -> None:
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    with TestClient(create_app(tiny_model_dir, backend="torch")) as client:
        r = client.post("/predict", files={"file": ("n.png", noise_images[0].read_bytes(), "image/png")})
        (p,) = r.json()["predictions"]
        assert p["label"] == "unknown" and p["known"] is False and p["best_label"]
        r = client.post("/predict?reject=false", files={"file": ("n.png", noise_images[0].read_bytes())})
        assert r.json()["predictions"][0]["label"] != "unknown"


# ---------------------------------------------------------------------------- shift
def _invert_copy(src: Path, dst: Path) -> None:
    for p in src.rglob("*.png"):
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - np.asarray(Image.open(p).convert("RGB"))).save(out)


def test_a_test_folder_is_reported_beside_val_and_a_shift_is_flagged(
    tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", per_class=12)
    _invert_copy(root / "val", root / "test")  # another "scanner": colours inverted
    args = [
        "train",
        root,
        "--out",
        tmp_path / "run",
        "--backbone",
        TINY_BACKBONE,
        "--weights",
        tiny_weights,
        "--workers",
        "0",
        "--precision",
        "fp32",
        "--no-report",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test_n"] == 12 and m["test_accuracy"] < m["val_accuracy"] - 0.1
    assert m["test_shift"] is True and "test folder differs" in err


def test_a_random_test_split_is_not_called_a_shift(tmp_path: Path, tiny_weights: Path) -> None:
    from graft.run import RunOptions, train_run

    root = make_synthetic_dataset(tmp_path / "ds", per_class=15, split=False)
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32", test_fraction=0.2)
    m = train_run(root, tmp_path / "run", clf, RunOptions())
    assert m["test_n"] >= 9 and m["test_shift"] is False


def test_the_ood_score_of_many_queries_is_computed_in_chunks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from graft.network import ood as network_ood
    from graft.training.head import ood

    rng = np.random.default_rng(0)
    fit = ood.fit_ood(rng.normal(size=(300, 16)).astype(np.float32), seed=0)
    queries = torch.from_numpy(rng.normal(size=(250, 16)).astype(np.float32))
    whole = fit.scorer(queries)
    monkeypatch.setattr(network_ood, "_QUERY_CHUNK", 64)
    chunked = fit.scorer(queries)
    assert chunked.shape == (250,)
    torch.testing.assert_close(chunked, whole)
    ref = fit.scorer.reference
    torch.testing.assert_close(ref.norm(dim=1), torch.ones(len(ref)))  # normalised in place, one copy


def test_heads_on_features_move_no_module(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The features go to the heads' device; no module moves (on CUDA, moving the OOD scorer under
    ``inference_mode`` made its buffers inference tensors that the ladder's ``load_state_dict`` could not write)."""
    import torch

    from graft.predict import open_predictor

    pred = open_predictor(tiny_model_dir, "torch", device="cpu")
    net = pred.net
    assert net.ood is not None
    moved: list[str] = []
    real_to = torch.nn.Module.to

    def spy(self: torch.nn.Module, *a: object, **k: object) -> torch.nn.Module:
        moved.append(type(self).__name__)
        return real_to(self, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    X = np.random.default_rng(0).normal(size=(5, net.head[-1].in_features)).astype(np.float32)
    out = pred.outputs_of_features(X)
    assert moved == []
    assert out.probs.shape == (5, 3) and np.allclose(out.probs.sum(1), 1, atol=1e-5)
    assert out.ood is not None and out.ood.shape == (5,)
    assert not any(t.is_inference() for t in net.state_dict().values())
    net.load_state_dict({k: v.clone() for k, v in net.state_dict().items()})  # what the ladder does between rungs
