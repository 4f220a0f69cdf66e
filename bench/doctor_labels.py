"""How well `graft doctor` finds planted label flips: graft's ranking beside cleanlab's, on the same probabilities.

For each dataset the images are embedded once, exactly as `graft doctor` embeds them (same
scan, preprocessing and feature cache, so a second run costs no embedding). Then, for each of
``--plantings`` random seeds, ``--rate`` of the training images get another class's label;
the out-of-fold probabilities are computed as the doctor computes them
(:func:`graft.doctor.labels.out_of_fold_probs`, on the noisy labels), and every method ranks
the same probabilities:

* ``graft``: what `graft doctor` reports (:func:`graft.doctor.labels.find_label_errors`: cleanlab's
  ``find_label_issues(filter_by="low_self_confidence")``, chosen by this benchmark);
* ``graft 3e172a7``: the rule graft used before (flag where another class clears its per-class
  threshold and beats the given label), kept here for the comparison;
* ``cleanlab:<filter_by>``: ``cleanlab.filter.find_label_issues(labels, pred_probs, filter_by=...)``
  (``prune_by_noise_rate`` is cleanlab's default).

Precision and recall are against the planted flips (every image is checked, validation ones
too, as the doctor does); the table gives their mean and standard deviation over the plantings.

    python bench/doctor_labels.py                                  # hymenoptera and sign_digits, 5 plantings
    python bench/doctor_labels.py sign_digits --plantings 10 --rate 0.05
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from _common import DATASETS, git_rev, machine_line, table

NAMES = ["hymenoptera", "sign_digits"]
FILTERS = ["prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "low_normalized_margin"]


def former_rule(probs: np.ndarray, labels: np.ndarray) -> set[int]:
    """graft's rule up to 3e172a7: another class ``j`` with ``p_j >= t_j`` (its mean self-confidence), ``p_j > p_y``."""
    n, k = probs.shape
    t = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(k)])
    other = np.where(probs >= t[None, :], probs, -1.0)
    other[np.arange(n), labels] = -1.0
    best = other.max(1)
    return {int(i) for i in np.flatnonzero((best >= 0) & (best > probs[np.arange(n), labels]))}


def features(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(X, labels, is_train, n_classes) of every image, embedded as `graft doctor DATASET` embeds them."""
    from graft.backbones.options import BackboneOptions
    from graft.config import resolve_device
    from graft.data.options import SplitOptions
    from graft.doctor.core import _corpus, _embed
    from graft.features.dataset import scan_splits
    from graft.features.options import EmbedOptions
    from graft.progress import NullProgress

    splits = scan_splits(DATASETS / name, SplitOptions(seed=seed))
    corpus = _corpus(splits)
    emb = _embed(splits, corpus, BackboneOptions(), seed, EmbedOptions(device=resolve_device("auto")), NullProgress())
    y = np.array([corpus.records[i].label for i in emb.rows], np.int64)
    train = np.array([corpus.split_of[i] == "train" for i in emb.rows], bool)
    return emb.X, y, train, len(corpus.classes)


def plant(y: np.ndarray, train: np.ndarray, n_classes: int, rate: float, seed: int) -> tuple[np.ndarray, set[int]]:
    """Labels with ``rate`` of the training rows moved to another class (uniformly drawn), and those rows."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(train)
    flip = rng.choice(rows, round(rate * len(rows)), replace=False)
    noisy = y.copy()
    for i in flip:
        noisy[i] = rng.choice([c for c in range(n_classes) if c != y[i]])
    return noisy, {int(i) for i in flip}


def methods(filters: list[str]) -> dict[str, Callable[[np.ndarray, np.ndarray], set[int]]]:
    """Name -> (probs, labels) -> flagged rows."""
    from cleanlab.filter import find_label_issues

    from graft.doctor import labels as dl

    out: dict[str, Callable[[np.ndarray, np.ndarray], set[int]]] = {
        "graft": lambda p, y: {c.row for c in dl.find_label_errors(p, y)},
        "graft 3e172a7": former_rule,
    }
    for f in filters:
        out[f"cleanlab:{f}"] = lambda p, y, f=f: {
            int(i) for i in np.flatnonzero(find_label_issues(labels=y, pred_probs=p, filter_by=f, n_jobs=1))
        }
    return out


def run(name: str, plantings: int, rate: float, filters: list[str]) -> list[list[object]]:
    from graft.doctor.labels import out_of_fold_probs

    t0 = time.perf_counter()
    X, y, train, k = features(name)
    print(f"{name}: {len(y)} images ({int(train.sum())} train), {k} classes, features {time.perf_counter() - t0:.0f} s")
    scores: dict[str, list[tuple[float, float]]] = {}
    for seed in range(plantings):
        t0 = time.perf_counter()
        noisy, flipped = plant(y, train, k, rate, seed)
        rows, probs = out_of_fold_probs(X, noisy, k, seed=0)  # the doctor's seed; the planting varies
        given = noisy[rows]
        for mname, find in methods(filters).items():
            found = {int(rows[i]) for i in find(probs, given)}
            hits = len(found & flipped)
            scores.setdefault(mname, []).append((hits / max(len(found), 1), hits / max(len(flipped), 1)))
        line = ", ".join(f"{m} {p:.2f}/{r:.2f}" for m, s in scores.items() for p, r in [s[-1]])
        print(f"  planting {seed}: {len(flipped)} flips, {time.perf_counter() - t0:.0f} s; precision/recall {line}")
    out = []
    for mname, s in scores.items():
        p, r = np.array(s).T
        out.append(
            [
                name,
                mname,
                f"{p.mean():.3f} ± {p.std():.3f}",
                f"{r.mean():.3f} ± {r.std():.3f}",
                f"{p.min():.2f}-{p.max():.2f}",
                f"{r.min():.2f}-{r.max():.2f}",
            ]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=NAMES)
    ap.add_argument("--plantings", type=int, default=5, help="random plantings per dataset (seeds 0..N-1)")
    ap.add_argument("--rate", type=float, default=0.05, help="share of training labels flipped")
    ap.add_argument("--filters", default=",".join(FILTERS), help="cleanlab filter_by values to compare")
    a = ap.parse_args()
    print(f"doctor label errors, {a.rate:.0%} flips, {a.plantings} plantings; {machine_line()}; graft {git_rev()}")
    rows = []
    for name in a.datasets:
        rows += run(name, a.plantings, a.rate, [f for f in a.filters.split(",") if f])
    heads = ["dataset", "method", "precision (mean ± sd)", "recall (mean ± sd)", "precision range", "recall range"]
    print(table(heads, rows))


if __name__ == "__main__":
    main()
