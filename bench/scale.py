"""Embedding and fine-tuning throughput with 1 and 2 processes (``graft train --devices N``), in one run.

Synthetic JPEGs (2 classes, 320x240, train/ and val/) are generated once. A warm-up
``graft embed`` exports the backbone to ONNX once, so no measured run pays for it;
each measured run then starts from an empty feature cache and runs

    graft train DATA --fine-tune --epochs 1 --input-size native --augment-views 0 --devices N

in a child process; the figures are graft's own timings from ``metrics.json`` and
``history.json``: ``embed`` (train + val embedded into the cache; with N processes the
time until every rank's share is merged) and the fine-tuning epoch (train step +
validation, DDP with the same global batch).

    python bench/scale.py [--images 320] [--processes 1 1t1 2] [--root /tmp/graft-bench-scale]

``1t1`` is one process with one thread (``OMP_NUM_THREADS=1``): on a 2-core machine it
separates what a second process adds from what leaving OpenMP a single thread does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, git_rev, machine_line, table  # noqa: E402


def make_images(root: Path, n: int) -> Path:
    """root/data-n/{train,val}/{a,b}/*.jpg (two thirds train), generated once."""
    import numpy as np
    from PIL import Image

    out = root / f"data-{n}"
    if (out / ".done").exists():
        return out
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        cls = i % 2
        base = np.stack([xx * (0.5 + cls * 0.3), yy * (0.8 - cls * 0.3), (xx + yy) * 0.3], -1)
        img = np.clip(base + rng.normal(0, 20, (1, 1, 3)) + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        d = out / ("train" if (i // 2) % 3 else "val") / "ab"[cls]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)
    (out / ".done").touch()
    return out


def graft(args: list[object], home: Path, threads: int | None = None) -> float:
    """Run ``python -m graft ARGS`` with GRAFT_HOME=home (and OMP_NUM_THREADS=threads); wall seconds."""
    env = {**os.environ, "GRAFT_HOME": str(home), "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "graft", *map(str, args)], env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"graft {' '.join(map(str, args))} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--processes", nargs="+", default=["1", "1t1", "2"], help="N, or NtK: N processes of K threads")
    ap.add_argument("--root", type=Path, default=Path("/tmp/graft-bench-scale"))
    a = ap.parse_args()
    data, home = make_images(a.root, a.images), a.root / "home"
    common = ["--backbone", a.backbone, "--input-size", "native", "--augment-views", "0", "--no-report", "-q"]
    graft(["embed", data, "--out", a.root / "warmup.npz", "--backbone", a.backbone, "--input-size", "native"], home)
    rows = []
    for label in a.processes:
        n, _, k = label.partition("t")
        shutil.rmtree(home / "features", ignore_errors=True)  # cold feature cache; the ONNX export stays
        run = a.root / f"run-{label}"
        shutil.rmtree(run, ignore_errors=True)
        args = ["train", data, "--out", run, "--fine-tune", "--epochs", 1, "--devices", n, *common]
        wall = graft(args, home, threads=int(k) if k else None)
        m = json.loads((run / "metrics.json").read_text())
        epoch = json.loads((run / "history.json").read_text())["fine_tune"][0]
        n_train, n_val = (
            sum(c.values()) if isinstance(c, dict) else int(c) for c in map(m["counts"].get, ("train", "val"))
        )
        emb_s, ft_s = m["timings"]["embed"], epoch["seconds"]
        rows.append(
            [
                label.replace("t", " x ") + (" threads" if k else ""),
                f"{(n_train + n_val) / emb_s:.1f}",
                f"{emb_s:.1f}",
                f"{n_train / ft_s:.1f}",
                f"{ft_s:.1f}",
                f"{m['val_accuracy']:.3f}",
                f"{wall:.0f}",
            ]
        )
    base = next((r for r in rows if r[0] == "1"), rows[0])  # "vs 1": against one process, whatever the order
    base_e, base_f = float(base[1]), float(base[3])
    for r in rows:
        r.insert(2, f"{float(r[1]) / base_e:.2f}x")
        r.insert(5, f"{float(r[4]) / base_f:.2f}x")
    print(f"graft {git_rev()}; {machine_line()}")
    print(f"{a.images} synthetic 320x240 JPEGs, {a.backbone} at its native size, 1 fine-tuning epoch (global batch 32)")
    print(
        table(
            ["processes", "embed img/s", "vs 1", "embed s", "fine-tune img/s", "vs 1", "epoch s", "val acc", "wall s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
