"""Multi-label runs in the report, the run summary, the learning curve and the doctor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from graft.metrics_multilabel import compute_multilabel_metrics

CLASSES = ["cat", "dog", "$sofa$"]


def _multilabel_run(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, list[float]]:
    """A run folder as a multi-label ``graft train`` writes it (no model: the report does not need one)."""
    rng = np.random.default_rng(0)
    Y = (rng.random((40, 3)) < [0.5, 0.3, 0.6]).astype(int)
    Y[0] = [1, 1, 1]
    P = np.clip(0.7 * Y + 0.3 * rng.random((40, 3)), 0, 1).round(6)
    thresholds = [0.5, 0.6, 0.4]
    m = compute_multilabel_metrics(Y, P, CLASSES, thresholds)
    run = tmp_path / "run"
    run.mkdir()
    metrics = {
        "multi_label": True,
        "val_accuracy": m["accuracy"],
        "val_subset_accuracy": m["subset_accuracy"],
        "val_map": m["map_macro"],
        "val_map_micro": m["map_micro"],
        "val_f1_micro": m["f1_micro"],
        "val_f1_macro": m["f1_macro"],
        "val_hamming_loss": m["hamming_loss"],
        "thresholds": thresholds,
        "classes": CLASSES,
        "kept_stage": "head",
        "stages": {"head": {"val_accuracy": m["accuracy"], "seconds": 1.0}},
    }
    preds = {"classes": CLASSES, "paths": [f"/x/{i}.jpg" for i in range(40)], "labels": Y.tolist(), "probs": P.tolist()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "val_predictions.json").write_text(json.dumps(preds))
    (run / "run.json").write_text(json.dumps({"data_dir": str(tmp_path / "labels.csv")}))
    return run, Y, P, thresholds


def test_multilabel_report_shows_per_label_metrics_pr_curves_and_cooccurrence(tmp_path: Path) -> None:
    from graft.report import write_report

    run, Y, P, t = _multilabel_run(tmp_path)
    html = write_report(run).read_text()
    m = compute_multilabel_metrics(Y, P, CLASSES, t)
    assert "could not be rendered" not in html
    section = html.split('id="multi-label"')[1].split("</section>")[0]
    for label in CLASSES:  # one row per label: threshold, precision, recall, F1, AP, support
        pc = m["per_class"][label]
        row = f"<td>{label}</td>" + "".join(
            f'<td class="num">{v:.4f}</td>'
            for v in (t[CLASSES.index(label)], pc["precision"], pc["recall"], pc["f1"], pc["ap"])
        )
        assert row + f'<td class="num">{int(pc["support"])}</td>' in section
    assert f'<td class="num">{m["map_macro"]:.4f}</td>' in section
    co = Y.T @ Y  # cat and dog together, from the validation truth
    assert f'<td>cat</td><td class="num">{co[0, 0]}</td><td class="num">{co[0, 1]}</td>' in section
    assert (run / "report" / "pr_curves.png").stat().st_size > 5_000
    # single-label sections that mean nothing here are left out, not broken
    assert "Confusion matrix" not in html and "top-" not in html and 'id="top-losses"' not in html
    cards = re.findall(r"<b>([^<]*)</b><span>([^<]*)</span>", html)
    assert (f"{m['map_macro']:.4f}", "val mAP") in cards and (f"{m['f1_micro']:.4f}", "F1 micro") in cards


def test_multilabel_report_with_mismatched_predictions_is_one_note(tmp_path: Path) -> None:
    from graft.report import write_report

    run, Y, P, _ = _multilabel_run(tmp_path)
    preds = json.loads((run / "val_predictions.json").read_text())
    preds["probs"] = [row[:2] for row in preds["probs"]]
    (run / "val_predictions.json").write_text(json.dumps(preds))
    html = write_report(run).read_text()
    assert "This section could not be rendered: ValueError: val_predictions.json" in html


def test_run_summary_of_a_multilabel_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graft.cli.train import render_summary

    m = {
        "counts": {"train": {"a": 3}},
        "classes": ["a", "b", "c"],
        "skipped": [],
        "kept_stage": "head",
        "stages": {"head": {"val_accuracy": 0.41, "val_map": 0.8765, "seconds": 2.0}},
        "multi_label": True,
        "val_accuracy": 0.41,
        "val_subset_accuracy": 0.41,
        "val_map": 0.8765,
        "val_map_micro": 0.8801,
        "val_f1_micro": 0.7712,
        "val_f1_macro": 0.7523,
        "val_hamming_loss": 0.0912,
        "timings": {},
        "train_seconds": 1.0,
    }
    render_summary(tmp_path, m)
    out = capsys.readouterr().out
    for name, value in [
        ("head val mAP", "0.8765"),
        ("val mAP (macro)", "0.8765"),
        ("val mAP (micro)", "0.8801"),
        ("val F1 micro", "0.7712"),
        ("val F1 macro", "0.7523"),
        ("val subset accuracy", "0.4100"),
        ("val Hamming loss", "0.0912"),
    ]:
        assert re.search(rf"{re.escape(name)}\s+│\s+{value}", out), name
    assert not re.search(r"^│ val accuracy ", out, re.M)


# --------------------------------------------------------------------------- learning curve
class _StandInFit:
    """What ``fit_multilabel_head`` returns as far as the curve reads it: weight (labels, d), bias, C."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, C: float) -> None:
        self.weight, self.bias, self.C = weight, bias, C


@pytest.fixture
def stand_in_head(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``graft.training.head.multilabel.fit_multilabel_head`` replaced by per-label scikit-learn logistic
    regressions (the training engineer's head is not on this branch); records every call."""
    import sys
    import types

    from sklearn.linear_model import LogisticRegression

    calls: list[dict] = []

    def fit_multilabel_head(X: np.ndarray, Y: np.ndarray, *, C: float | None = None, seed: int = 0) -> _StandInFit:
        calls.append({"n": len(X), "C": C, "seed": seed})
        c = 0.5 if C is None else C  # "chosen by CV"
        fits = [LogisticRegression(C=c, max_iter=500).fit(X, Y[:, j]) for j in range(Y.shape[1])]
        return _StandInFit(np.stack([f.coef_[0] for f in fits]), np.array([f.intercept_[0] for f in fits]), c)

    module = types.ModuleType("graft.training.head.multilabel")
    module.fit_multilabel_head = fit_multilabel_head  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "graft.training.head.multilabel", module)
    return calls


def _features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 3)) < 0.4).astype(np.float32)
    Y[Y.sum(1) == 0, 0] = 1
    X = (Y @ np.eye(3, 8) * 1.5 + rng.normal(size=(n, 8))).astype(np.float32)
    return X, Y


def test_multilabel_curve_is_map_on_nested_per_label_subsamples(stand_in_head: list[dict]) -> None:
    from graft.curve import curve_from_features
    from graft.curve.multilabel import multilabel_map, subsample_per_label

    train, val = _features(160, 0), _features(60, 1)
    c = curve_from_features(train, val, 3, sizes=[2, 8], seeds=3)
    assert c.metric == "map" and c.n_classes == 3 and c.n_val == 60
    assert [len(s) for s in c.per_seed] == [3, 3, 1] and c.sizes[-1] == int(train[1].sum(0).max())
    assert c.n_images[-1] == 160 and c.mean[-1] > c.mean[0] > 0.3
    # the full point is a plain fit on every row, scored by the macro mAP of its validation probabilities
    from sklearn.linear_model import LogisticRegression

    assert stand_in_head[-1]["n"] == 160
    Yv = val[1]
    P = np.stack(
        [
            LogisticRegression(C=0.5, max_iter=500).fit(*train[:1], train[1][:, j]).predict_proba(val[0])[:, 1]
            for j in range(3)
        ],
        1,
    )
    assert c.per_seed[-1][0] == pytest.approx(
        compute_multilabel_metrics(Yv, P, list("abc"), [0.5] * 3)["map_macro"], abs=1e-6
    )
    # C: chosen by CV on each size's first subsample, then reused by its other seeds
    assert [call["C"] for call in stand_in_head] == [None, 0.5, 0.5, None, 0.5, 0.5, None]
    # nested: a seed's rows at 2 per label are among its rows at 8, and every label has its k positives
    small, big = subsample_per_label(train[1], 2, 7), subsample_per_label(train[1], 8, 7)
    assert set(small) <= set(big) and (train[1][small].sum(0) >= 2).all() and (train[1][big].sum(0) >= 8).all()
    assert multilabel_map(Yv, Yv * 0.9 + 0.05) == 1.0


def test_multilabel_curve_figure_and_table_say_map(
    stand_in_head: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from graft.cli.curve import render
    from graft.curve import curve_figure, curve_from_features

    c = curve_from_features(_features(80, 0), _features(30, 1), 3, sizes=[2], seeds=2)
    ax = curve_figure(c).axes[0]
    assert ax.get_ylabel() == "validation mAP" and "per label" in ax.get_xlabel()
    render(c, [], None)
    out = capsys.readouterr().out
    assert "images per label" in out and "val mAP" in out and "val accuracy" not in out


# --------------------------------------------------------------------------- doctor
def _corpus(label_sets: list[tuple[int, ...]], classes: list[str]):
    from graft.data.records import ImageRecord
    from graft.doctor.checks import Corpus

    records = [ImageRecord(Path(f"/d/{i}.png"), -1, labels=s) for i, s in enumerate(label_sets)]
    return Corpus(records, ["train"] * len(records), classes, {"train": "train"}, False)


def test_missing_and_wrong_labels_from_out_of_fold_probabilities() -> None:
    from graft.doctor.multilabel import missing_wrong_label_issues

    rng = np.random.default_rng(0)
    sets = [tuple(j for j in range(2) if rng.random() < 0.5) or (0,) for _ in range(40)]
    corpus = _corpus(sets, ["cat", "dog"])
    Y = np.array([[j in s for j in range(2)] for s in sets], float)
    P = np.clip(0.15 + 0.7 * Y + rng.normal(0, 0.03, Y.shape), 0.01, 0.99)
    no_dog = next(i for i, s in enumerate(sets) if 1 not in s)
    P[no_dog, 1] = 0.99  # the model is surer it shows a dog than about typical dogs: a dog label is missing
    has_cat = next(i for i, s in enumerate(sets) if 0 in s and i != no_dog)
    P[has_cat, 0] = 0.01  # labelled cat, looks less like one than typical non-cats
    issues = missing_wrong_label_issues(corpus, P, np.arange(40))
    found = {i.paths[0]: i.detail for i in issues}
    assert set(found) == {f"/d/{no_dog}.png", f"/d/{has_cat}.png"}
    assert "missing label 'dog'? held-out p=0.99" in found[f"/d/{no_dog}.png"]
    assert "wrong label 'cat'? held-out p=0.01" in found[f"/d/{has_cat}.png"]
    assert all(i.kind == "label" for i in issues)


def test_rare_and_near_universal_labels_are_imbalance_issues() -> None:
    from graft.doctor.multilabel import label_share_issues

    issues = label_share_issues("/d", {"common": 40, "rare": 1, "everywhere": 99}, 100)
    details = sorted(i.detail for i in issues)
    assert len(issues) == 2 and all(i.kind == "imbalance" for i in issues)
    assert details[0].startswith("label 'everywhere' is on 99 of 100") and details[1].startswith("label 'rare' is on 1")


def test_doctor_on_a_multilabel_manifest(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> None:
    """Copies, corrupt files and outliers work as on folders; a label on every image is an imbalance issue."""
    import shutil

    from conftest import TINY_BACKBONE, isolated_graft_home, make_synthetic_dataset
    from graft.backbones.options import BackboneOptions
    from graft.doctor import doctor
    from graft.features.options import EmbedOptions

    root = make_synthetic_dataset(tmp_path_factory.mktemp("ml_doctor") / "data" / "images")
    shutil.copy(root / "train" / "red" / "red_00.png", root / "copy.png")
    (root / "broken.png").write_bytes((root / "train" / "red" / "red_01.png").read_bytes()[:60])
    rows = ["path,labels,split"]
    for p in sorted(root.rglob("*.png")):
        split = "val" if "/val/" in str(p) else "train"
        colour = next((c for c in ("red", "green", "blue") if c in p.parts), "red")
        rows.append(f"{p.relative_to(root.parent)},{colour}|photo,{split}")
    (root.parent / "labels.csv").write_text("\n".join(rows) + "\n")
    with isolated_graft_home(tmp_path_factory, "ml_doctor_home"):
        report = doctor(
            root.parent / "labels.csv",
            backbone=BackboneOptions(TINY_BACKBONE, weights=tiny_weights),
            embed=EmbedOptions(num_workers=0, precision="fp32"),
        )
    assert {str(root / "train/red/red_00.png"), str(root / "copy.png")} in [
        set(i.paths) for i in report.by_kind("duplicate")
    ]
    assert [i.paths for i in report.by_kind("corrupt")] == [(str(root / "broken.png"),)]
    imbalance = [i.detail for i in report.by_kind("imbalance")]
    assert len(imbalance) == 1 and imbalance[0].startswith("label 'photo' is on 26 of 26 training images")
    assert report.settings["label_rows_checked"] == 37  # every image that decoded (36 + the copy) was held out once


def test_report_curve_section_of_a_multilabel_curve_says_map(tmp_path: Path) -> None:
    from graft.report import write_report

    run, *_ = _multilabel_run(tmp_path)
    curve = {"sizes": [2, 8], "n_images": [5, 40], "per_seed": [[0.61, 0.65], [0.83]], "mean": [0.63, 0.83]}
    curve.update(std=[0.028, 0.0], n_val=40, metric="map", verdict="+10.0 points per doubling")
    (run / "curve.json").write_text(json.dumps(curve))
    section = write_report(run).read_text().split('id="curve"')[1].split("</section>")[0]
    assert "Validation mAP of graft&#x27;s multi-label head" in section and "<th>val mAP</th>" in section
    assert "<th>images per label</th>" in section and "val accuracy" not in section
