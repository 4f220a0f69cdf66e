"""graft.metrics' NumPy metrics agree with scikit-learn's on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from graft.metrics import _top_k_accuracy, compute_metrics, confusion_matrix


@pytest.mark.parametrize("seed", range(6))
def test_compute_metrics_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    n = int(rng.integers(1, 60))
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 3
    if seed % 2:  # exact ties and near-certain rows (log loss clipping)
        logits = np.round(logits)
        logits[0] = [60.0] + [0.0] * (k - 1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = list(range(k))
    m = compute_metrics(y, probs, [f"c{i}" for i in labels])

    pred = probs.argmax(1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    for i in labels:
        pc = m["per_class"][f"c{i}"]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx((p[i], r[i], f[i], s[i]))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(probs, 1e-12, 1.0), labels=labels), rel=1e-9)
    top = m["top_k"]
    if top < k:
        assert m[f"top{top}_accuracy"] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=top, labels=labels))
    for kk in range(1, k):  # the helper behind it, at every k
        assert _top_k_accuracy(y, probs, kk) == pytest.approx(skm.top_k_accuracy_score(y, probs, k=kk, labels=labels))


def test_confusion_matrix_counts_labels_absent_from_both_arrays() -> None:
    cm = confusion_matrix(np.array([0, 0, 2]), np.array([0, 2, 2]), 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_stage_one_does_not_import_scikit_learn() -> None:
    """The reason the metrics are NumPy: a fresh interpreter that imports the training path and
    computes metrics never pays for ``import sklearn``."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "import graft.training.fit.stages, graft.run\n"
        "from graft.metrics import compute_metrics\n"
        "compute_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ['a', 'b'])\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
