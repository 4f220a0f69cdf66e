"""--unlabeled: CV on labelled training images decides, validation is never read, leaks are left out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BACKBONE, _colour_image, make_synthetic_dataset, run_cli


def _blobs(per_class_labelled: int, unlabelled: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Two interleaved half-moons-like clusters per class: few labels, many unlabelled points on the same manifold."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 20)) * 3  # 3 classes x 2 sub-clusters

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        sub = rng.integers(0, 6, n)
        return (centres[sub] + rng.normal(size=(n, 20))).astype(np.float32), sub // 2

    X_u, _ = draw(unlabelled)
    X, y = draw(per_class_labelled * 3)
    return X, y, np.arange(len(y)), X_u


def test_semi_keeps_a_method_only_where_cv_says_it_helps() -> None:
    from graft.training.head.linear_probe import fit_linear_head
    from graft.training.head.semi import fit_with_unlabeled

    X, y, g, X_u = _blobs(6, 200)
    base = fit_linear_head(X, y, 3, groups=g)
    semi = fit_with_unlabeled((X, y, g), X_u, base, 3)
    assert set(semi.info["cv_accuracy"]) == {"none", "self_training", "label_spreading"}
    if semi.info["method"] == "none":
        assert semi.fit is base
    else:
        assert semi.info["pseudo_labelled"] > 0
        gain = semi.info["cv_accuracy"][semi.info["method"]] - semi.info["cv_accuracy"]["none"]
        assert gain > semi.info["kept_if_gain_over"] >= 0
    # pure noise as "unlabelled images": never clearly helps, the labelled-only head stays
    noise = np.random.default_rng(1).normal(size=(200, 20)).astype(np.float32) * 50
    kept = fit_with_unlabeled((X, y, g), noise, base, 3)
    assert kept.info["method"] == "none" and kept.fit is base
    assert semi.info["repeats"] == kept.info["repeats"] == 3  # the guard averages three partitions into folds


def test_label_spreading_stopping_at_its_iteration_cap_prints_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn's stop (the change summed over every row) is never met on a large pool; its
    ConvergenceWarning would only say that the planned iterations ran, in the middle of graft train."""
    import warnings

    import sklearn.semi_supervised
    from sklearn.semi_supervised import LabelSpreading

    from graft.training.head.semi import pseudo_labels

    class Capped(LabelSpreading):  # a cap it cannot meet: scikit-learn warns every time
        def fit(self, X, y):
            self.max_iter = 2
            return super().fit(X, y)

    monkeypatch.setattr(sklearn.semi_supervised, "LabelSpreading", Capped)
    X, y, _, X_u = _blobs(6, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, labels = pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, 3)
    assert len(rows) == len(labels)


def test_label_spreading_works_on_a_seeded_sample_of_a_large_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its neighbour graph costs the square of the pool (100,000 images: 11 min on one thread)."""
    from graft.training.head import semi

    X, y, _, X_u = _blobs(6, 300)
    whole = semi.pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, 3)
    monkeypatch.setattr(semi, "SPREAD_POOL", 80)
    rows, labels = semi.pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, 3, seed=1)
    assert 40 < len(rows) <= 80 and len(set(rows.tolist())) == len(rows) and rows.max() < len(X_u)
    agree = dict(zip(whole[0].tolist(), whole[1].tolist()))
    assert np.mean([agree.get(int(r), -1) == lab for r, lab in zip(rows, labels)]) > 0.9  # the same labels
    again = semi.pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, 3, seed=1)
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], labels)
    other = semi.pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, 3, seed=2)
    assert not np.array_equal(other[0], rows)
    # kept: metrics.json says the graph held a sample
    from graft.training.head.linear_probe import fit_linear_head

    base = fit_linear_head(X, y, 3)
    n = len(y)
    right = {"none": np.zeros((3, n)), "self_training": np.zeros((3, n)), "label_spreading": np.ones((3, n))}
    right["label_spreading"][:, 0] = 0  # a gain with a spread, so a standard error to beat
    held = {m: np.zeros((n, 3), np.float32) for m in right}
    kept = semi._choose((right, held, np.arange(n)), (X, y, np.ones(n, np.float32)), X_u, base, (3, 1.0, 1.0, 0), {})
    assert kept.info["method"] == "label_spreading" and kept.info["spread_sample"] == 80


def test_a_kept_method_is_calibrated_on_its_own_held_out_logits() -> None:
    """The temperature of the head kept comes from that method's cross-validated logits, not labelled-only's."""
    from graft.training.head import semi
    from graft.training.head.linear_probe import fit_linear_head

    X, y, g, X_u = _blobs(6, 200)
    base = fit_linear_head(X, y, 3, groups=g)
    n = len(y)
    right = {"none": np.tile(np.arange(n) % 2, (3, 1)).astype(float), "label_spreading": np.zeros((3, n))}
    right["self_training"] = np.ones((3, n))  # clearly better on every image: kept
    held_out = {m: np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32) for m in semi.METHODS}
    ctx = (3, base.C, 1.0, 0)
    kept = semi._choose((right, held_out, np.arange(n)), (X, y, np.ones(n, np.float32)), X_u, base, ctx, {})
    assert kept.info["method"] == "self_training"
    assert kept.fit.oof_logits is held_out["self_training"] and np.array_equal(kept.fit.oof_labels, y)
    assert base.oof_logits is not None and kept.fit.oof_logits is not base.oof_logits
    own = base.oof_logits
    none_sure = semi._choose((right, held_out, np.arange(n)), (X, y, np.ones(n, np.float32)), X_u[:0], base, ctx, {})
    assert none_sure.info["method"] == "none" and none_sure.fit is base and base.oof_logits is own  # untouched


def test_the_guard_cross_validates_on_a_sample_of_a_large_labelled_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the choice of C: a bounded sample of labelled images (10,000 labels: 426 s of guard before)."""
    from graft.training.head import semi
    from graft.training.head.linear_probe import fit_linear_head

    X, y, _, X_u = _blobs(10, 100)
    g = np.repeat(np.arange(len(y) // 2), 2)  # two views per image: a sample keeps an image's views together
    y = y[::2].repeat(2)
    base = fit_linear_head(X, y, 3, groups=g)
    seen: list[int] = []
    real = semi._folds
    monkeypatch.setattr(semi, "_folds", lambda y_img, *a: seen.append(len(y_img)) or real(y_img, *a))
    monkeypatch.setattr(semi, "CV_LABELLED", 9)
    fit = semi.fit_with_unlabeled((X, y, g), X_u, base, 3)
    assert fit.info["labelled_checked"] == 9 and seen == [9] * semi.REPEATS  # 9 of the 15 images, every partition
    # what decides, and calibrates a kept head, is the held-out logits of those 9 images' rows
    captured: list[tuple] = []
    real_choose = semi._choose
    monkeypatch.setattr(semi, "_choose", lambda cv, *a: captured.append(cv) or real_choose(cv, *a))
    semi.fit_with_unlabeled((X, y, g), X_u, base, 3)
    right, held_out, rows = captured[0]
    assert len(rows) == 18 and len(np.unique(g[rows])) == 9 and right["none"].shape == (semi.REPEATS, 9)
    assert all(h.shape == (18, 3) and np.abs(h).sum(1).min() > 0 for h in held_out.values())  # every row scored


def test_self_training_labels_the_pool_again_with_the_head_it_refitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round's head is surer near what it just learned: later rounds label images the first could not."""
    from graft.training.head import semi
    from graft.training.head.calibration import fit_temperature
    from graft.training.head.linear_probe import fit_linear_head

    X, y, g, X_u = _blobs(3, 300, seed=1)
    base = fit_linear_head(X, y, 3, groups=g)
    T = fit_temperature(base.oof_logits, base.oof_labels)  # type: ignore[arg-type]
    ctx = (3, base.C, T, 0)
    first, _ = semi.pseudo_labels("self_training", base, T, (X, y), X_u, 3)
    _, used, _ = semi._fit_method("self_training", (X, y, np.ones(len(X), np.float32)), X_u, base, ctx)
    assert len(first) < used <= len(X_u)  # 78 sure after one round, 141 after three
    monkeypatch.setattr(semi, "ROUNDS", 1)
    assert semi._fit_method("self_training", (X, y, np.ones(len(X), np.float32)), X_u, base, ctx)[1] == len(first)


@pytest.fixture(autouse=True)
def _exact_copies_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny random-weight backbone maps every same-colour image close together: only exact feature copies count."""
    monkeypatch.setattr("graft.training.fit.unlabeled.NEAR_COPY_COS", 0.9999)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(dataset, the same with validation labels shuffled, an unlabelled folder holding two validation copies)."""
    root = tmp_path_factory.mktemp("semi")
    a = make_synthetic_dataset(root / "a", per_class=9)
    b = root / "b"
    shutil.copytree(a / "train", b / "train")
    vals = sorted((a / "val").rglob("*.png"))
    classes = sorted(p.name for p in (a / "val").iterdir())
    for f in vals:  # every validation image under another class
        dst = b / "val" / classes[(classes.index(f.parent.name) + 1) % 3] / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    u = root / "unlabeled"
    for i in range(15):
        _colour_image(u / f"u{i:02d}.png", i % 3, seed=7000 + i)
    shutil.copy(vals[0], u / "leak0.png")
    shutil.copy(vals[4], u / "leak1.png")
    return a, b, u


def test_unlabeled_never_reads_validation_and_leaves_out_leaks(
    datasets: tuple[Path, Path, Path], tiny_weights: Path
) -> None:
    import graft

    a, b, u = datasets
    heads = []
    for data in (a, b):
        clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32")
        clf.fit(data, unlabeled=u)
        heads.append([p.detach().numpy().copy() for p in clf.model_.head.parameters()])
        info = clf.head_info_["unlabeled"]
        assert info["found"] == 17 and info["leaks_of_val_or_test"] == 2
        assert info["method"] in ("none", "self_training", "label_spreading")
    for pa, pb in zip(*heads):
        np.testing.assert_array_equal(pa, pb)  # shuffled validation labels: the very same head


def test_train_cli_records_unlabeled_in_metrics(
    datasets: tuple[Path, Path, Path], tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, u = datasets
    out = tmp_path / "run"
    args = ["train", a, "--out", out, "--backbone", TINY_BACKBONE, "--weights", tiny_weights, "--workers", 0]
    code, _, err = run_cli(args + ["--precision", "fp32", "--no-report", "--quiet", "--unlabeled", u], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())["unlabeled"]
    assert m["leaks_of_val_or_test"] == 2 and "cv_accuracy" in m and m["images"] == 15
    from graft.report.sections import unlabeled_line  # the summary's row: what was used or why not, what was left out

    line = unlabeled_line(m)
    assert line.startswith("15 images, ") and "left out 2 leaks of val/test" in line
    assert ("not used: cross-validation" in line) == (m["method"] == "none")
    empty = tmp_path / "none"
    empty.mkdir()
    code, _, err = run_cli(["train", a, "--out", tmp_path / "r2", "--unlabeled", empty], capsys)
    assert code == 2 and "no images found" in err
