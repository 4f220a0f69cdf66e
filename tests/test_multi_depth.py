"""Multi-depth features: the taps, the choice from training data only, and one computation everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset
from graft.backbones.taps import candidate_taps, tap_columns, tap_widths, tapped_features
from graft.training.head.feature_choice import MIN_GAIN, choose_features


@pytest.mark.parametrize("name", [TINY_BACKBONE, "resnet18"])
def test_taps_end_with_the_final_features_and_skip_a_duplicate_final_map(name: str) -> None:
    m = timm.create_model(name, pretrained=False, num_classes=0).eval()
    taps = candidate_taps(m)
    widths = tap_widths(m, taps)
    assert len(taps) == 3 and len(widths) == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f, plain = tapped_features(m, x, taps), m(x)
    assert f.shape == (2, sum(widths))
    torch.testing.assert_close(f[:, -widths[-1] :], plain)  # the final features are the plain ones
    if name == "resnet18":  # layer4's map is the final map: not tapped twice
        assert widths[:-1] == [64, 128, 256]
    assert tap_columns(widths, taps, ()) == list(range(sum(widths[:-1]), sum(widths)))


def test_the_choice_follows_cross_validation_with_a_margin() -> None:
    widths, taps = [4, 6, 10], (1, 2)
    scores = {10: 0.90, 20: 0.90 + MIN_GAIN}

    def cv(column_sets: list[list[int]]) -> list[float]:
        return [scores[len(cols)] for cols in column_sets]

    chosen = choose_features("auto", "linear", taps, widths, cv)
    assert chosen.taps == taps and chosen.columns == list(range(20))
    scores[20] = 0.90 + MIN_GAIN / 2
    assert choose_features("auto", "linear", taps, widths, cv).columns == list(range(10, 20))
    assert choose_features("auto", "mlp", taps, widths, cv).taps == ()  # only the linear head is cross-validated
    assert choose_features("multi", "linear", taps, widths, cv).taps == taps
    with pytest.raises(ValueError, match="'features' parameter"):
        choose_features("deep", "linear", taps, widths, cv)


def test_the_choice_never_looks_at_validation_labels(tmp_path: Path, tiny_weights: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "d", per_class=15)
    shuffled = tmp_path / "shuffled"
    for src in data.rglob("*.png"):  # same images; the val ones moved to the wrong class folders
        rel = src.relative_to(data)
        parts = list(rel.parts)
        if parts[0] == "val":
            classes = ["red", "green", "blue"]
            parts[1] = classes[(classes.index(parts[1]) + 1) % 3]
        dst = shuffled.joinpath(*parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    kw = dict(weights=tiny_weights, num_workers=0, precision="fp32")
    a = graft.Classifier(TINY_BACKBONE, **kw).fit(data)
    b = graft.Classifier(TINY_BACKBONE, **kw).fit(shuffled)
    assert b.metrics_["accuracy"] < a.metrics_["accuracy"]  # the validation labels did change
    assert a.head_info_["features"] == b.head_info_["features"]
    assert set(a.head_info_["features"]["cv_accuracy"]) == {"final", "multi"}


def test_multi_depth_models_save_load_and_export_with_the_same_features(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path
) -> None:
    from graft.export.onnx import export_onnx
    from graft.predict.open import open_predictor

    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32", features="multi")
    clf.fit(synthetic_dataset)
    assert len(clf.model_.taps) == 3 and clf.head_spec_.in_features == sum(
        tap_widths(clf.model_.backbone, clf.model_.taps)
    )
    model = clf.save(tmp_path / "model")
    assert json.loads((model / "config.json").read_text())["backbone"]["feature_taps"] == list(clf.model_.taps)
    paths = clf.val_paths_
    want = clf.predict_proba(paths)[0]
    np.testing.assert_allclose(graft.load(model).predict_proba(paths)[0], want, atol=1e-5)
    rep = export_onnx(model, tmp_path / "m.onnx")
    assert rep.max_abs_diff < 1e-3
    np.testing.assert_allclose(open_predictor(tmp_path / "m.onnx").predict_proba(paths)[0], want, atol=1e-4)


def test_a_model_file_with_bad_taps_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    from graft.exceptions import ModelFileError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["backbone"]["feature_taps"] = ["__import__('os')"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="feature_taps"):
        graft.load(bad)


def test_the_summary_names_the_chosen_features_and_both_cv_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from graft.cli.train import render_summary

    m = {
        "counts": {"train": {"a": 3}},
        "classes": ["a", "b"],
        "skipped": [],
        "kept_stage": "head",
        "stages": {"head": {"val_accuracy": 0.9}},
        "val_accuracy": 0.9,
        "timings": {},
        "train_seconds": 1.0,
        "features": {"mode": "auto", "taps": [5, 6, 7], "cv_accuracy": {"final": 0.9482, "multi": 0.9646}},
    }
    render_summary(tmp_path, m)
    assert "multi-depth (train CV 0.9646 vs 0.9482)" in capsys.readouterr().out


def test_head_seconds_count_the_fit_the_feature_choice_made(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chosen features' CV fit is reused as the head: its time is the head's, not ~0 s."""
    from graft.training.head import linear_probe

    real = linear_probe.fit_linear_head

    def slow(*a, **k):  # type: ignore[no-untyped-def]
        fit = real(*a, **k)
        fit.seconds += 5.0
        return fit

    monkeypatch.setattr(linear_probe, "fit_linear_head", slow)
    data = make_synthetic_dataset(tmp_path / "d", per_class=8)
    clf = graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32").fit(data)
    assert set(clf.head_info_["features"]["cv_accuracy"]) == {"final", "multi"}  # the reuse path ran
    assert 5.0 <= clf.timings_["head"] < 60.0


def test_side_by_side_cv_fits_equal_fits_made_alone() -> None:
    """The two cross-validated fits run on two threads; each must compute exactly what it would alone."""
    from types import SimpleNamespace

    from graft.training.head.feature_choice import choose_features_by_cv, column_view
    from graft.training.head.linear_probe import fit_linear_head

    rng = np.random.default_rng(0)
    widths, taps = [8, 12, 40], (1, 2)
    y = np.repeat(np.arange(3), 40)
    X = (rng.normal(size=(len(y), sum(widths))) + y[:, None] * 0.3).astype(np.float32)
    train = SimpleNamespace(X=X, y=y, groups=np.arange(len(y)))
    threads = torch.get_num_threads()
    choice, fits = choose_features_by_cv(train, taps, widths, "auto", "linear", 3, seed=0)
    assert torch.get_num_threads() == threads  # the process's thread count is restored
    assert set(fits) == {tuple(range(20, 60)), tuple(range(60))}
    for cols, fit in fits.items():
        alone = fit_linear_head(column_view(X, list(cols)), y, 3, seed=0, groups=train.groups)
        assert fit.C == alone.C and fit.cv_scores == alone.cv_scores
        np.testing.assert_array_equal(fit.weight, alone.weight)
        np.testing.assert_array_equal(fit.bias, alone.bias)
    assert choice.cv_accuracy == {
        k: max(fits[c].cv_scores.values()) for k, c in (("final", tuple(range(20, 60))), ("multi", tuple(range(60))))
    }
