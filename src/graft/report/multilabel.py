"""The report of a multi-label run: its metrics, a per-label table, precision-recall curves, label co-occurrence.

A multi-label run's ``val_predictions.json`` holds per-label probabilities (``probs``) and a 0/1
label matrix (``labels``); its thresholds are in ``metrics.json`` (else the model's config). The
single-label sections that have no meaning here (confusion matrix, top-k accuracy, the top-1
reliability diagram, top losses by -log p(true class)) are left out by :func:`graft.report.inputs.val_arrays`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graft.report import html as H
from graft.report.inputs import Figures, RunFiles

__all__ = ["MultiLabelArrays", "multilabel_arrays", "multilabel_cards", "multilabel_section", "pr_curves_figure"]

MAX_PR_PANELS = 30  # labels drawn as precision-recall panels (the most frequent ones)
MAX_COOCCURRENCE_MATRIX = 20  # up to this many labels the co-occurrence table is the whole matrix


@dataclass(frozen=True)
class MultiLabelArrays:
    """Validation truth ``Y`` (n, labels) 0/1, probabilities ``P`` (n, labels), label names and thresholds."""

    Y: np.ndarray
    P: np.ndarray
    classes: list[str]
    thresholds: np.ndarray


def multilabel_arrays(rf: RunFiles) -> MultiLabelArrays | None:
    """The multi-label validation predictions, or None for a single-label run (or none recorded)."""
    if not rf.is_multi_label():
        return None
    p = rf.preds
    if not p or not p.get("labels"):
        return None
    Y = np.asarray(p["labels"], np.int64)
    P = np.asarray(p["probs"], np.float64)
    classes = [str(c) for c in p.get("classes") or rf.metrics.get("classes") or []]
    if Y.ndim != 2 or Y.shape != P.shape or Y.shape[1] != len(classes):
        raise ValueError(
            f"val_predictions.json: labels {Y.shape} and probs {P.shape} do not match {len(classes)} labels"
        )
    t = rf.metrics.get("thresholds") or rf.model_config.get("thresholds") or [0.5] * len(classes)
    thresholds = np.asarray(t, np.float64)
    if thresholds.shape != (len(classes),):
        thresholds = np.full(len(classes), 0.5)
    return MultiLabelArrays(Y, P, classes, thresholds)


def _metrics(rf: RunFiles) -> dict[str, Any] | None:
    """compute_multilabel_metrics of the validation predictions (cached on ``rf``)."""
    if not hasattr(rf, "_ml_metrics"):
        from graft.metrics_multilabel import compute_multilabel_metrics

        a = multilabel_arrays(rf)
        rf._ml_metrics = compute_multilabel_metrics(a.Y, a.P, a.classes, a.thresholds.tolist()) if a else None  # type: ignore[attr-defined]
    return rf._ml_metrics  # type: ignore[attr-defined]


def multilabel_cards(rf: RunFiles) -> list[tuple[str, str]]:
    """The header cards of a multi-label run: mAP, F1 micro, subset accuracy (metrics.json, else recomputed)."""
    m = rf.metrics
    got = _metrics(rf) or {}
    figures = [
        ("val mAP", m.get("val_map", got.get("map_macro"))),
        ("F1 micro", m.get("val_f1_micro", got.get("f1_micro"))),
        ("subset accuracy", m.get("val_subset_accuracy", m.get("val_accuracy", got.get("subset_accuracy")))),
    ]
    return [(name, f"{float(v):.4f}") for name, v in figures if v is not None]


def multilabel_section(rf: RunFiles, figs: Figures) -> str | None:
    """Summary metrics, the per-label table, precision-recall curves and the co-occurrence table."""
    a = multilabel_arrays(rf)
    m = _metrics(rf)
    if a is None or m is None:
        return None
    out = [
        H.note(
            f"{m['n']} validation images, {len(a.classes)} labels, predicted by the kept model "
            f"({rf.metrics.get('kept_stage', '?')}). A label is predicted when its probability reaches its "
            "threshold, chosen per label to maximise F1 on the training images' out-of-fold probabilities."
        ),
        H.kv_table(
            [
                ("mAP (macro: mean of the labels' AP)", m["map_macro"]),
                ("mAP (micro: all image-label pairs)", m["map_micro"]),
                ("F1 micro", m["f1_micro"]),
                ("F1 macro", m["f1_macro"]),
                ("subset accuracy (every label right)", m["subset_accuracy"]),
                ("Hamming loss", m["hamming_loss"]),
                ("mean binary cross-entropy", m["log_loss"]),
            ]
        ),
        "<h3>Per label</h3>",
        H.table(
            ["label", "threshold", "precision", "recall", "F1", "AP", "support"],
            [
                [c, float(t), pc["precision"], pc["recall"], pc["f1"], pc["ap"], int(pc["support"])]
                for (c, pc), t in zip(m["per_class"].items(), a.thresholds)
            ],
        ),
        "<h3>Precision-recall curves</h3>",
        figs.add("pr_curves", pr_curves_figure(a), "precision-recall curve per label"),
    ]
    if len(a.classes) > MAX_PR_PANELS:
        out.append(H.note(f"The {MAX_PR_PANELS} labels with the most validation images are drawn."))
    out += ["<h3>Labels that occur together (validation truth)</h3>", cooccurrence_html(a.Y, a.classes)]
    return "".join(out)


def cooccurrence_html(Y: np.ndarray, classes: list[str]) -> str:
    """Images carrying both labels: the whole matrix (diagonal: images with the label), or the top pairs."""
    Yi = np.asarray(Y, np.int64)
    co = Yi.T @ Yi
    k = len(classes)
    sizes = np.bincount(Yi.sum(1), minlength=1)
    spread = ", ".join(f"{n} label{'s' * (n != 1)}: {int(c)}" for n, c in enumerate(sizes) if c)
    text = H.note(f"Images per number of labels: {spread}.")
    if k <= MAX_COOCCURRENCE_MATRIX:
        rows = [[classes[i]] + [int(co[i, j]) for j in range(k)] for i in range(k)]
        return text + H.table(["label"] + classes, rows) + H.note("Diagonal: images with the label.")
    pairs = sorted(((int(co[i, j]), i, j) for i in range(k) for j in range(i + 1, k) if co[i, j]), reverse=True)
    rows2 = [[classes[i], classes[j], n] for n, i, j in pairs[:30]]
    return text + H.table(["label", "label", "images with both"], rows2)


def _pr_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, from the highest down."""
    order = np.argsort(-p, kind="mergesort")
    s, t = p[order], y[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    return np.r_[0.0, tp / max(int(t.sum()), 1)], np.r_[1.0, tp / (last + 1)]


def pr_curves_figure(a: MultiLabelArrays) -> Any:
    """One small precision-recall panel per label (AP in the title), its threshold's operating point marked."""
    import matplotlib.pyplot as plt

    from graft.report.plots import names_as_text

    support = a.Y.sum(0)
    labels = sorted(np.argsort(-support, kind="stable")[:MAX_PR_PANELS].tolist())
    cols = min(5, len(labels))
    rows = -(-len(labels) // cols)
    with names_as_text():
        fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.2 * rows), squeeze=False, sharex=True, sharey=True)
        for ax in axes.flat[len(labels) :]:
            ax.axis("off")
        for ax, j in zip(axes.flat, labels):
            y, p = a.Y[:, j], a.P[:, j]
            if y.any():
                from graft.metrics_multilabel import average_precision

                r, pr = _pr_points(y, p)
                ax.step(r, pr, where="post", color="#4C72B0", lw=1.2)
                pred = p >= a.thresholds[j]
                tp = int((pred & (y > 0)).sum())
                ax.plot(tp / y.sum(), tp / max(int(pred.sum()), 1), "o", color="#C44E52", ms=4)
                title = f"{a.classes[j][:16]} (AP {average_precision(y, p):.2f})"
            else:
                title = f"{a.classes[j][:16]} (no positives)"
            ax.set_title(title, fontsize=8)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("recall", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("precision", fontsize=8)
        fig.suptitle("precision-recall per label (dot: at the label's threshold)", fontsize=9)
        fig.tight_layout()
    return fig
