"""Accuracy of `graft train` on the four shared datasets (the figures in RESULTS.md).

Runs the real CLI as a user would, once with defaults and (where asked) once with
--fine-tune, each in a fresh GRAFT_HOME unless --warm-cache, and prints a table beside
the floors from ../shared/datasets/README.md.

    python bench/accuracy.py                      # defaults on all four datasets
    python bench/accuracy.py --fine-tune flowers_kaggle_128 sign_digits
    python bench/accuracy.py --old-stage-1        # also `--features final` (stage 1 before multi-depth)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
FLOORS = {"hymenoptera": 0.948, "cats_dogs_filtered": 0.993, "flowers_kaggle_128": 0.723, "sign_digits": 0.944}


def run(dataset: str, extra: list[str], home: Path, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "graft.cli.main",
        "train",
        str(DATASETS / dataset),
        "--out",
        str(out),
        "--quiet",
        "--no-report",
        *extra,
    ]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "GRAFT_HOME": str(home)})
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    m = json.loads((out / "metrics.json").read_text())
    return {"wall": wall, **m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=list(FLOORS))
    ap.add_argument("--fine-tune", action="store_true", help="also run --fine-tune on each dataset")
    ap.add_argument("--warm-cache", action="store_true", help="share one GRAFT_HOME (features embedded once)")
    ap.add_argument(
        "--old-stage-1", action="store_true", help="also `--features final`: stage 1 before multi-depth features"
    )
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shared_home = Path(tmp) / "home"
        for ds in args.datasets:
            variants = [("defaults", [])] + ([("--fine-tune", ["--fine-tune"])] if args.fine_tune else [])
            if args.old_stage_1:
                variants.insert(0, ("--features final", ["--features", "final"]))
            for name, extra in variants:
                cold = not args.warm_cache and name != "--fine-tune"  # both stage-1 variants embed from scratch
                home = Path(tmp) / f"home-{ds}-{len(rows)}" if cold else shared_home
                m = run(ds, extra, home, Path(tmp) / f"{ds}-{name.strip('-')}")
                st = m["stages"]
                rows.append(
                    (
                        ds,
                        name,
                        st["head"]["val_accuracy"],
                        st.get("fine_tune", {}).get("val_accuracy"),
                        m["val_accuracy"],
                        FLOORS[ds],
                        m["wall"],
                        _features(m),
                    )
                )
                print(
                    f"{ds} {name}: val {m['val_accuracy']:.4f} (floor {FLOORS[ds]}) in {m['wall']:.1f} s; {rows[-1][-1]}",
                    flush=True,
                )
    print()
    print("| dataset | command | stage 1 (head) | fine-tuned | kept model | floor | wall s | features (train CV) |")
    print("|---|---|---|---|---|---|---|---|")
    for ds, name, head, ft, kept, floor, wall, feats in rows:
        ft_s = f"{ft:.4f}" if ft is not None else "-"
        print(
            f"| {ds} | `graft train {ds} {'' if name == 'defaults' else name}` | {head:.4f} | {ft_s} | {kept:.4f} | {floor} | {wall:.0f} | {feats} |"
        )


def _features(m: dict) -> str:
    f = m.get("features") or {}
    cv = ", ".join(f"{k} {v:.4f}" for k, v in (f.get("cv_accuracy") or {}).items())
    return ("multi-depth" if f.get("taps") else "final") + (f" ({cv})" if cv else "")


if __name__ == "__main__":
    main()
