"""A CSV manifest listing a folder's files gives exactly the folder's run: same splits, accuracy and predictions.

Writes ``OUT/DATASET.csv`` (``path,label,split``: every image of the dataset folder, its class
and split, rows in reverse order so that nothing depends on the order), runs ``graft train`` on
the folder and on the CSV (``--images DATASET``), and compares the two runs' validation accuracy
and every validation prediction. The dataset must have split folders (hymenoptera,
cats_dogs_filtered), or the manifest lists the seeded split graft made for the folder.

    python bench/manifest_equal.py hymenoptera
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
from _common import DATASETS, machine_line  # noqa: E402


def write_manifest(root: Path, out: Path) -> Path:
    from graft.data.scan import scan_dataset

    splits = scan_dataset(root)
    rows = [
        f"{r.path.relative_to(root).as_posix()},{splits.classes[r.label]},{split}"
        for split, recs in splits.splits.items()
        for r in recs
    ]
    manifest = out / f"{root.name}.csv"
    manifest.write_text("\n".join(["path,label,split", *reversed(rows)]) + "\n")
    return manifest


def train(data: list[str], out: Path, home: Path) -> tuple[dict, dict, float]:
    cmd = [sys.executable, "-m", "graft.cli.main", "train", *data, "--out", str(out), "--quiet", "--no-report"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "GRAFT_HOME": str(home)})
    wall = time.perf_counter() - t
    metrics = json.loads((out / "metrics.json").read_text())
    preds = json.loads((out / "val_predictions.json").read_text())
    return metrics, preds, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default="hymenoptera")
    args = ap.parse_args()
    root = DATASETS / args.dataset
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        manifest = write_manifest(root, tmp_p)
        folder_m, folder_p, folder_s = train([str(root)], tmp_p / "folder", tmp_p / "home_folder")
        csv_m, csv_p, csv_s = train([str(manifest), "--images", str(root)], tmp_p / "csv", tmp_p / "home_csv")
    by_path = lambda p: {Path(q).resolve(): row for q, row in zip(p["paths"], p["probs"])}  # noqa: E731
    a, b = by_path(folder_p), by_path(csv_p)
    same_images = set(a) == set(b)
    max_diff = max(abs(x - y) for k in a for x, y in zip(a[k], b.get(k, a[k]))) if same_images else float("nan")
    print(f"folder: val accuracy {folder_m['val_accuracy']:.4f} ({len(a)} images, {folder_s:.0f} s)")
    print(f"csv:    val accuracy {csv_m['val_accuracy']:.4f} ({len(b)} images, {csv_s:.0f} s)")
    print(f"same validation images: {same_images}; largest probability difference: {max_diff:.2e}")


if __name__ == "__main__":
    main()
