"""The report's figures (matplotlib, Agg backend only: no display is ever needed)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report is written on headless machines too
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "names_as_text",
    "class_counts_figure",
    "image_sizes_figure",
    "cv_path_figure",
    "epoch_curves_figure",
    "stage_comparison_figure",
    "confusion_figure",
    "reliability_figure",
]

_SPLIT_COLOURS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


@contextmanager
def names_as_text() -> Iterator[None]:
    """Drawn text is text, never matplotlib maths: a class ``$\\foo$`` or ``price $5 and $6`` shows as written.

    A context manager and a decorator, for every function that builds a figure and around
    ``savefig``, where tick labels may be made. (:mod:`graft.explain.figures` applies the same
    setting to its figures; it cannot import the report, which sits above it.)
    """
    with plt.rc_context({"text.parse_math": False}):
        yield


@names_as_text()
def class_counts_figure(counts: dict[str, dict[str, int]], classes: Sequence[str]) -> plt.Figure:
    """Grouped bars: images per class for each split."""
    splits = list(counts)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5.0, min(16.0, 0.45 * n * max(1, len(splits)) + 2)), 3.2))
    width = 0.8 / max(1, len(splits))
    x = np.arange(n)
    for i, s in enumerate(splits):
        vals = [counts[s].get(c, 0) for c in classes]
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, vals, width, label=s, color=_SPLIT_COLOURS.get(s))
    ax.set_xticks(x)
    ax.set_xticklabels(
        [c[:18] for c in classes], rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8
    )
    ax.set_ylabel("images")
    ax.set_title("images per class and split")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


@names_as_text()
def image_sizes_figure(sizes: dict[str, list[list[int]]]) -> plt.Figure:
    """Scatter of image width x height per split, with the median marked."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for s, wh in sizes.items():
        if not wh:
            continue
        a = np.asarray(wh, dtype=float)
        ax.scatter(
            a[:, 0],
            a[:, 1],
            s=8,
            alpha=0.45,
            label=f"{s} (median {int(np.median(a[:, 0]))}x{int(np.median(a[:, 1]))})",
            color=_SPLIT_COLOURS.get(s),
        )
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("image sizes")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@names_as_text()
def cv_path_figure(records: Sequence[dict[str, Any]], chosen_c: float | None) -> plt.Figure:
    """Linear head: cross-validated accuracy and log-loss against C, the chosen C marked."""
    recs = sorted(records, key=lambda r: r["C"])
    c = np.array([r["C"] for r in recs], dtype=float)
    fig, ax1 = plt.subplots(figsize=(5.6, 3.4))
    ax1.semilogx(c, [r["cv_acc"] for r in recs], "o-", color="#4C72B0", label="CV accuracy")
    ax1.set_xlabel("C (inverse L2 strength)")
    ax1.set_ylabel("CV accuracy", color="#4C72B0")
    ax2 = ax1.twinx()
    ax2.semilogx(c, [r["cv_loss"] for r in recs], "s--", color="#C44E52", label="CV log-loss")
    ax2.set_ylabel("CV log-loss", color="#C44E52")
    if chosen_c is not None:
        ax1.axvline(chosen_c, color="k", ls=":", lw=1.2)
        ax1.annotate(
            f"chosen C={chosen_c:g}",
            (chosen_c, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax1.set_title("linear head: cross-validation path")
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@names_as_text()
def epoch_curves_figure(records: Sequence[dict[str, Any]], title: str, max_epochs: int | None = None) -> plt.Figure:
    """Loss and accuracy per epoch, train and val, best epoch (the one kept) and early stop marked."""
    ep = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for ax, key, name in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        for split, style in (("train", "o-"), ("val", "s-")):
            ys = [r.get(f"{split}_{key}") for r in records]
            if any(y is not None for y in ys):
                ax.plot(
                    ep, [np.nan if y is None else y for y in ys], style, ms=4, label=split, color=_SPLIT_COLOURS[split]
                )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    best = [e for e, r in zip(ep, records) if r.get("best")]
    if best:
        for ax in axes:
            ax.axvline(best[-1], color="k", ls=":", lw=1.2, label=f"best (kept): epoch {best[-1]}")
    if max_epochs and ep and max(ep) < max_epochs:
        for ax in axes:
            ax.axvline(max(ep), color="#8172B2", ls="--", lw=1.0, label=f"early stop at {max(ep)}/{max_epochs}")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@names_as_text()
def stage_comparison_figure(stages: dict[str, float]) -> plt.Figure:
    """Validation accuracy per stage (transfer learning vs the from-scratch baseline)."""
    names = list(stages)
    vals = [stages[n] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.0))
    colours = ["#C44E52" if "scratch" in n else "#4C72B0" for n in names]
    bars = ax.bar(names, vals, color=colours)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("val accuracy")
    ax.set_title("transfer learning vs training from scratch")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


@names_as_text()
def confusion_figure(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> plt.Figure:
    """Confusion matrix as counts (left) and normalised by true class (right)."""
    m = np.asarray(cm, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(classes)
    side = min(7.0, max(3.2, 0.35 * n + 1.8))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.0, side))
    annotate = n <= 20
    for ax, data, title, fmt in (
        (axes[0], m, "counts", "{:.0f}"),
        (axes[1], norm, "normalised (rows sum to 1)", "{:.2f}"),
    ):
        im = ax.imshow(data, cmap="Blues", vmin=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = np.arange(n)
        labels = [c[:14] for c in classes] if n <= 40 else []
        ax.set_xticks(ticks if labels else [])
        ax.set_yticks(ticks if labels else [])
        if labels:
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
            ax.set_yticklabels(labels, fontsize=7)
        if annotate:
            thresh = data.max() / 2 if data.max() > 0 else 1
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        fmt.format(data[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if data[i, j] > thresh else "black",
                    )
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


@names_as_text()
def reliability_figure(bins: Sequence[dict[str, float]], ece: float, n_bins: int = 15) -> plt.Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with ECE."""
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.6, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    for b in bins:
        ax.bar(
            b["lo"],
            b["accuracy"],
            width=b["hi"] - b["lo"],
            align="edge",
            color="#4C72B0",
            edgecolor="white",
            alpha=0.85,
        )
        ax.bar(
            b["lo"],
            b["confidence"] - b["accuracy"],
            bottom=b["accuracy"],
            width=b["hi"] - b["lo"],
            align="edge",
            color="#C44E52",
            alpha=0.35,
            hatch="//",
            edgecolor="#C44E52",
        )
        axh.bar(b["lo"], b["count"], width=b["hi"] - b["lo"], align="edge", color="#8C8C8C")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar([0], [0], width=width, color="#4C72B0", label="accuracy")
    ax.bar([0], [0], width=width, color="#C44E52", alpha=0.35, hatch="//", label="gap to confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram (ECE {ece:.3f})")
    ax.legend(fontsize=7, loc="upper left")
    axh.set_xlabel("confidence (top-1 probability)")
    axh.set_ylabel("images")
    fig.tight_layout()
    return fig
