"""Where embedding time goes on a device: the first batch of each shape, the engine, the decoders, a whole pass.

Prints, in one process: the engine's time for batches of 64, 51 and 27 rows (the first
of each shape pays its one-off planning; on CUDA cuDNN plans per shape), the steady
engine and decoder throughputs, and two passes of ``Embedder.embed_paths`` over DATA.

    python bench/embed_warmup.py ../shared/datasets/sign_digits --device cuda
    python bench/embed_warmup.py ../shared/datasets/hymenoptera/val --device cpu

``--cold`` runs only the two passes, so the first pass pays every shape's planning: what stage 1 pays.
Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder of images (searched recursively)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--cold", action="store_true", help="only the two embed_paths passes")
    args = ap.parse_args()

    from graft.backbones import create_backbone
    from graft.backbones.taps import candidate_taps
    from graft.features.embedder import Embedder, ImageArrayDataset, batches, collate_skip_failed, make_loader
    from graft.features.options import EmbedOptions

    paths = sorted(str(p) for p in args.data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    print(f"{machine_line()}; {len(paths)} images; device {args.device}", flush=True)
    bb = create_backbone("efficientnet_lite0")
    opts = EmbedOptions(device=args.device, batch_size=args.batch, num_workers=args.workers)
    emb = Embedder(bb.model, bb.preprocessing, opts, taps=candidate_taps(bb.model))
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn: Callable[[], object]) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    print(f"engine built in {timed(lambda: emb.engine(len(paths))):.2f} s ({emb.runtime})", flush=True)
    if not args.cold:
        size = bb.preprocessing.input_size
        x = torch.randint(0, 255, (args.batch, size[0], size[1], 3), dtype=torch.uint8)
        rows = [args.batch] * 3 + [args.batch * 4 // 5] * 2 + [args.batch * 27 // 64] * 2 + [args.batch]  # 64: 51, 27
        for n in rows:
            print(f"forward of {n} rows: {1000 * timed(functools.partial(emb.forward, x[:n])):.1f} ms", flush=True)
        dt = timed(lambda: [emb.forward(x) for _ in range(20)])
        print(f"steady forward (uint8 in): {20 * args.batch / dt:.0f} img/s", flush=True)
        ds = ImageArrayDataset(paths, bb.preprocessing.crop, bb.preprocessing.decode_size)
        loader = make_loader(
            ds,
            batch_size=args.batch,
            num_workers=args.workers,
            collate_fn=collate_skip_failed,
            pin_memory=cuda,
            prefetch_factor=4 if args.workers else None,
        )
        t, k = time.perf_counter(), 0
        for idx, _batch, _bad in batches(loader):
            k += len(idx)
        print(f"decoders alone ({args.workers} workers): {k / (time.perf_counter() - t):.0f} img/s", flush=True)
    for label in ("first", "second"):
        dt = timed(lambda: emb.embed_paths(paths))
        print(f"embed_paths, {label} pass: {dt:.2f} s, {len(paths) / dt:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
