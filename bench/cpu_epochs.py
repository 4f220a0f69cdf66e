"""Cheaper CPU epochs (issue 30, item 3): the ladder's "top" rung at the embedding resolution, lower, and with one view.

For each dataset, in one process: stage 1 as ``graft train --budget`` runs it (``Classifier.fit``),
then the budget ladder's "top" rung (the last 2 block groups, frozen-prefix activation cache) as
the ladder runs it -- the same held-out slice, head refitted without it, ``LADDER_CONFIG``, timing
probe first (which measures and caches the speed plan), then ``run_rung`` -- for a fixed number of
epochs and no deadline, from the same head network each time (the probe runs once per training size:
(c) has (a)'s shapes, and the speed plan (a)'s probe measured and cached serves it as it would
serve the ladder's own run), under:

  (a) today's ladder: training crops at the model's input size (``auto``: 288 px for
      EfficientNet-Lite0 on photos with enough detail), 2 cached augmented views of the prefix;
  (b) ``train_size=224``: training crops at 224 px, held-out slice and validation still at the
      input size (skipped where the input size is already 224 px or less);
  (c) ``prefix_views=1``: one cached view (epoch 1 fills it, every later epoch reuses it); skipped
      where stage 1 chose multi-depth features, which read blocks inside the prefix (no prefix cache).

(a) alone, where neither (b) nor (c) applies, is skipped too unless ``--always-a``.

Prints per configuration: each epoch's seconds (training + held-out scoring), the rung's total
seconds, held-out accuracy and loss (what the ladder chooses by), validation accuracy (and test
accuracy where the data has a test split; reported, never chosen by). JSON lines go to ``--log``.

    python bench/cpu_epochs.py --avx2
    python bench/cpu_epochs.py --avx2 --epochs 3 cats_dogs_filtered
    python bench/cpu_epochs.py --limit 60 --epochs 2 hymenoptera       # a quick smoke

``--avx2`` runs as on a CPU without bf16 units (bench/ladder.py's AVX2-only mode: two threads,
PyTorch's kernels held to AVX2); the script re-executes itself with that environment, since
PyTorch reads it when first imported. Precision is fp32 throughout. Not a test: figures depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, git_rev, machine_line, table  # noqa: E402
from ladder import ALL, AVX2_ENV  # noqa: E402

#: name -> (what it is, changes to the ladder's LADDER_CONFIG)
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "a": ("today: input size, 2 views", {}),
    "b": ("train_size 224", {"train_size": 224}),  # --train-size sets another
    "c": ("prefix_views 1", {"prefix_views": 1}),
}
_REEXEC = "GRAFT_BENCH_CPU_EPOCHS_AVX2"
MESSAGES: list[str] = []  # graft's progress messages ("fine-tuning runs ..." says what each rung ran)


def limited(root: Path, n: int, seed: int) -> Any:
    """``root`` scanned as graft does, its training split cut to ``n`` images (classes interleaved), val to ``n``."""
    from graft.data.scan import scan_dataset

    data = scan_dataset(root, seed=seed)

    def cut(records: list[Any]) -> list[Any]:
        by_class: dict[int, list[Any]] = {}
        for r in records:
            by_class.setdefault(r.label, []).append(r)
        out: list[Any] = []
        for i in range(max(map(len, by_class.values()))):
            out += [rs[i] for _, rs in sorted(by_class.items()) if i < len(rs)]
        return out[:n]

    data.splits = {k: cut(v) for k, v in data.splits.items()}
    return data


def measure(clf: Any, st: Any, args: argparse.Namespace, dataset: str) -> list[dict[str, Any]]:
    """Every configuration's "top" rung from the same held-out-refitted head network: one record each."""
    from graft.training.fit import ladder, rungs
    from graft.training.fit.budget_plan import RUNGS

    top = next(r for r in RUNGS if r.name == "top")
    env = clf._train_env()
    classes = list(clf.data_.classes)
    paths, y, held = ladder.held_out_slice(clf.data_, env.seed)
    if not held.any():  # the ladder itself would keep the head and fine-tune nothing
        raise SystemExit(f"{dataset}: too few training images to hold out a slice (the ladder would not fine-tune)")
    net = clf.model_
    head_row = rungs.RungResult("head", RUNGS[0].what)
    ladder._head_rung(net, head_row, st.head, st.train, (paths, held, classes), env.balanced, env.seed)
    val = (clf.val_paths_, clf.val_labels_)
    ctx = ladder._context(env, clf.preprocessing_, (paths, y, held), val, classes, clf._score_val, env.progress)
    ctx = dataclasses.replace(ctx, thresholds=st.head.thresholds)
    start = ladder._snapshot(net)
    size = int(max(clf.preprocessing_.input_size))
    test = clf.data_.splits.get("test") or []
    base = rungs.LADDER_CONFIG
    probed: set[int] = set()  # training sizes whose speed plan the probe has measured (and cached)
    taps = [int(t) for t in getattr(net, "taps", ()) or ()]
    notes = {k: _inapplicable(CONFIGS[k][1], size, taps) for k in args.configs}
    if "a" in notes and len(notes) > 1 and not args.always_a and all(v for k, v in notes.items() if k != "a"):
        notes["a"] = "skipped: nothing to compare it with here (--always-a runs it)"
    out = []
    for key in args.configs:
        what, changes = CONFIGS[key]
        rec: dict[str, Any] = {
            "dataset": dataset,
            "config": key,
            "what": what,
            "input_size": size,
            "train_size": changes.get("train_size", size),
            "prefix_views": changes.get("prefix_views", base.prefix_views),
            "epochs": args.epochs,
            "n_train": len(ctx.sets[0][0]),
            "n_held_out": len(ctx.sets[1][0]),
            "n_val": len(val[0]),
            "avx2": args.avx2,
            "taps": taps,
        }
        if notes[key]:
            rec["note"] = notes[key]
            out.append(rec)
            print(json.dumps(rec), flush=True)
            continue
        net.load_state_dict(start)
        rungs.LADDER_CONFIG = dataclasses.replace(base, **changes)  # what probe() and run_rung() read
        try:
            if rec["train_size"] not in probed:  # (c) has (a)'s shapes: (a)'s cached plan serves it
                t0 = time.perf_counter()
                costs = rungs.probe(ctx, net, top)
                rec["probe_s"] = round(time.perf_counter() - t0, 1)
                rec["probe_costs"] = dataclasses.asdict(costs)
                probed.add(rec["train_size"])
            row = rungs.RungResult(top.name, top.what)
            t0 = time.perf_counter()
            fit, _probs, _policy, cfg = rungs.run_rung(ctx, net, top, args.epochs, time.perf_counter() + 1e9, row)
            rec["rung_s"] = round(time.perf_counter() - t0, 1)  # fine-tune + validation scoring
        finally:
            rungs.LADDER_CONFIG = base
        secs = [float(r["seconds"]) for r in fit.history]
        rec |= {
            "runs": next((m.split("runs ", 1)[1] for m in reversed(MESSAGES) if m.startswith("fine-tuning runs")), "?"),
            "config_dict": cfg.to_dict(),
            "epoch_s": [round(s, 1) for s in secs],
            "first_epoch_s": round(secs[0], 1),
            "later_epoch_s": round(sum(secs[1:]) / max(len(secs) - 1, 1), 1),
            "fine_tune_s": round(fit.seconds, 1),
            "epochs_run": len(fit.history),
            "best_epoch": fit.best_epoch,
            "held_out_accuracy": row.held_out_accuracy,
            "held_out_loss": row.held_out_loss,
            "val_accuracy": row.val_accuracy,
            "test_accuracy": _test_accuracy(clf, test) if test else None,
            "head_held_out_accuracy": head_row.held_out_accuracy,
            "head_val_accuracy": float(st.head.metrics["accuracy"]),
            "note": row.note,
        }
        out.append(rec)
        print(json.dumps(rec), flush=True)
    net.load_state_dict(start)
    return out


def _inapplicable(changes: dict[str, Any], size: int, taps: list[int]) -> str:
    """Why a configuration would train exactly as (a) does here ("" where it would not)."""
    if "train_size" in changes and changes["train_size"] >= size:
        return f"skipped: the input size is already {size} px"
    if "prefix_views" in changes and taps:
        return (
            f"skipped: stage 1 chose multi-depth features (blocks {taps}), which read blocks inside the frozen "
            "prefix, so the top rung runs without the prefix cache and prefix_views changes nothing"
        )
    return ""


def _test_accuracy(clf: Any, test: list[Any]) -> float:
    import numpy as np

    probs = clf._predictor(frozen=False).predict_proba([str(r.path) for r in test])[0]
    return float(np.mean(np.argmax(probs, 1) == np.array([r.label for r in test])))


def run_dataset(dataset: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Stage 1 as ``fit(..., budget=...)`` runs it, then :func:`measure` where the ladder would climb."""
    import graft
    from graft.progress import NullProgress

    got: list[list[dict[str, Any]]] = []

    class Messages(NullProgress):
        def message(self, text: str) -> None:
            MESSAGES.append(text)

    class Bench(graft.Classifier):
        def _climb(self, st: Any, budget: Any, checkpoint_dir: Any, resume: bool) -> None:
            got.append(measure(self, st, args, dataset))

    root = DATASETS / dataset
    data = limited(root, args.limit, 0) if args.limit else root
    t0 = time.perf_counter()
    Bench(args.backbone, weights=args.weights, precision="fp32", progress=Messages()).fit(data, budget="1h")
    print(f"# {dataset}: stage 1 and every configuration took {time.perf_counter() - t0:.0f} s", flush=True)
    return got[0]


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    base = {r["dataset"]: r for r in rows if r["config"] == "a" and "fine_tune_s" in r}
    body = []
    for r in rows:
        px = f"{r['train_size']}/{r['input_size']}"
        if "fine_tune_s" not in r:
            body.append([r["dataset"], f"({r['config']}) {r['what']}", px, r["prefix_views"], *[""] * 7, r["note"]])
            continue
        a = base.get(r["dataset"])
        ratio = f"{r['fine_tune_s'] / a['fine_tune_s']:.2f}x" if a else ""
        body.append(
            [
                r["dataset"],
                f"({r['config']}) {r['what']}",
                px,
                r["prefix_views"],
                " / ".join(f"{s:.0f}" if s >= 10 else f"{s:.1f}" for s in r["epoch_s"]),
                f"{r['fine_tune_s']:.0f}",
                ratio,
                f"{_fmt(r['held_out_accuracy'])} (n={r['n_held_out']})",
                _fmt(r["held_out_loss"]),
                f"{_fmt(r['val_accuracy'])} (n={r['n_val']})",
                _fmt(r["test_accuracy"]),
                r["runs"] + (f"; {r['note']}" if r.get("note") else ""),
            ]
        )
    heads = [
        "dataset",
        "configuration",
        "train/test px",
        "views",
        "epoch s",
        "fine-tune s",
        "vs (a)",
        "held-out acc",
        "held-out loss",
        "val acc",
        "test acc",
        "ran as / note",
    ]
    print(table(heads, body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=ALL)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of every configuration (no deadline)")
    ap.add_argument("--configs", default="abc", help="which configurations, e.g. ab (default abc)")
    ap.add_argument("--train-size", type=int, default=224, help="train_size of configuration (b)")
    ap.add_argument("--limit", type=int, default=0, help="use only N training (and N validation) images")
    ap.add_argument("--log", type=Path, default=Path("bench_cpu_epochs.jsonl"))
    ap.add_argument("--avx2", action="store_true", help="2 threads, PyTorch held to AVX2 (no bf16)")
    ap.add_argument("--backbone", default="efficientnet_lite0", help="graft's backbone (a smoke may use a tiny one)")
    ap.add_argument("--always-a", action="store_true", help="run (a) even where neither (b) nor (c) applies")
    ap.add_argument("--weights", default=None, help="weights file of --backbone (None: graft's)")
    args = ap.parse_args()
    if any(c not in CONFIGS for c in args.configs):
        ap.error(f"--configs: letters of {''.join(CONFIGS)}")
    what = f"train_size {args.train_size}"
    CONFIGS["b"] = (what, {"train_size": args.train_size})
    if args.avx2 and os.environ.get(_REEXEC) != "1":  # PyTorch reads these when first imported
        env = {**os.environ, **AVX2_ENV, _REEXEC: "1"}
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    os.environ.setdefault("GRAFT_HOME", tempfile.mkdtemp(prefix="graft-bench-"))  # cold caches, as a new user
    print(f"{machine_line()}; graft {git_rev()}; fp32" + ("; AVX2-only mode" if args.avx2 else ""), flush=True)
    print(f"# python bench/cpu_epochs.py {' '.join(sys.argv[1:])}", flush=True)
    rows: list[dict[str, Any]] = []
    for ds in args.datasets:
        for r in run_dataset(ds, args):
            with args.log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            rows.append(r)
        print_table(rows)  # so far: a long series can be read while it runs
    print(machine_line())


if __name__ == "__main__":
    main()
