"""Multi-label head: graft's against scikit-learn's one-vs-rest logistic regression, on the same features.

On bench/make_multilabel.py's sign_digits mosaics (1,600 train / 400 val by default; built
here when the folder has no labels.csv), the images are embedded once through graft's feature
cache (the default backbone, no augmented views), then two heads are fitted on the same rows:

- graft: ``graft.training.head.multilabel.fit_multilabel_head`` (per-label logistic regression,
  C by cross-validation, per-label temperature and F1 thresholds from out-of-fold probabilities);
- scikit-learn: ``OneVsRestClassifier(LogisticRegression(max_iter=2000))`` at 0.5 thresholds.

Printed side by side: macro and micro mAP, F1 micro and macro, subset accuracy, fit seconds.
``--budget 10m`` also runs ``graft train MANIFEST --budget 10m`` and prints its metrics.

    python bench/multilabel.py /tmp/sign_mosaics
    python bench/multilabel.py /tmp/sign_mosaics --budget 10m
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, table  # noqa: E402

KEYS = ("map_macro", "map_micro", "f1_micro", "f1_macro", "subset_accuracy")


def features(manifest: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str], float]:
    """((X, Y) train, (X, Y) val, labels, seconds) from graft's cached default-backbone features."""
    from graft.backbones.options import BackboneOptions
    from graft.features.dataset import embed_dataset, scan_splits

    t0 = time.perf_counter()
    splits = scan_splits(manifest)
    if not splits.multi_label:
        raise SystemExit(f"{manifest} is not a multi-label manifest")
    emb = embed_dataset(splits, BackboneOptions(), augment_views=0)
    return (emb.train.X, emb.train.y), (emb.val.X, emb.val.y), list(splits.classes), time.perf_counter() - t0


def graft_head(train: tuple[np.ndarray, np.ndarray], X_val: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | str:
    """(val probabilities, thresholds, fit seconds) of graft's multi-label head, or why it could not run."""
    try:
        from graft.training.head.multilabel import fit_multilabel_head
    except ImportError as e:
        return f"graft.training.head.multilabel.fit_multilabel_head is not available ({e})"
    import torch

    t0 = time.perf_counter()
    fit = fit_multilabel_head(train[0], train[1], seed=0)
    seconds = time.perf_counter() - t0
    weight, bias = fit.calibrated()  # the per-label temperatures folded in: what a saved model computes
    W = torch.as_tensor(weight).detach().cpu().double().numpy()
    b = torch.as_tensor(bias).detach().cpu().double().numpy()
    P = 1.0 / (1.0 + np.exp(-(X_val.astype(np.float64) @ W.T + b)))
    return P, np.asarray(fit.thresholds, np.float64), seconds


def sklearn_head(train: tuple[np.ndarray, np.ndarray], X_val: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(val probabilities, 0.5 thresholds, fit seconds) of one-vs-rest logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    t0 = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(train[0], train[1].astype(int))
    seconds = time.perf_counter() - t0
    P = clf.predict_proba(X_val)
    return P, np.full(P.shape[1], 0.5), seconds


def budget_run(manifest: Path, budget: str) -> dict:
    """``graft train MANIFEST --budget B`` in a temporary run folder; its metrics.json."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "graft", "train", str(manifest), "--out", str(out), "--budget", budget]
        cmd += ["--quiet", "--no-report"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        m = json.loads((out / "metrics.json").read_text())
        m["wall_seconds"] = time.perf_counter() - t0
        return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the mosaics folder (built there if it has no labels.csv)")
    ap.add_argument("--train", type=int, default=1600)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--budget", default=None, help="also run graft train MANIFEST --budget B (e.g. 10m)")
    args = ap.parse_args()
    from graft.metrics_multilabel import compute_multilabel_metrics

    manifest = args.data / "labels.csv"
    if not manifest.is_file():
        from make_multilabel import build

        build(args.data, args.train, args.val)
    train, (X_val, Y_val), classes, embed_s = features(manifest)
    print(f"# {machine_line()}")
    print(f"# {len(train[1])} train / {len(Y_val)} val images, {len(classes)} labels; embedding {embed_s:.1f} s")
    rows = []
    for name, fit in (("graft multi-label head", graft_head), ("sklearn OvR LogisticRegression, t=0.5", sklearn_head)):
        res = fit(train, X_val)
        if isinstance(res, str):
            print(res)
            continue
        P, t, seconds = res
        m = compute_multilabel_metrics(Y_val, P, classes, t)
        rows.append([name, *(f"{m[k]:.4f}" for k in KEYS), f"{seconds:.2f}"])
    if args.budget:
        m = budget_run(manifest, args.budget)
        vals = [m.get(k) for k in ("val_map", "val_map_micro", "val_f1_micro", "val_f1_macro", "val_subset_accuracy")]
        shown = ["-" if v is None else f"{v:.4f}" for v in vals]
        rows.append([f"graft train --budget {args.budget}", *shown, f"{m['wall_seconds']:.0f} (whole run)"])
    print(table(["head", "mAP macro", "mAP micro", "F1 micro", "F1 macro", "subset acc", "fit s"], rows))


if __name__ == "__main__":
    main()
