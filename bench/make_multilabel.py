"""A real-image multi-label benchmark from sign_digits: 2x2 mosaics labelled with the digits they show.

Each mosaic puts four hand-sign photos in a 2x2 grid (200x200 px); its labels are the set of
digits in it (1 to 4 labels, "3|7"). Source photos are split first (80% / 20%, per digit,
seeded), so no photo appears in both a training and a validation mosaic. Writes
``OUT/images/*.jpg`` and ``OUT/labels.csv`` (``path,labels,split``), the layout of a
multi-label manifest, and prints the label counts.

    python bench/make_multilabel.py /tmp/sign_mosaics               # 1,600 train + 400 val mosaics
    python bench/make_multilabel.py /tmp/small --train 120 --val 60  # what the tests use
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS  # noqa: E402

TILE = 100


def source_split(root: Path, seed: int) -> dict[str, list[tuple[Path, str]]]:
    """(photo, digit) pairs per part: 80% of each digit's photos for train mosaics, the rest for val."""
    parts: dict[str, list[tuple[Path, str]]] = {"train": [], "val": []}
    for digit in sorted(p.name for p in root.iterdir() if p.is_dir()):
        photos = sorted((root / digit).iterdir())
        random.Random(f"mosaic:{seed}:{digit}").shuffle(photos)
        cut = int(len(photos) * 0.8)
        parts["train"] += [(p, digit) for p in photos[:cut]]
        parts["val"] += [(p, digit) for p in photos[cut:]]
    return parts


def mosaic(tiles: list[tuple[Path, str]]) -> Image.Image:
    img = Image.new("RGB", (2 * TILE, 2 * TILE))
    for i, (path, _) in enumerate(tiles):
        with Image.open(path) as tile:
            img.paste(tile.convert("RGB").resize((TILE, TILE)), ((i % 2) * TILE, (i // 2) * TILE))
    return img


def build(out: Path, n_train: int = 1600, n_val: int = 400, seed: int = 0, root: Path | None = None) -> Path:
    """Write the mosaics and ``labels.csv`` under ``out``; returns the manifest's path."""
    root = root or DATASETS / "sign_digits"
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = ["path,labels,split"]
    for split, n in (("train", n_train), ("val", n_val)):
        pool = source_split(root, seed)[split]
        for i in range(n):
            tiles = [rng.choice(pool) for _ in range(4)]
            name = f"images/{split}_{i:04d}.jpg"
            mosaic(tiles).save(out / name, quality=92)
            labels = "|".join(sorted({digit for _, digit in tiles}))
            rows.append(f"{name},{labels},{split}")
    manifest = out / "labels.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=1600)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    manifest = build(args.out, args.train, args.val, args.seed)
    rows = [line.split(",") for line in manifest.read_text().splitlines()[1:]]
    per_label = Counter(d for _, labels, _ in rows for d in labels.split("|"))
    sizes = Counter(len(labels.split("|")) for _, labels, _ in rows)
    print(
        f"{manifest}: {len(rows)} mosaics; labels per image {dict(sorted(sizes.items()))}; per digit {dict(sorted(per_label.items()))}"
    )


if __name__ == "__main__":
    main()
