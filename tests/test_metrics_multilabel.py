"""Multi-label metrics against scikit-learn's, on random problems with ties and absent labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from graft.metrics_multilabel import average_precision, compute_multilabel_metrics, f1_thresholds


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    Y = rng.random((80, 6)) < rng.uniform(0.05, 0.6, 6)
    Y[:, 5] = False  # a label absent from the validation images
    P = np.round(np.clip(Y * 0.4 + rng.random((80, 6)) * 0.6, 0, 1), 1)  # rounded: many exact ties
    t = rng.uniform(0.3, 0.7, 6)
    m = compute_multilabel_metrics(Y, P, [f"c{i}" for i in range(6)], t)
    pred = P >= t
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(Y, pred))
    assert m["f1_micro"] == pytest.approx(skm.f1_score(Y, pred, average="micro", zero_division=0))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(Y, pred, average="macro", zero_division=0))
    present = Y.any(0)
    assert m["map_macro"] == pytest.approx(
        np.mean([skm.average_precision_score(Y[:, j], P[:, j]) for j in np.flatnonzero(present)])
    )
    assert m["map_micro"] == pytest.approx(skm.average_precision_score(Y.ravel(), P.ravel()))
    assert m["log_loss"] == pytest.approx(skm.log_loss(Y.ravel(), np.clip(P.ravel(), 1e-12, 1 - 1e-12), labels=[0, 1]))
    assert m["per_class"]["c5"]["ap"] is None and m["per_class"]["c0"]["support"] == int(Y[:, 0].sum())


def test_f1_thresholds_maximise_each_labels_f1() -> None:
    rng = np.random.default_rng(0)
    Y = rng.random((200, 3)) < 0.3
    P = np.clip(Y * 0.5 + rng.random((200, 3)) * 0.6, 0, 1)
    t = f1_thresholds(Y, P)
    for j in range(3):
        best = max(skm.f1_score(Y[:, j], P[:, j] >= c) for c in np.unique(P[:, j]))
        assert skm.f1_score(Y[:, j], P[:, j] >= t[j]) == pytest.approx(best)
    assert f1_thresholds(np.zeros((4, 1), bool), np.full((4, 1), 0.2))[0] == 0.5
    assert average_precision(np.array([0, 1, 1]), np.array([0.9, 0.9, 0.1])) == pytest.approx(
        skm.average_precision_score([0, 1, 1], [0.9, 0.9, 0.1])
    )
