"""``graft suggest`` and a class the model has never seen: does it ask for those images?

The issue behind ``suggest`` asks for "images the model calls 'unknown' that look like a class it
has never seen". This bench measures it on a shared dataset. The last ``--holdout`` classes (in
sorted order, so nothing is chosen by looking) are the unseen ones (a new kind of the same thing:
a near shift); with ``--foreign OTHER`` they are another shared dataset's classes instead (a far
shift). A model is trained with ``graft.Classifier`` on ``--fraction`` of the other classes'
training images (stratified and seeded; validation: graft's own split of the whole folder, seen
classes only). The other training images of the seen classes, and ``--unseen-per-class`` images
of each unseen class (a new class is rare at first), go into a flat unlabelled ``pool/``. Then ``graft suggest MODEL pool/``
ranks a page of ``--n`` images with each strategy (``diverse``: the default; ``margin`` and
``random``: the baselines), and the bench counts, per strategy:

* the page's images from an unseen class, against the pool's share of them;
* the "a new class?" picks (unknown groups) and how many of them are of an unseen class;
* how many of the unseen classes the page holds at least one image of.

It also prints how often the model's "unknown" flag fires on the pool's unseen-class images and on
its seen-class ones (the flag's threshold lets about 95% of held-out training images through).

    python bench/new_class.py --dataset sign_digits --holdout 2 --seeds 3 [--json out.json]
    python bench/new_class.py --dataset hymenoptera --foreign flowers_kaggle_128 --seeds 3
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

STRATEGIES = ("diverse", "margin", "random")


def build(args: argparse.Namespace, seed: int) -> tuple[Path, Path, dict[str, str], list[str]]:
    """(data folder, pool folder, pool file name -> class, unseen classes) for one seed."""
    from graft.features.dataset import scan_splits

    splits = scan_splits(DATASETS / args.dataset)
    classes = list(splits.classes)
    unseen = [] if args.foreign else classes[-args.holdout :]
    tag = f"foreign-{args.foreign}" if args.foreign else f"h{args.holdout}"
    root = Path(args.work) / f"{args.dataset}_{tag}_u{args.unseen_per_class}_f{args.fraction:g}_s{seed}"
    data, pool = root / "data", root / "pool"
    truth_file = root / "pool_classes.json"
    if (root / "done").exists():
        truth = json.loads(truth_file.read_text())
        return data, pool, truth, sorted({c for c in truth.values() if c.startswith("foreign:")} | set(unseen))
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    train = splits.splits["train"]
    y = np.array([int(r.label) for r in train])
    seen = [c for c in range(len(classes)) if classes[c] not in unseen]
    lab = set(
        np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[: max(2, round(args.fraction * (y == c).sum()))] for c in seen]
        ).tolist()
    )
    # of each unseen class, only --unseen-per-class images reach the pool (a new class is rare at first)
    rare = {
        c: set(rng.permutation(np.flatnonzero(y == c))[: args.unseen_per_class].tolist()) for c in range(len(classes))
    }
    truth: dict[str, str] = {}
    for i, r in enumerate(train):
        src = Path(r.path)
        if i in lab:
            dst = data / "train" / classes[y[i]] / src.name
        elif classes[y[i]] in unseen and i not in rare[int(y[i])]:
            continue
        else:
            dst = pool / f"{i:05d}{src.suffix}"
            truth[dst.name] = classes[y[i]]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    if args.foreign:  # another dataset's classes: images unlike anything the model was trained on
        other = scan_splits(DATASETS / args.foreign)
        oy = np.array([int(r.label) for r in other.splits["train"]])
        for c, name in enumerate(other.classes):
            unseen.append(f"foreign:{name}")
            for j in rng.permutation(np.flatnonzero(oy == c))[: args.unseen_per_class]:
                src = Path(other.splits["train"][int(j)].path)
                dst = pool / f"x{c}_{int(j):05d}{src.suffix}"
                truth[dst.name] = f"foreign:{name}"
                shutil.copy(src, dst)
    for r in splits.splits["val"]:
        if classes[int(r.label)] in unseen:
            continue
        src = Path(r.path)
        dst = data / "val" / classes[int(r.label)] / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    truth_file.write_text(json.dumps(truth))
    (root / "done").write_text("")
    return data, pool, truth, unseen


def run(args: argparse.Namespace, seed: int) -> dict:
    import graft
    from graft.suggest.core import suggest
    from graft.suggest.options import SuggestOptions

    data, pool, truth, unseen = build(args, seed)
    model = data.parent / "model"
    t0 = time.perf_counter()
    if not (model / "done").exists():
        clf = graft.Classifier(seed=seed)
        clf.fit(data)
        clf.save(model)
        (model / "done").write_text("")
    fit_s = time.perf_counter() - t0
    is_unseen = {k: v in unseen for k, v in truth.items()}
    out: dict = {
        "seed": seed,
        "unseen_classes": unseen,
        "pool": len(truth),
        "pool_unseen": int(sum(is_unseen.values())),
        "fit_seconds": fit_s,
    }
    # How often "unknown" fires on the pool, per kind of image (the model's own prediction path).
    rows = sorted(truth)
    res = graft.Classifier.load(model).predict([str(pool / r) for r in rows])
    flags = {Path(r["path"]).name: r["label"] == "unknown" for r in res}
    out["unknown_rate_unseen"] = float(np.mean([flags[r] for r in rows if is_unseen[r]]))
    out["unknown_rate_seen"] = float(np.mean([flags[r] for r in rows if not is_unseen[r]]))
    out["strategies"] = {}
    for s in args.strategies.split(","):
        t = time.perf_counter()
        sug = suggest(model, pool, SuggestOptions(n=args.n, strategy=s, seed=seed))
        names = [Path(r["path"]).name for r in sug.rows]
        new = [n for n, r in zip(names, sug.rows) if "new class" in r["reason"]]
        out["strategies"][s] = {
            "page_unseen": int(sum(is_unseen[n] for n in names)),
            "new_class_picks": len(new),
            "new_class_unseen": int(sum(is_unseen[n] for n in new)),
            "unseen_classes_found": len({truth[n] for n in names if is_unseen[n]}),
            "seconds": time.perf_counter() - t,
        }
    print(f"  seed {seed}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sign_digits")
    ap.add_argument("--holdout", type=int, default=2, help="the last N classes (sorted) are never labelled")
    ap.add_argument("--unseen-per-class", type=int, default=15, help="images of each unseen class in the pool")
    ap.add_argument("--foreign", default=None, help="unseen classes from this other shared dataset instead")
    ap.add_argument("--fraction", type=float, default=0.25, help="of the seen classes' training images, labelled")
    ap.add_argument("--n", type=int, default=50, help="suggestions per page")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--work", default="/tmp/graft_new_class")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    results = [run(args, seed) for seed in range(args.seeds)]
    first = results[0]
    share = np.mean([r["pool_unseen"] / r["pool"] for r in results])
    print(
        f"{args.dataset}: {first['pool_unseen']} unseen-class images of the pool's {first['pool']}"
        f" ({100 * share:.1f}% unseen); 'unknown' fires on {100 * np.mean([r['unknown_rate_unseen'] for r in results]):.1f}%"
        f" of unseen-class images and {100 * np.mean([r['unknown_rate_seen'] for r in results]):.1f}% of seen ones"
    )
    n_unseen = len(results[0]["unseen_classes"])
    rows = []
    for s in args.strategies.split(","):
        per = [r["strategies"][s] for r in results]

        def mean(key: str, per: list[dict] = per) -> float:
            return float(np.mean([p[key] for p in per]))

        rows.append(
            [
                s,
                f"{mean('page_unseen'):.1f} of {args.n} (pool share: {share * args.n:.1f})",
                f"{mean('new_class_unseen'):.1f} of {mean('new_class_picks'):.1f}",
                f"{mean('unseen_classes_found'):.2f} of {n_unseen}",
            ]
        )
    print(
        table(
            ["strategy", "page images of an unseen class", "'new class?' picks of one", "unseen classes on the page"],
            rows,
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
