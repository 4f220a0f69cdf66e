"""The transfer ladder under a budget on the shared datasets (the ``--budget`` rows of RESULTS.md).

Runs ``graft train DATA --budget B`` through the real CLI, each run in a fresh GRAFT_HOME
(cold feature cache and speed plans: what a new user's first run pays), and prints one row
per run: the rung kept, validation accuracy (and test where the dataset has a test split),
the ladder's rungs, and wall time against the budget. Appends each row to ``--log`` (JSON
lines) as it finishes, so a long series can be read while it runs.

    python bench/ladder.py --budget 10m hymenoptera sign_digits
    python bench/ladder.py --budget 30m flowers_kaggle_128 sign_digits

``--avx2`` runs every command as on a CPU without bf16 units: fp32 (``--precision fp32``), two
threads, and PyTorch's kernels held to AVX2 (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``;
ONNX Runtime has no such switch and keeps the CPU's own kernels). ``--wide`` compares the
default features with ``--features wide`` instead (validation accuracy, embedding seconds), in
one GRAFT_HOME per dataset, so the wide run re-reads the default's cached Lite0 features as
``graft train --budget`` does and its seconds are the other backbones' alone:

    python bench/ladder.py --avx2 --wide
    python bench/ladder.py --avx2 --budget 10m sign_digits hymenoptera
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, git_rev, machine_line, table  # noqa: E402

ALL = ["hymenoptera", "cats_dogs_filtered", "flowers_kaggle_128", "sign_digits"]


#: The AVX2-only CPU: fp32, two threads, PyTorch's kernels held to AVX2 (see the module docstring).
AVX2_ENV = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _train(dataset: str, extra: list[str], out: Path, home: Path, avx2: bool) -> tuple[float, dict]:
    """``graft train DATASET EXTRA --out OUT`` in GRAFT_HOME ``home``: (wall seconds, metrics.json)."""
    cmd = [sys.executable, "-m", "graft.cli.main", "train", str(DATASETS / dataset), *extra]
    cmd += ["--out", str(out), "--no-report", "--quiet"] + (["--precision", "fp32"] if avx2 else [])
    env = {**os.environ, "GRAFT_HOME": str(home), **(AVX2_ENV if avx2 else {})}
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return wall, json.loads((out / "metrics.json").read_text())


def run_wide(dataset: str, tmp: Path, avx2: bool) -> dict:
    """Default features, then ``--features wide`` in the same GRAFT_HOME: accuracy and embedding seconds."""
    home = tmp / f"home-{dataset}-wide"
    w0, m0 = _train(dataset, [], tmp / f"{dataset}-default", home, avx2)
    w1, m1 = _train(dataset, ["--features", "wide"], tmp / f"{dataset}-wide", home, avx2)
    t0, t1 = m0.get("timings") or {}, m1.get("timings") or {}
    return {
        "dataset": dataset,
        "avx2": avx2,
        "default_val": m0["val_accuracy"],
        "wide_val": m1["val_accuracy"],
        "default_test": m0.get("test_accuracy"),
        "wide_test": m1.get("test_accuracy"),
        "default_embed_s": round(float(t0.get("embed", 0.0)), 1),
        "wide_added_s": round(float(t1.get("wide", 0.0)), 1),
        "wide_head_s": round(float(t1.get("wide_head", 0.0)), 1),
        "default_wall_s": round(w0, 1),
        "wide_wall_s": round(w1, 1),
        "n_val": len(m0.get("val_paths") or []) or None,
    }


def run(dataset: str, budget: str, tmp: Path, avx2: bool = False) -> dict:
    out, home = tmp / f"{dataset}-{budget}", tmp / f"home-{dataset}-{budget}"
    wall, m = _train(dataset, ["--budget", budget], out, home, avx2)
    spec = json.loads((out / "model" / "config.json").read_text())
    plan = ((spec.get("training") or {}).get("stages") or {}).get("ladder", {}).get("plan", [])
    rungs = " / ".join(
        f"{r['rung']} {r['epochs_run']}ep held {r['held_out_accuracy'] or 0:.3f} val {r['val_accuracy'] or 0:.3f}"
        if r["rung"] != "head"
        else f"head held {r['held_out_accuracy'] or 0:.3f}"
        for r in m["ladder"] or []
    )
    return {
        "dataset": dataset,
        "budget": budget,
        "budget_s": m.get("budget_seconds"),
        "wall_s": round(wall, 1),
        "kept": next((r["rung"] for r in m["ladder"] or [] if r["kept"]), "head"),
        "val": m["val_accuracy"],
        "head_val": m["stages"]["head"]["val_accuracy"],
        "test": m.get("test_accuracy"),
        "rungs": rungs,
        "plan": plan,
        "spent": ((spec.get("training") or {}).get("stages") or {}).get("ladder", {}).get("spent", []),
        "ladder": m.get("ladder"),
        "avx2": avx2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=ALL)
    ap.add_argument("--budget", action="append", help="one or more budgets, e.g. --budget 10m --budget 30m")
    ap.add_argument("--log", type=Path, default=Path("bench_ladder.jsonl"))
    ap.add_argument("--avx2", action="store_true", help="fp32, 2 threads, PyTorch held to AVX2 (no bf16)")
    ap.add_argument("--wide", action="store_true", help="default vs --features wide instead of --budget runs")
    args = ap.parse_args()
    budgets = args.budget or ["10m"]
    print(f"{machine_line()}; graft {git_rev()}" + ("; AVX2-only mode" if args.avx2 else ""), flush=True)
    if args.wide:
        return wide_table(args.datasets, args.avx2, args.log)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            for ds in args.datasets:
                r = run(ds, budget, Path(tmp), args.avx2)
                with args.log.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps(r), flush=True)
                rows.append(r)
    print(
        table(
            ["dataset", "budget", "stage 1 val", "kept", "val", "test", "wall s", "rungs"],
            [
                [
                    r["dataset"],
                    r["budget"],
                    f"{r['head_val']:.4f}",
                    r["kept"],
                    f"{r['val']:.4f}",
                    "" if r["test"] is None else f"{r['test']:.4f}",
                    r["wall_s"],
                    r["rungs"],
                ]
                for r in rows
            ],
        )
    )
    print(machine_line())


def wide_table(datasets: list[str], avx2: bool, log: Path) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in datasets:
            r = run_wide(ds, Path(tmp), avx2)
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)
            rows.append(r)
    print(
        table(
            ["dataset", "default val", "wide val", "default embed s", "wide: added embed s"],
            [
                [
                    r["dataset"],
                    f"{r['default_val']:.4f}",
                    f"{r['wide_val']:.4f}",
                    r["default_embed_s"],
                    r["wide_added_s"],
                ]
                for r in rows
            ],
        )
    )
    print(machine_line())


if __name__ == "__main__":
    main()
