"""``--unlabeled`` with ``--budget``: do the fine-tuning rungs gain from pseudo-labelled images?

For a shared dataset, a fraction of the training labels (stratified and seeded exactly as
``bench/active_learning.py``'s ``--unlabeled`` rows: at least two per class) is copied into a
``train/`` + ``val/`` folder (validation: graft's own seeded split of the whole folder), and the
other training images into a flat ``pool/`` folder with no labels. Then ``graft train`` with the
same ``--budget`` runs three ways, one after another in this process:

* ``labelled``: no ``--unlabeled`` (the ladder on the labelled images alone),
* ``head``: ``--unlabeled`` in stage 1 only, the ladder as it was before it used the pool: its
  head rung refitted on the labelled images alone, the fine-tuning rungs on labelled images,
* ``rungs``: ``--unlabeled`` as shipped: where cross-validation kept a method, the head rung is
  that method refitted without the held-out slice, and the fine-tuning rungs also train on its
  pseudo-labelled images (at most as many as the labelled ones).

Each prints validation accuracy, the rung kept and what the rungs were given. The budget counts
from the start of the fit, so ``head`` and ``rungs`` pay for the guard's cross-validation out of
it, as a user's run does.

    python bench/unlabeled_ladder.py --dataset sign_digits --fraction 0.1 --seed 0 --budget 5m [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, machine_line, table  # noqa: E402

ARMS = ("labelled", "head", "rungs")


def build(name: str, fraction: float, seed: int, work: Path) -> tuple[Path, Path]:
    """(dataset folder with train/ and val/, pool folder) for ``fraction`` of ``name``'s training labels."""
    from graft.features.dataset import scan_splits

    root = work / f"{name}_f{fraction:g}_s{seed}"
    data, pool = root / "data", root / "pool"
    if (root / "done").exists():
        return data, pool
    shutil.rmtree(root, ignore_errors=True)
    splits = scan_splits(DATASETS / name)
    classes = list(splits.classes)
    train = splits.splits["train"]
    y = np.array([int(r.label) for r in train])
    rng = np.random.default_rng(seed)
    lab = set(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(y == c))[: max(2, round(fraction * (y == c).sum()))]
                for c in range(len(classes))
            ]
        ).tolist()
    )
    for i, r in enumerate(train):
        src = Path(r.path)
        dst = data / "train" / classes[y[i]] / src.name if i in lab else pool / f"{i:05d}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    for r in splits.splits["val"]:
        src = Path(r.path)
        dst = data / "val" / classes[int(r.label)] / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    (root / "done").write_text("")
    return data, pool


def fit(arm: str, data: Path, pool: Path, budget: str, seed: int) -> dict:
    import graft
    from graft.training.fit import ladder

    real = ladder.pseudo_labelled
    if arm == "head":  # the ladder as it was: the head rung refitted labelled-only, the rungs on labelled images
        ladder.pseudo_labelled = lambda *a, **k: (None, ([], np.zeros(0, np.int64)))  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        clf = graft.Classifier(seed=seed)
        clf.fit(data, budget=budget, unlabeled=None if arm == "labelled" else pool)
        seconds = time.perf_counter() - t0
    finally:
        ladder.pseudo_labelled = real  # type: ignore[assignment]
    lad = clf.stage_metrics_["ladder"]
    semi = clf.head_info_.get("unlabeled") or {}
    return {
        "arm": arm,
        "val_accuracy": float(clf.metrics_["accuracy"]),
        "kept": lad["kept"],
        "head_method": semi.get("method", "-"),
        "rungs_unlabeled": lad.get("unlabeled"),
        "rungs": [
            {k: r.get(k) for k in ("rung", "epochs_run", "held_out_accuracy", "val_accuracy", "seconds", "note")}
            for r in clf.ladder_
        ],
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sign_digits")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", default="5m")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--work", default="/tmp/graft_unlabeled_ladder")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    data, pool = build(args.dataset, args.fraction, args.seed, Path(args.work))
    n_pool = sum(1 for _ in pool.iterdir())
    print(f"{args.dataset}: {args.fraction:g} of the training labels, {n_pool} unlabelled, budget {args.budget}")
    out = []
    for arm in args.arms.split(","):
        res = fit(arm, data, pool, args.budget, args.seed)
        print(f"  {arm}: {json.dumps(res)}", flush=True)
        out.append(res)
    rows = []
    for r in out:
        u = r["rungs_unlabeled"] or {}
        given = f"{u.get('labelled', '-')} + {u.get('pseudo_labelled', 0)} pseudo" if u else "labelled only"
        rows.append([r["arm"], f"{r['val_accuracy']:.4f}", r["kept"], r["head_method"], given, f"{r['seconds']:.0f}"])
    print(table(["arm", "val accuracy", "rung kept", "head's method", "rungs train on", "wall s"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": out}, indent=1))


if __name__ == "__main__":
    main()
