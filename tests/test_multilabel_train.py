"""Multi-label training end to end: per-label logistic regressions, out-of-fold temperatures and thresholds,
the Classifier's save/load, fine-tuning on binary cross-entropy, and a killed run resumed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_BACKBONE, isolated_graft_home

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230)}


def _blob_image(path: Path, present: list[str], seed: int, size: int = 48) -> None:
    """A grey image with one coloured square per label in ``present``, each in its own random quadrant."""
    rng = np.random.default_rng(seed)
    arr = np.full((size, size, 3), 128.0) + rng.normal(0, 12, (size, size, 3))
    half = size // 2
    for name, q in zip(present, rng.permutation(4)):
        y0, x0 = (q // 2) * half, (q % 2) * half
        arr[y0 + 3 : y0 + half - 3, x0 + 3 : x0 + half - 3] = COLOURS[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)


def make_multilabel_manifest(root: Path, n_train: int = 48, n_val: int = 18) -> Path:
    """``root/labels.csv`` (path, labels, split): which colours appear in each image (never none)."""
    rng = np.random.default_rng(7)
    names = list(COLOURS)
    rows = ["path,labels,split"]
    for i in range(n_train + n_val):
        present = [n for n in names if rng.random() < 0.45] or [names[i % 3]]
        _blob_image(root / "img" / f"{i:03d}.png", present, seed=i)
        rows.append(f"img/{i:03d}.png,{'|'.join(present)},{'train' if i < n_train else 'val'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_multilabel_manifest(tmp_path_factory.mktemp("multilabel"))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, manifest: Path, tiny_weights: Path) -> Any:
    import graft

    with isolated_graft_home(tmp_path_factory, "ml_home"):
        clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32", features="final")
        clf.fit(manifest)
        out = tmp_path_factory.mktemp("ml_model") / "model"
        clf.save(out)
    return clf, out


def test_fit_learns_per_label_thresholds_and_beats_chance(fitted: Any) -> None:
    clf, _ = fitted
    th = np.asarray(clf.thresholds_)
    assert clf.head_spec_.multi_label and th.shape == (3,) and ((th > 0) & (th < 1)).all()
    m = clf.metrics_
    assert m["multi_label"] and m["thresholds"] == pytest.approx(list(th))
    assert clf.val_labels_.ndim == 2 and clf.val_probs_.shape == clf.val_labels_.shape
    # chance: each label's AP equals its prevalence; the colours are easy, so far above it
    prevalence = float(clf.val_labels_.mean())
    assert m["map_macro"] > prevalence + 0.2
    assert m["f1_micro"] > 0.6 and 0 <= m["hamming_loss"] < 0.3
    assert np.isclose(m["accuracy"], m["subset_accuracy"])
    assert clf.head_info_["temperatures"] and len(clf.head_info_["temperatures"]) == 3


def test_saved_model_round_trips_thresholds(fitted: Any) -> None:
    import json

    import graft

    clf, out = fitted
    back = graft.load(out, device="cpu")
    assert back.thresholds_ == pytest.approx(tuple(clf.thresholds_)) and back.spec_.multi_label
    assert back.head_spec_.multi_label and json.loads((out / "config.json").read_text())["thresholds"] == list(
        back.thresholds_
    )
    # the loaded network gives the same logits: sigmoid of them at the thresholds is the same label set
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        a, b = clf.model_.cpu()(x), back.model_.cpu()(x)
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 3)


def test_thresholds_never_read_validation(manifest: Path, tiny_weights: Path, tmp_path_factory: Any) -> None:
    """Shuffling the validation labels changes the validation metrics but not the head nor its thresholds."""
    from graft.backbones.options import BackboneOptions
    from graft.data.options import ManifestOptions, SplitOptions
    from graft.features.dataset import embed_dataset, scan_splits
    from graft.features.options import EmbedOptions
    from graft.network import HeadSpec
    from graft.training.fit.stages import fit_head_stage

    with isolated_graft_home(tmp_path_factory, "ml_home2"):
        data = scan_splits(manifest, SplitOptions(), ManifestOptions())
        emb = embed_dataset(
            data,
            BackboneOptions(TINY_BACKBONE, weights=str(tiny_weights)),
            embed=EmbedOptions(num_workers=0, precision="fp32", device="cpu"),
        )
    spec = HeadSpec("linear", emb.train.X.shape[1], 3, multi_label=True)
    a = fit_head_stage(spec, emb.train, emb.val, data.classes)
    shuffled = dataclasses.replace(emb.val, y=emb.val.y[np.random.default_rng(0).permutation(len(emb.val.y))][:, ::-1])
    b = fit_head_stage(spec, emb.train, shuffled, data.classes)
    assert a.thresholds == b.thresholds and a.info["C"] == b.info["C"]
    torch.testing.assert_close(a.head[-1].weight, b.head[-1].weight)
    assert a.metrics["map_macro"] != b.metrics["map_macro"]


def test_training_loss_is_bce_with_pos_weight_and_subset_accuracy() -> None:
    from torch.nn import functional as F

    from graft.training.loss import classification_loss, n_correct

    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -0.2]])
    Y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    pw = torch.tensor([1.0, 2.0, 3.0])
    want = F.binary_cross_entropy_with_logits(logits, Y, pos_weight=pw, reduction="none").mean(1)
    torch.testing.assert_close(classification_loss(logits, Y, pw), want.mean())
    torch.testing.assert_close(
        classification_loss(logits, Y, reduction="sum"),
        F.binary_cross_entropy_with_logits(logits, Y, reduction="none").mean(1).sum(),
    )
    assert n_correct(logits, Y) == 1  # row 2 misses its third label (logit -0.2 < 0)


def test_fine_tune_one_epoch_with_bce_keeps_or_rolls_back(fitted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    from graft.features.extract import FeatureRequest, model_features
    from graft.features.options import EmbedOptions

    clf = copy.deepcopy(fitted[0])
    before = {k: v.clone() for k, v in clf.model_.state_dict().items()}
    stage1_acc = clf.metrics_["accuracy"]

    def sigmoid_scores(net: Any) -> np.ndarray:  # own sigmoid on the network's logits (not the predictors')
        fs = model_features(
            net.backbone,
            clf.preprocessing_,
            clf.val_paths_,
            what=FeatureRequest(spatial=False, taps=net.taps),
            options=EmbedOptions(device="cpu", precision="fp32", num_workers=0),
        )
        with torch.no_grad():
            return torch.sigmoid(net.head(torch.from_numpy(fs.X))).numpy()

    monkeypatch.setattr(clf, "_score_val", sigmoid_scores)
    clf.fine_tune(epochs=1, lr=1e-3)
    ft = clf.stage_metrics_["fine_tune"]
    hist = clf.history_["fine_tune"]
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"]) and 0 <= hist[0]["val_acc"] <= 1
    assert np.isfinite(hist[0]["val_loss"]) and hist[0]["val_loss"] > 0
    assert clf.metrics_["multi_label"] and 0 <= ft["val_accuracy"] <= 1  # subset accuracy of the fine-tuned net
    th = np.asarray(clf.thresholds_)
    assert th.shape == (3,) and ((th > 0) & (th < 1)).all()
    if ft["kept"]:
        assert clf.metrics_["accuracy"] >= stage1_acc and np.isclose(ft["val_accuracy"], clf.metrics_["accuracy"])
    else:
        assert clf.metrics_["accuracy"] == stage1_acc
        for k, v in clf.model_.state_dict().items():
            torch.testing.assert_close(v, before[k])


def test_cli_multilabel_run_killed_then_resumed(manifest: Path, tiny_weights: Path, tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    home, out = tmp_path / "home", tmp_path / "run"
    env = {**os.environ, "GRAFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    args = ["train", manifest, "--out", out, "--backbone", TINY_BACKBONE, "--weights", tiny_weights]
    args += ["--precision", "fp32", "--quiet", "--no-report", "--workers", "0", "--fine-tune", "--epochs", "5"]
    args += ["--patience", "100", "--features", "final"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "graft.cli.main", *map(str, args)],
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
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    r = subprocess.run(
        [sys.executable, "-m", "graft.cli.main", "train", "--resume", str(out), "--quiet", "--no-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["multi_label"] is True and metrics["val_accuracy"] == metrics["val_subset_accuracy"]
    assert {"val_map", "val_map_micro", "val_f1_micro", "val_f1_macro", "val_hamming_loss"} <= set(metrics)
    epochs = [h["epoch"] for h in json.loads((out / "history.json").read_text())["fine_tune"]]
    assert epochs == list(range(1, 6)), epochs
    assert len(json.loads((out / "model" / "config.json").read_text())["thresholds"]) == 3


def test_the_ladders_held_out_slice_survives_rare_label_strata() -> None:
    """A multi-label training set whose rarest-label strata include a few tiny ones still holds out 10%
    (the budget ladder refused to fine-tune the sign_digits mosaics before)."""
    from graft.training.fit.stage_two import calibration_split

    rng = np.random.default_rng(0)
    Y = (rng.random((400, 6)) < 0.4).astype(np.float32)
    Y[:3] = 0  # three images whose only label is label 5, and make label 5 rare elsewhere
    Y[:3, 5] = 1
    Y[3:, 5] = 0
    held = calibration_split(Y, seed=0)
    assert held.sum() == 40 and (calibration_split(Y, seed=0) == held).all()
    assert all(Y[held, j].any() for j in range(5))  # every common label in the slice


def test_the_scratch_baseline_says_it_is_single_label_only(fitted: Any) -> None:
    from graft.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="single-label only; leave out --baseline"):
        fitted[0].baseline()
