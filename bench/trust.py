"""Calibration and "unknown" on the shared datasets (the Trust figures in RESULTS.md).

For each dataset: `graft train` with defaults (a fresh GRAFT_HOME per dataset unless
--warm-cache), then validation ECE before and after temperature scaling from
metrics.json, the share of the validation split the model calls "unknown", and the share
of every image of each *other* dataset it calls "unknown".

    python bench/trust.py                                   # all four datasets
    python bench/trust.py hymenoptera cats_dogs_filtered    # only these models
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

import numpy as np

from _common import DATASETS, machine_line, table

NAMES = ["hymenoptera", "cats_dogs_filtered", "flowers_kaggle_128", "sign_digits"]


def _train(ds: str, out: Path, home: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "graft.cli.main",
        "train",
        str(DATASETS / ds),
        "--out",
        str(out),
        "--quiet",
        "--no-report",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GRAFT_HOME": str(home)})
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads((out / "metrics.json").read_text())


def _unknown_rate(model: Path, images: list[Path], home: Path) -> float:
    os.environ["GRAFT_HOME"] = str(home)
    import graft

    rows = graft.load(model).predict(images)
    known = [r["known"] for r in rows if "known" in r]
    return float(1 - np.mean(known)) if known else float("nan")


def _ece_floor(pred_file: Path, draws: int = 200) -> float:
    """Mean ECE of a perfectly calibrated model with these confidences (labels drawn from its own probabilities).

    ECE over a finite validation split is biased upwards: even a perfect model scores about
    this much, so a measured ECE near it cannot be told apart from perfect calibration.
    """
    from graft.metrics import expected_calibration_error

    probs = np.asarray(json.loads(pred_file.read_text())["probs"], np.float64)
    probs /= probs.sum(1, keepdims=True)
    rng = np.random.default_rng(0)
    cum = probs.cumsum(1)
    sims = []
    for _ in range(draws):
        y = (rng.random((len(probs), 1)) > cum).sum(1).clip(0, probs.shape[1] - 1)
        sims.append(expected_calibration_error(probs, y)[0])
    return float(np.mean(sims))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="*", default=NAMES)
    ap.add_argument("--warm-cache", action="store_true")
    ap.add_argument(
        "--ood-models",
        nargs="*",
        default=["hymenoptera", "cats_dogs_filtered"],
        help="models scored on every image of the other datasets (the issue's targets)",
    )
    args = ap.parse_args()
    from graft.data.files import walk_image_files

    all_images = {ds: walk_image_files(DATASETS / ds)[0] for ds in NAMES}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets:
            home = Path(tmp) / ("home" if args.warm_cache else f"home-{ds}")
            t0 = time.perf_counter()
            m = _train(ds, Path(tmp) / ds, home)
            val = [Path(p) for p in json.loads((Path(tmp) / ds / "val_predictions.json").read_text())["paths"]]
            others = [o for o in NAMES if o != ds] if ds in args.ood_models else []
            rates = {o: _unknown_rate(Path(tmp) / ds / "model", all_images[o], home) for o in others}
            rows.append(
                [
                    ds,
                    f"{m['val_accuracy']:.4f}",
                    f"{m.get('val_ece_uncalibrated') or float('nan'):.4f}",
                    f"{m['val_ece']:.4f}",
                    f"{_ece_floor(Path(tmp) / ds / 'val_predictions.json'):.4f}",
                    f"{m.get('temperature') or float('nan'):.3f}",
                    f"{_unknown_rate(Path(tmp) / ds / 'model', val, home):.3f}",
                    ", ".join(f"{o} {r:.3f}" for o, r in rates.items()),
                    f"{time.perf_counter() - t0:.0f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    print(f"\n{machine_line()}\n")
    print(
        table(
            [
                "model",
                "val acc",
                "val ECE before",
                "val ECE after",
                "ECE floor",
                "T",
                "val unknown",
                "other datasets unknown",
                "s",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
