"""The labelling loop, simulated: graft suggest vs random vs plain uncertainty, and --unlabeled vs labelled-only.

For each shared dataset (graft's own Lite0 features, embedded once through the feature cache;
flowers and sign_digits get graft's seeded 80/20 split), a simulated user starts from
``--start`` labels per class, then labels ``--batch`` more images per round (default: a page,
1% of the training images, at least two per class and 5), chosen by

* ``suggest``: ``graft suggest``'s ranking (:func:`graft.suggest.rank.rank_with_model`: coverage of
  uncovered clusters blended with weighted k-means over the most uncertain images, by the head's
  out-of-fold skill) on the temperature-calibrated head of the round; ``suggest_cold`` the same
  from ``graft suggest FOLDER``'s cold-start batch instead of random labels per class,
* ``margin``: the smallest margins (plain uncertainty),
* ``random``: a seeded random draw,

refitting graft's linear head (C by cross-validation, as ``graft train``) after each round, over
``--seeds`` seeds. It prints validation accuracy against labels for each strategy and the labels
each needs to come within one point of the accuracy with every training label (mean over seeds).
Then ``--unlabeled`` at 5%, 10% and 25% labels (stratified, per seed) against labelled-only,
the rest of the training images being the unlabelled pool.

    python bench/active_learning.py [--datasets a,b] [--seeds 3] [--json out.json] [--png docs/images/active_learning.png]
    python bench/active_learning.py --from-json a.json,b.json --png ...   # several runs' results, one table and figure
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, machine_line, table  # noqa: E402

NAMES = ("hymenoptera", "cats_dogs_filtered", "flowers_kaggle_128", "sign_digits")
STRATEGIES = ("suggest", "margin", "random", "suggest_cold")


def features(name: str, cache: Path) -> dict[str, np.ndarray]:
    """Train and validation features of ``name`` (graft's embedding, no augmented views), kept in ``cache``."""
    path = cache / f"{name}.npz"
    if not path.exists():
        from graft.backbones.options import BackboneOptions
        from graft.features.dataset import embed_dataset, scan_splits

        emb = embed_dataset(scan_splits(DATASETS / name), BackboneOptions(), augment_views=0)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, X=emb.train.X, y=emb.train.y, Xv=emb.val.X, yv=emb.val.y)
    return dict(np.load(path))


def head(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    """graft's linear head (C by CV where every class has two images), and its temperature."""
    from graft.curve.points import FEW_SHOT_C
    from graft.training.head.calibration import fit_temperature
    from graft.training.head.linear_probe import fit_linear_head

    counts = np.bincount(y, minlength=n_classes)
    C = FEW_SHOT_C if counts.min() < 2 else None
    fit = fit_linear_head(X, y, n_classes, C=C, seed=seed)
    T = 1.0 if fit.oof_logits is None else fit_temperature(fit.oof_logits, fit.oof_labels)
    return fit, T


def _probs(fit, T: float, X: np.ndarray) -> np.ndarray:
    z = fit.logits(X) / T
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def _start(y: np.ndarray, per_class: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for c in np.unique(y) for i in rng.permutation(np.flatnonzero(y == c))[:per_class]]


def _oof_trust(fit, k: int) -> float:
    """The head's chance-corrected out-of-fold accuracy (what ``graft suggest`` reads from a model)."""
    from graft.suggest.rank import skill

    if fit.oof_logits is None:
        return skill(None, k)
    return skill(float((fit.oof_logits.argmax(1) == fit.oof_labels).mean()), k, len(fit.oof_labels))


def simulate(
    d: dict[str, np.ndarray], strategy: str, seed: int, start: int, batch: int, rounds: int
) -> list[tuple[int, float]]:
    """(labels, val accuracy) after the start and after each round.

    ``suggest_cold`` is ``suggest`` starting from ``graft suggest FOLDER``'s cold-start batch (as
    many images as ``start`` per class, chosen without labels) instead of ``start`` random labels
    per class: the README's loop.
    """
    from graft.suggest.rank import cold_start, rank_with_model

    X, y, Xv, yv = d["X"], d["y"], d["Xv"], d["yv"]
    k = int(max(y.max(), yv.max()) + 1)
    if strategy == "suggest_cold":
        labelled = [p.row for p in cold_start(X, start * k, seed)]
    else:
        labelled = _start(y, start, np.random.default_rng(seed))
    name = {"suggest": "diverse", "suggest_cold": "diverse", "margin": "margin", "random": "random"}[strategy]
    curve = []
    for r in range(rounds + 1):
        fit, T = head(X[labelled], y[labelled], k, seed)
        curve.append((len(labelled), float((fit.logits(Xv).argmax(1) == yv).mean())))
        rest = np.setdiff1d(np.arange(len(y)), labelled)
        if r == rounds or len(rest) == 0:
            break
        n = min(batch, len(rest))
        trust = _oof_trust(fit, k)
        picks = rank_with_model(X[rest], _probs(fit, T, X[rest]), None, n, name, seed + r, X[labelled], trust)
        labelled += [int(rest[p.row]) for p in picks]
    return curve


def semi(d: dict[str, np.ndarray], fraction: float, seed: int) -> tuple[float, float, str, dict]:
    """(labelled-only val accuracy, with --unlabeled, the method kept, each method forced) at ``fraction`` of the labels.

    The last item says, per method, what the guard saw and what it could not: the gain on
    validation had the method been kept regardless (never used to choose) beside its
    cross-validated gain on the labelled images and the standard error it had to beat.
    """
    from graft.training.head.calibration import fit_temperature
    from graft.training.head.semi import METHODS, _fit_method, fit_with_unlabeled

    X, y, Xv, yv = d["X"], d["y"], d["Xv"], d["yv"]
    k = int(max(y.max(), yv.max()) + 1)
    rng = np.random.default_rng(seed)
    lab = np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[: max(2, round(fraction * (y == c).sum()))] for c in range(k)]
        )
    )
    rest = np.setdiff1d(np.arange(len(y)), lab)
    base, _ = head(X[lab], y[lab], k, seed)
    res = fit_with_unlabeled((X[lab], y[lab], np.arange(len(lab))), X[rest], base, k, seed=seed)
    acc = lambda f: float((f.logits(Xv).argmax(1) == yv).mean())  # noqa: E731
    print(f"    {fraction:g} seed {seed}: {res.info}", flush=True)  # CV accuracy per method, the margin needed
    T = 1.0 if base.oof_logits is None else fit_temperature(base.oof_logits, base.oof_labels)
    lab_rows = (X[lab], y[lab], np.ones(len(lab), np.float32))
    cv = res.info.get("cv_accuracy", {})
    forced = {
        m: {
            "val_gain": acc(_fit_method(m, lab_rows, X[rest], base, (k, base.C, T, seed))[0]) - acc(base),
            "cv_gain": cv[m] - cv["none"] if m in cv else None,
            "needed": res.info.get("kept_if_gain_over"),
        }
        for m in METHODS
    }
    return acc(base), acc(res.fit), str(res.info["method"]), forced


def labels_needed(curves: list[list[tuple[int, float]]], target: float) -> int | None:
    """Labels at the first round whose mean accuracy over seeds is within one point of ``target``."""
    n = min(len(c) for c in curves)
    for i in range(n):
        if np.mean([c[i][1] for c in curves]) >= target - 0.01:
            return curves[0][i][0]
    return None


def run(name: str, args: argparse.Namespace) -> dict:
    d = features(name, Path(args.cache))
    k = int(d["y"].max() + 1)
    full, _ = head(d["X"], d["y"], k, 0)
    full_acc = float((full.logits(d["Xv"]).argmax(1) == d["yv"]).mean())
    # A page of images per round: 1% of the training images, at least two per class and at least 5
    batch = args.batch or max(5, 2 * k, round(0.01 * len(d["y"])))
    rounds = args.rounds or min(args.max_rounds, int(np.ceil(0.3 * len(d["y"]) / batch)))
    out: dict = {"dataset": name, "train": len(d["y"]), "val": len(d["yv"]), "classes": k, "all_labels_acc": full_acc}
    out.update(batch=batch, rounds=rounds, curves={})
    for s in () if args.skip_loop else args.strategies.split(","):
        t = time.perf_counter()
        curves = [simulate(d, s, seed, args.start, batch, rounds) for seed in range(args.seeds)]
        out["curves"][s] = {
            "labels": [n for n, _ in curves[0]],
            "mean": [float(np.mean([c[i][1] for c in curves])) for i in range(len(curves[0]))],
            "per_seed": [[a for _, a in c] for c in curves],
            "labels_needed": labels_needed(curves, full_acc),
            "seconds": time.perf_counter() - t,
        }
        print(
            f"  {name} {s}: needs {out['curves'][s]['labels_needed']} labels ({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    out["unlabeled"] = {}
    for f in () if args.skip_unlabeled else [float(f) for f in args.fractions.split(",")]:
        rows = [semi(d, f, seed) for seed in range(args.seeds)]
        out["unlabeled"][str(f)] = {
            "labelled_only": float(np.mean([r[0] for r in rows])),
            "with_unlabeled": float(np.mean([r[1] for r in rows])),
            "methods": [r[2] for r in rows],
            "forced": [r[3] for r in rows],
        }
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r["curves"]]
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4))
    for ax, r in zip(np.atleast_1d(axes), results):
        for s, style, colour in zip(STRATEGIES, ("-o", "--s", ":^", "-.d"), ("C0", "C1", "C2", "C3")):
            if s not in r["curves"]:
                continue
            c = r["curves"][s]
            ax.plot(c["labels"], c["mean"], style, color=colour, ms=3, label=s)
        ax.axhline(r["all_labels_acc"] - 0.01, color="grey", lw=0.8, ls="--", label="all labels - 1 pt")
        ax.set_title(r["dataset"], fontsize=10)
        ax.set_xlabel("labels")
        ax.set_ylabel("val accuracy")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _needed(c: dict) -> str:
    return str(c["labels_needed"] or f">{c['labels'][-1]} ({c['mean'][-1]:.3f})")


def _worst(c: dict, strategy: str) -> str:
    """The round where ``strategy`` is furthest below random (mean over seeds), over the rounds both ran."""
    if strategy not in c or "random" not in c:
        return "-"
    gaps = [a - b for a, b in zip(c[strategy]["mean"], c["random"]["mean"])]
    at = int(np.argmin(gaps))
    return f"{100 * gaps[at]:+.1f} ({c[strategy]['labels'][at]} labels)"


def merged(results: list[dict]) -> list[dict]:
    """One result per dataset: the strategies and fractions of several runs (same features, batch) together."""
    out: dict[str, dict] = {}
    for r in results:
        if r["dataset"] in out and out[r["dataset"]]["batch"] != r["batch"]:
            raise SystemExit(
                f"--from-json: two runs of {r['dataset']} with pages of {out[r['dataset']]['batch']} "
                f"and {r['batch']} images; merge runs with the same --batch only"
            )
        if r["dataset"] not in out:
            out[r["dataset"]] = {**r, "curves": dict(r["curves"]), "unlabeled": dict(r["unlabeled"])}
        else:
            out[r["dataset"]]["curves"].update(r["curves"])
            out[r["dataset"]]["unlabeled"].update(r["unlabeled"])
    return list(out.values())


def report(results: list[dict]) -> None:
    rows = []
    for r in results:
        c = r["curves"]
        if not c:
            continue
        rows.append(
            [
                r["dataset"],
                r["train"],
                f"{r['all_labels_acc']:.4f}",
                r["batch"],
                *(_needed(c[s]) if s in c else "not run" for s in STRATEGIES),
                _worst(c, "suggest"),
                _worst(c, "suggest_cold"),
            ]
        )
    heads = ["dataset", "train", "all labels", "batch", *STRATEGIES, "worst suggest-random", "worst cold-random"]
    print(table(heads, rows))
    rows = []
    for r in results:
        for f, u in r["unlabeled"].items():
            gain = 100 * (u["with_unlabeled"] - u["labelled_only"])
            rows.append(
                [
                    r["dataset"],
                    f"{100 * float(f):g}%",
                    f"{u['labelled_only']:.4f}",
                    f"{u['with_unlabeled']:.4f}",
                    f"{gain:+.1f}",
                    ", ".join(u["methods"]),
                ]
            )
    print(table(["dataset", "labels", "labelled only", "--unlabeled", "gain (pts)", "method kept per seed"], rows))
    rows = []
    for r in results:
        for f, u in r["unlabeled"].items():
            for seed, forced in enumerate(u.get("forced", [])):
                for m, g in forced.items():
                    cv = "-" if g["cv_gain"] is None else f"{100 * g['cv_gain']:+.1f} (bar {100 * g['needed']:.1f})"
                    rows.append([r["dataset"], f"{100 * float(f):g}%", seed, m, f"{100 * g['val_gain']:+.1f}", cv])
    if rows:
        print(
            "Each method forced: its gain on validation (never used to choose) and what cross-validation saw;"
            " bar: the one standard error the better method's CV gain had to beat (the guard tests only that one)"
        )
        print(table(["dataset", "labels", "seed", "method", "val gain if kept (pts)", "CV gain (pts)"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(NAMES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--start", type=int, default=2, help="labels per class to start from")
    p.add_argument(
        "--batch", type=int, default=0, help="labels per round (0: 1%% of the training images, >= 2/class, >= 5)"
    )
    p.add_argument(
        "--rounds", type=int, default=0, help="rounds (0: until 30%% of the training images, <= --max-rounds)"
    )
    p.add_argument("--max-rounds", type=int, default=25)
    p.add_argument("--skip-unlabeled", action="store_true", help="only the labelling loop")
    p.add_argument("--skip-loop", action="store_true", help="only --unlabeled against labelled-only")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--fractions", default="0.05,0.1,0.25", help="--unlabeled: fractions of the training labels")
    p.add_argument("--cache", default="/tmp/al_feats")
    p.add_argument("--png", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", default=None, help="comma-separated --json files: print and plot them, run nothing")
    args = p.parse_args()
    if args.from_json:
        results = merged([r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())])
    else:
        print(machine_line(), flush=True)
        results = []
        for n in args.datasets.split(","):
            results.append(run(n, args))
            if args.json:  # after each dataset: a long run stopped early keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1))
    report(results)
    if args.png:
        plot(results, Path(args.png))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
