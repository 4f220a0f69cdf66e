"""Time and peak memory of ``--unlabeled``'s head fit against the size of the unlabelled pool.

Random features stand in for a large folder (embedding it is the same cost as any other
folder's, and the feature cache pays it once): ``--classes`` Gaussian clusters in 1,280
dimensions, ``--labelled`` images per class and each pool size in ``--pools``. Each size runs
in a child process on one thread, so its peak RSS is its own. Two figures per size:

* ``spread``: label spreading alone on the pool (its neighbour graph holds a seeded sample of
  at most ``graft.training.head.semi.SPREAD_POOL`` images; ``--whole`` lifts the cap to show
  what the sample saves);
* ``fit``: ``fit_with_unlabeled`` (the guard's cross-validation, then the kept method on the
  whole pool), as ``graft train --unlabeled`` runs it after embedding.

    python bench/unlabeled_scale.py [--pools 20000 100000] [--whole]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, table  # noqa: E402


def _data(n_pool: int, classes: int, per_class: int, seed: int = 0) -> tuple:
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 1280)).astype(np.float32) * 0.12
    y = np.repeat(np.arange(classes), per_class)
    y_u = rng.integers(0, classes, n_pool)
    X = (centres[y] + rng.normal(size=(len(y), 1280))).astype(np.float32)
    X_u = (centres[y_u] + rng.normal(size=(n_pool, 1280))).astype(np.float32)
    return X, y, X_u


def child(n_pool: int, classes: int, per_class: int, what: str, whole: bool) -> dict:
    """One measurement, in this process (one thread)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from graft.training.head import semi
    from graft.training.head.linear_probe import fit_linear_head

    torch.set_num_threads(1)
    if whole:
        semi.SPREAD_POOL = n_pool
    X, y, X_u = _data(n_pool, classes, per_class)
    out: dict = {"pool": n_pool, "what": what}
    with threadpool_limits(1):
        t = time.perf_counter()
        if what == "spread":
            rows, _ = semi.pseudo_labels("label_spreading", None, 1.0, (X, y), X_u, classes)
            out["labelled_by_it"] = int(len(rows))
        else:
            base = fit_linear_head(X, y, classes, groups=np.arange(len(y)))
            fit = semi.fit_with_unlabeled((X, y, np.arange(len(y))), X_u, base, classes)
            out["method"] = fit.info.get("method")
            out["labelled_by_it"] = int(fit.info.get("pseudo_labelled", 0))
        out["seconds"] = round(time.perf_counter() - t, 1)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--labelled", type=int, default=100, help="labelled images per class")
    ap.add_argument("--whole", action="store_true", help="label spreading on the whole pool (no sample)")
    ap.add_argument("--child", nargs=2, metavar=("POOL", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.classes, args.labelled, args.child[1], args.whole)))
        return
    rows = []
    for n in args.pools:
        for what in ("spread", "fit"):
            cmd = [sys.executable, __file__, "--child", str(n), what, "--classes", str(args.classes)]
            cmd += ["--labelled", str(args.labelled)] + (["--whole"] if args.whole else [])
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append([n, what, res.get("method", "-"), res["labelled_by_it"], res["seconds"], res["peak_mb"]])
            print(rows[-1], flush=True)
    print(machine_line())
    print(f"{args.classes} classes x {args.labelled} labelled, 1,280-d random features, one thread per child")
    print(table(["pool", "step", "method kept", "pseudo-labelled", "seconds", "peak MB"], rows))


if __name__ == "__main__":
    main()
