"""The Classifier facade end to end on the tiny backbone and synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import TINY_BACKBONE, make_synthetic_dataset
from graft.exceptions import DataError, ModelFileError, NotFittedError


def _clf(tiny_weights: Path, **kw) -> graft.Classifier:
    return graft.Classifier(TINY_BACKBONE, weights=tiny_weights, num_workers=0, precision="fp32", **kw)


def test_fit_learns_and_follows_sklearn_conventions(synthetic_dataset: Path, tiny_weights: Path) -> None:
    clf = _clf(tiny_weights)
    assert not hasattr(clf, "classes_")
    assert clf.fit(synthetic_dataset) is clf
    assert clf.classes_ == ["blue", "green", "red"]
    assert clf.metrics_["accuracy"] >= 0.8  # colours are easy even for random conv features
    assert clf.metrics_["n"] == 12
    assert clf.head_info_["C"] > 0  # chosen by cross-validation
    assert clf.get_params()["backbone"] == TINY_BACKBONE


def test_unfitted_raises_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        graft.Classifier().predict([tmp_path / "x.png"])


def test_bad_params_raise_value_error(synthetic_dataset: Path, tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="'head' parameter of Classifier must be one of"):
        _clf(tiny_weights, head="conv").fit(synthetic_dataset)
    with pytest.raises(ValueError, match="class_weight"):
        _clf(tiny_weights, class_weight="auto").fit(synthetic_dataset)


def test_save_load_roundtrip_predicts_identically(tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path) -> None:
    clf = _clf(tiny_weights).fit(synthetic_dataset)
    files = sorted((synthetic_dataset / "val").rglob("*.png"))
    before = clf.predict(files, top_k=2)
    out = clf.save(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == clf.classes_
    assert cfg["preprocessing"]["input_size"] == [160, 160]  # "auto" keeps native for 48 px images
    assert cfg["backbone"]["architecture"] == TINY_BACKBONE and cfg["backbone"]["weights_sha256"]
    assert cfg["head"]["type"] == "linear"
    loaded = graft.load(out, device="cpu")
    after = loaded.predict(files, top_k=2)
    assert [r["label"] for r in before] == [r["label"] for r in after]
    np.testing.assert_allclose([r["probability"] for r in before], [r["probability"] for r in after], atol=1e-4)
    assert all(len(r["top_k"]) == 2 for r in after)


def test_predict_reports_unreadable_files_and_still_predicts(
    tmp_path: Path, tiny_model_dir: Path, synthetic_dataset: Path
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted((synthetic_dataset / "val" / "red").glob("*.png"))[0]
    res = graft.load(tiny_model_dir).predict([good, bad, tmp_path / "missing.png"])
    by_path = {Path(r["path"]).name: r for r in res}
    assert by_path[good.name]["label"] == "red"
    assert "error" in by_path["broken.jpg"] and "label" not in by_path["broken.jpg"]
    assert "error" in by_path["missing.png"]


def test_evaluate_uses_val_split_and_reports_metrics(tiny_model_dir: Path, synthetic_dataset: Path) -> None:
    m = graft.load(tiny_model_dir).evaluate(synthetic_dataset)
    assert m["n"] == 12
    assert set(m["per_class"]) == {"blue", "green", "red"}
    assert np.array(m["confusion_matrix"]).sum() == 12
    assert 0.0 <= m["ece"] <= 1.0


def test_auto_split_and_skips_corrupt_image(tmp_path: Path, tiny_weights: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "flat", per_class=10, split=False)
    (root / "red" / "truncated.png").write_bytes((root / "red" / "red_00.png").read_bytes()[:60])
    (root / "README.md").write_text("not an image")
    clf = _clf(tiny_weights).fit(root)
    assert clf.data_.layout == "auto-split"
    assert sum(len(v) for v in clf.data_.splits.values()) == 30  # the broken file is not counted
    assert any("truncated.png" in s.path for s in clf.data_.skipped)
    with pytest.raises(DataError, match="truncated.png"):
        _clf(tiny_weights, strict=True).fit(root)


def test_feature_cache_reused_and_invalidated_per_file(tmp_path: Path, tiny_weights: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", per_class=6)
    cache = tmp_path / "cache"
    a = _clf(tiny_weights, cache_dir=cache, augment_views=0).fit(root)
    assert a.timings_["embed"] > 0
    from graft.features import FeatureCache

    (key_dir,) = list(cache.iterdir())
    n_rows = len(FeatureCache(key_dir, _dim(key_dir)))
    assert n_rows == 18
    # Touching one image re-embeds only that one; other heads reuse everything.
    img = sorted((root / "train" / "red").glob("*.png"))[0]
    img.write_bytes(img.read_bytes())
    import os

    os.utime(img, ns=(1, 1))
    _clf(tiny_weights, cache_dir=cache, head="mlp", augment_views=0).fit(root)
    assert len(FeatureCache(key_dir, _dim(key_dir))) == 19


def _dim(key_dir: Path) -> int:
    return int(json.loads((key_dir / "meta.json").read_text())["dim"])


@pytest.mark.parametrize("head", ["mlp", "flatten"])
def test_other_heads_train(synthetic_dataset: Path, tiny_weights: Path, head: str) -> None:
    clf = _clf(tiny_weights, head=head).fit(synthetic_dataset)
    assert clf.metrics_["accuracy"] >= 0.6
    assert clf.history_["head"] and "val_loss" in clf.history_["head"][0]


def test_auto_views_add_the_mirror_on_small_sets(synthetic_dataset: Path, tiny_weights: Path) -> None:
    from graft.transforms.train import AUTO_MIRROR_MAX_TRAIN, resolve_augment_views

    clf = _clf(tiny_weights).fit(synthetic_dataset)
    assert clf.augment_views_ == 1
    assert resolve_augment_views("auto", AUTO_MIRROR_MAX_TRAIN) == 0 and resolve_augment_views(3, 10) == 3
    with pytest.raises(ValueError, match="augment_views"):
        _clf(tiny_weights, augment_views=-1).fit(synthetic_dataset)


def _linear(clf: graft.Classifier) -> tuple[np.ndarray, np.ndarray]:
    lin = clf.model_.head[-1]
    return lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()


def test_augment_views_embed_and_train_on_extra_views(
    tmp_path: Path, synthetic_dataset: Path, tiny_weights: Path
) -> None:
    from graft.features import FeatureCache

    cache = tmp_path / "cache"
    clf = _clf(tiny_weights, augment_views=2, cache_dir=cache).fit(synthetic_dataset)
    assert clf.augment_views_ == 2 and clf.metrics_["accuracy"] >= 0.8
    (key_dir,) = list(cache.iterdir())
    # 24 training images x (1 + 2) views, 12 validation images x 1 view.
    assert len(FeatureCache(key_dir, _dim(key_dir))) == 24 * 3 + 12
    plain = _clf(tiny_weights, augment_views=0, cache_dir=cache).fit(synthetic_dataset)
    assert plain.augment_views_ == 0
    assert len(FeatureCache(key_dir, _dim(key_dir))) == 24 * 3 + 12  # view 0 reused, nothing new
    # The extra rows reached the head: same data, same C, another fit.
    assert np.abs(_linear(clf)[0] - _linear(plain)[0]).max() > 1e-3


def test_balanced_class_weight_favours_the_minority_class(tmp_path: Path, tiny_weights: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "imbalanced")
    for f in sorted((root / "train" / "blue").glob("*.png"))[2:]:  # blue: 2 training images, others 8
        f.unlink()
    plain = _clf(tiny_weights, augment_views=0).fit(root)
    balanced = _clf(tiny_weights, augment_views=0, class_weight="balanced").fit(root)
    blue = balanced.classes_.index("blue")
    # The saved layer is divided by the calibration temperature: compare the fits before it.
    t0, t1 = plain.head_info_["temperature"], balanced.head_info_["temperature"]
    (w0, b0), (w1, b1) = (x * t0 for x in _linear(plain)), (x * t1 for x in _linear(balanced))
    assert np.abs(w1 - w0).max() > 1e-3
    # Up-weighting blue's loss raises its bias relative to the others (softmax ignores a common
    # shift) and its probability on the blue validation images (measured: -0.41 -> -0.09).
    assert b1[blue] - b1.mean() > b0[blue] - b0.mean() + 0.1
    is_blue = balanced.val_labels_ == blue

    def raw(p: np.ndarray, t: float) -> np.ndarray:  # softmax(z * T) = p ** T, renormalised
        q = np.power(np.clip(p, 1e-300, 1), t)
        return q / q.sum(1, keepdims=True)

    assert raw(balanced.val_probs_, t1)[is_blue, blue].mean() > raw(plain.val_probs_, t0)[is_blue, blue].mean()


def test_load_rejects_non_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="config.json"):
        graft.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        graft.load(tmp_path)
