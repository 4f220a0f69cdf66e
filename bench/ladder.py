"""The transfer ladder under a budget on the shared datasets (the ``--budget`` rows of RESULTS.md).

Runs ``graft train DATA --budget B`` through the real CLI, each run in a fresh GRAFT_HOME
(cold feature cache and speed plans: what a new user's first run pays), and prints one row
per run: the rung kept, validation accuracy (and test where the dataset has a test split),
the ladder's rungs, and wall time against the budget. Appends each row to ``--log`` (JSON
lines) as it finishes, so a long series can be read while it runs.

    python bench/ladder.py --budget 10m hymenoptera sign_digits
    python bench/ladder.py --budget 30m flowers_kaggle_128 sign_digits
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


def run(dataset: str, budget: str, tmp: Path) -> dict:
    out, home = tmp / f"{dataset}-{budget}", tmp / f"home-{dataset}-{budget}"
    cmd = [
        sys.executable,
        "-m",
        "graft.cli.main",
        "train",
        str(DATASETS / dataset),
        "--budget",
        budget,
        "--out",
        str(out),
        "--no-report",
        "--quiet",
    ]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GRAFT_HOME": str(home)})
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
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
        "ladder": m.get("ladder"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=ALL)
    ap.add_argument("--budget", action="append", help="one or more budgets, e.g. --budget 10m --budget 30m")
    ap.add_argument("--log", type=Path, default=Path("bench_ladder.jsonl"))
    args = ap.parse_args()
    budgets = args.budget or ["10m"]
    print(f"{machine_line()}; graft {git_rev()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in budgets:
            for ds in args.datasets:
                r = run(ds, budget, Path(tmp))
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


if __name__ == "__main__":
    main()
