"""Pictures of explain results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers, CI, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from graft.explain.attack import AttackResult  # noqa: E402
from graft.explain.dream import DreamResult  # noqa: E402
from graft.explain.features import FeatureMaps  # noqa: E402
from graft.explain.gradcam import CamResult, overlay_heatmap  # noqa: E402

__all__ = ["save_figure", "gradcam_figure", "features_figure", "dream_figure", "attack_figure", "names_as_text"]


@contextmanager
def names_as_text() -> Iterator[None]:
    """Drawn text is text, never matplotlib maths: a class ``$\\foo$`` or ``price $5 and $6`` shows as written.

    A context manager and a decorator (for the functions that build figures, and around
    ``savefig``, where tick labels may be made); the report's figures use the same setting.
    """
    with plt.rc_context({"text.parse_math": False}):
        yield


@names_as_text()
def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save ``fig`` as PNG (parent folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _fmt_top(top_k: Sequence[tuple[str, float]], width: int = 28) -> str:
    return "\n".join(f"{lab[:width]}: {p:.3f}" for lab, p in top_k)


@names_as_text()
def gradcam_figure(results: Sequence[CamResult], titles: Sequence[str] | None = None) -> plt.Figure:
    """One column per image: the image (top), its Grad-CAM overlay and top-k predictions (bottom)."""
    n = max(1, len(results))
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 6.2), squeeze=False)
    for j, r in enumerate(results):
        axes[0, j].imshow(r.image)
        axes[0, j].set_title(titles[j] if titles else f"image {j + 1}", fontsize=9)
        axes[1, j].imshow(overlay_heatmap(r.image, r.cam))
        axes[1, j].set_title(f"Grad-CAM: {r.label[:24]}", fontsize=9)
        axes[1, j].text(
            0.5, -0.04, _fmt_top(r.top_k), transform=axes[1, j].transAxes, ha="center", va="top", fontsize=8
        )
    for ax in axes.ravel():
        ax.axis("off")
    if results:
        fig.suptitle(f"layer {results[0].layer}", fontsize=9, y=0.99)
    fig.tight_layout()
    return fig


@names_as_text()
def features_figure(fm: FeatureMaps, cols: int = 8) -> plt.Figure:
    """The input image beside a grid of the strongest feature maps (viridis, each scaled to its own range)."""
    k = len(fm.maps)
    cols = min(cols, k)
    rows = int(np.ceil(k / cols))
    fig = plt.figure(figsize=(2.0 + 1.3 * cols, max(2.4, 1.35 * rows + 0.6)))
    gs = fig.add_gridspec(rows, cols + 2, width_ratios=[1.0, 0.08] + [0.5] * cols)
    ax = fig.add_subplot(gs[:, 0])
    ax.imshow(fm.image)
    ax.set_title("input", fontsize=9)
    ax.axis("off")
    for i in range(k):
        a = fig.add_subplot(gs[i // cols, 2 + i % cols])
        a.imshow(fm.maps[i], cmap="viridis")
        a.set_title(f"ch {fm.channels[i]} ({fm.means[i]:.2f})", fontsize=7)
        a.axis("off")
    c, h, w = fm.shape
    fig.suptitle(f"{fm.layer}: {k} strongest of {c} channels ({h}x{w}), by mean activation", fontsize=10)
    return fig


@names_as_text()
def dream_figure(r: DreamResult) -> plt.Figure:
    """Starting noise and the optimised image, with the class probabilities."""
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    axes[0].imshow(r.start_image)
    axes[0].set_title(f"start (noise)\np({r.label[:22]}) = {r.start_probability:.3f}", fontsize=9)
    axes[1].imshow(r.image)
    axes[1].set_title(f"after {r.steps} steps\np({r.label[:22]}) = {r.probability:.3f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


@names_as_text()
def attack_figure(r: AttackResult, classes: Sequence[str], top_k: int = 3) -> plt.Figure:
    """Original, amplified perturbation and adversarial image side by side, with probabilities."""

    def top(p: np.ndarray) -> str:
        order = np.argsort(-p)[: min(top_k, len(p))]
        return "\n".join(f"{classes[i][:24]}: {p[i]:.3f}" for i in order)

    fig, axes = plt.subplots(1, 3, figsize=(9.0, 4.2))
    axes[0].imshow(r.original)
    axes[0].set_title("original", fontsize=10)
    axes[0].text(0.5, -0.04, top(r.probs_before), transform=axes[0].transAxes, ha="center", va="top", fontsize=8)
    axes[1].imshow(r.perturbation_image())
    axes[1].set_title(f"perturbation (amplified)\nL-inf {r.linf * 255:.0f}/255", fontsize=10)
    axes[2].imshow(r.adversarial)
    kind = f"target {classes[r.target_index][:20]}" if r.target_index is not None else "untargeted"
    verdict = "succeeded" if r.success else "failed"
    axes[2].set_title(f"adversarial ({kind}: {verdict})", fontsize=10)
    axes[2].text(0.5, -0.04, top(r.probs_after), transform=axes[2].transAxes, ha="center", va="top", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig
