"""Head fitting time and accuracy on cached features.

Synthetic 50k x 1280 features (10 classes) for time; and, where the shared datasets
are present, the linear head's validation accuracy against the scikit-learn
LogisticRegression(C=1) floors of ``../shared/datasets/README.md``.

    python bench/head_fit.py [--n 50000] [--datasets hymenoptera cats_dogs_filtered flowers_kaggle_128 sign_digits]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, machine_line, table  # noqa: E402

FLOORS = {"hymenoptera": 0.948, "cats_dogs_filtered": 0.993, "flowers_kaggle_128": 0.723, "sign_digits": 0.944}


def _peak_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--datasets", nargs="*", default=list(FLOORS))
    args = ap.parse_args()
    os.environ.setdefault("GRAFT_HOME", tempfile.mkdtemp(prefix="graft-bench-"))
    import numpy as np

    from graft.training.head.linear_probe import fit_linear_head

    print("# linear head fit (L-BFGS, C by cross-validation)")
    print(f"machine: {machine_line()}")
    rng = np.random.default_rng(0)
    k = 10
    centres = rng.normal(0, 0.15, (k, args.dim)).astype(np.float32)
    y = rng.integers(0, k, args.n)
    # Written in float32 blocks, as the feature cache hands them over: no float64 temporaries.
    X = np.empty((args.n, args.dim), np.float32)
    for i in range(0, args.n, 10_000):
        j = min(i + 10_000, args.n)
        X[i:j] = np.abs(centres[y[i:j]] + rng.standard_normal((j - i, args.dim), dtype=np.float32))  # ReLU-like
    before = _peak_mib()
    t = time.perf_counter()
    fit = fit_linear_head(X, y, k)
    secs = time.perf_counter() - t
    print(
        table(
            [
                "features",
                "classes",
                "seconds",
                "C chosen",
                "C values tried",
                "features MiB",
                "peak RSS MiB (before fit)",
            ],
            [
                [
                    f"{args.n} x {args.dim}",
                    k,
                    f"{secs:.1f}",
                    fit.C,
                    len(fit.cv_losses),
                    f"{X.nbytes / 2**20:.0f}",
                    f"{_peak_mib():.0f} ({before:.0f})",
                ]
            ],
        )
    )
    print()

    if args.datasets:
        from graft.backbones import create_backbone
        from graft.data.scan import scan_dataset
        from graft.features.extract import model_features
        from graft.features.options import EmbedOptions

        bb = create_backbone("efficientnet_lite0")
        cpu = EmbedOptions(device="cpu")
        rows = []
        for name in args.datasets:
            if not (DATASETS / name).is_dir():
                continue
            splits = scan_dataset(DATASETS / name, seed=0)
            data = {}
            for s in ("train", "val"):
                recs = splits.splits[s]
                fs = model_features(bb.model, bb.preprocessing, [str(r.path) for r in recs], options=cpu)
                data[s] = (fs.X, np.array([recs[i].label for i in fs.ok]))
            t = time.perf_counter()
            fit = fit_linear_head(*data["train"], len(splits.classes))
            secs = time.perf_counter() - t
            Xv, yv = data["val"]
            acc = float((fit.logits(Xv).argmax(1) == yv).mean())
            floor = FLOORS.get(name, float("nan"))
            rows.append(
                [
                    name,
                    len(data["train"][1]),
                    len(yv),
                    f"{acc:.4f}",
                    f"{floor:.3f}",
                    f"{acc - floor:+.4f}",
                    fit.C,
                    f"{secs:.2f}",
                ]
            )
        print(table(["dataset", "train", "val", "val acc", "sklearn floor", "delta", "C", "fit s"], rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
