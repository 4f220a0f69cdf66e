"""Time to accuracy: ``graft train`` defaults vs the seeds' recipe vs fastai, one run.

Every column is a subprocess timed by wall clock, same EfficientNet-Lite0 weights
and same data; graft starts from a cold feature cache (a fresh GRAFT_HOME).

    python bench/time_to_accuracy.py                           # hymenoptera + cats_dogs_filtered
    python bench/time_to_accuracy.py --datasets hymenoptera --seed-only   # issue 2: graft vs seed recipe
    python bench/time_to_accuracy.py --skip-seed --skip-fastai

The fastai column runs in ``bench/.venv-fastai`` (``bench/setup_fastai.sh``); it is
skipped with a note when that environment is absent. The seed recipe on
cats_dogs_filtered takes long on a small CPU: ``--skip-seed`` or ``--seed-datasets``.
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
from _common import DATASETS, REPO, machine_line, table  # noqa: E402

FASTAI_PY = REPO / "bench" / ".venv-fastai" / "bin" / "python"
TARGETS = {"hymenoptera": (0.96, 10.0), "cats_dogs_filtered": (0.99, 45.0)}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, cwd=REPO)
    return time.perf_counter() - t, proc


def run_graft(name: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="graft-tta-") as tmp:
        out = Path(tmp) / "run"
        graft = Path(sys.executable).with_name("graft")
        cmd = [
            str(graft) if graft.exists() else "graft",
            "train",
            str(DATASETS / name),
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
        secs, proc = timed(cmd, {"GRAFT_HOME": str(Path(tmp) / "home")})
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        m = json.loads((out / "metrics.json").read_text())
        return {"seconds": secs, "val_acc": m["val_accuracy"], "timings": m.get("timings", {})}


def run_json(cmd: list[str]) -> dict:
    secs, proc = timed(cmd)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = secs
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["hymenoptera", "cats_dogs_filtered"])
    ap.add_argument("--skip-seed", action="store_true", help="skip the seeds' recipe column")
    ap.add_argument("--seed-datasets", nargs="*", default=["hymenoptera"], help="datasets that run the seed recipe")
    ap.add_argument("--skip-fastai", action="store_true")
    ap.add_argument("--seed-only", action="store_true", help="issue-2 mode: graft vs the seed recipe only")
    ap.add_argument("--graft-args", default="", help="extra arguments for graft train")
    args = ap.parse_args()
    if args.seed_only:
        args.skip_fastai, args.skip_seed = True, False
        args.seed_datasets = args.datasets

    print("# time to accuracy (wall seconds of each command; graft from a cold cache)")
    print(f"machine: {machine_line()}")
    rows, notes = [], []
    for name in args.datasets:
        g = run_graft(name, args.graft_args.split())
        if "error" in g:
            rows.append([name, "graft train (defaults)", "error", "", str(g["error"])])
        else:
            tgt = TARGETS.get(name)
            ok = (
                ""
                if tgt is None
                else (
                    "target met"
                    if g["val_acc"] >= tgt[0] and g["seconds"] <= tgt[1]
                    else f"target {tgt[0]} in {tgt[1]:.0f} s"
                )
            )
            t = g["timings"]
            detail = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if isinstance(v, (int, float)) and k != "fit")
            rows.append(
                [name, "graft train (defaults)", f"{g['seconds']:.1f}", f"{g['val_acc']:.4f}", f"{ok}; {detail}"]
            )
        if not args.skip_seed and name in args.seed_datasets:
            s = run_json([sys.executable, str(REPO / "bench" / "seed_recipe.py"), name])
            if "error" in s:
                rows.append([name, "seed recipe (plain PyTorch)", "error", "", str(s["error"])])
            else:
                rows.append(
                    [
                        name,
                        "seed recipe: 10 epochs head",
                        f"{s['head_seconds']:.1f}",
                        f"{s['head_val_acc']:.4f}",
                        "frozen base recomputed every epoch",
                    ]
                )
                rows.append(
                    [name, "seed recipe: + 5 epochs last block", f"{s['wall']:.1f}", f"{s['final_val_acc']:.4f}", ""]
                )
                if "error" not in g:
                    rows.append(
                        [
                            name,
                            "speed-up of graft",
                            f"{s['wall'] / g['seconds']:.1f}x",
                            f"{g['val_acc'] - s['final_val_acc']:+.4f}",
                            "vs the full seed recipe",
                        ]
                    )
        if not args.skip_fastai:
            if FASTAI_PY.exists():
                f = run_json([str(FASTAI_PY), str(REPO / "bench" / "_fastai_run.py"), name])
                if "error" in f:
                    rows.append([name, "fastai fine_tune(2)", "error", "", str(f["error"])])
                else:
                    rows.append(
                        [name, "fastai vision_learner + fine_tune(2)", f"{f['wall']:.1f}", f"{f['val_acc']:.4f}", ""]
                    )
            else:
                notes.append("fastai column skipped: run bench/setup_fastai.sh to create bench/.venv-fastai")
    print(table(["dataset", "method", "seconds", "val acc", "notes"], rows))
    for n in sorted(set(notes)):
        print(n)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
