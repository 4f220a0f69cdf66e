"""Embedding throughput: naive PyTorch vs graft end to end vs graft's bound.

(a) fp32 eager PyTorch with a plain torchvision DataLoader, as a user would write it;
(b) graft's embedding path from files (``Embedder.embed_paths``, no feature cache);
(c) the backbone alone on pre-decoded tensors with graft's runtime (the bound).

    python bench/throughput.py [--data hymenoptera] [--limit 400] [--repeats 2]

Prints a Markdown table. Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, machine_line, table  # noqa: E402


def image_paths(name: str, limit: int) -> list[str]:
    from graft.data.scan import collect_image_paths

    paths, _ = collect_image_paths([DATASETS / name])
    return [str(p) for p in paths][:limit]


def naive(model, paths: list[str], batch_size: int, workers: int) -> float:
    """What a user writes: torchvision transforms, DataLoader, fp32 eager, no_grad."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return tf(Image.open(paths[i]).convert("RGB"))

    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        for x in torch.utils.data.DataLoader(DS(), batch_size=batch_size, num_workers=workers):
            model(x)
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="hymenoptera", help="dataset under ../shared/datasets")
    ap.add_argument("--limit", type=int, default=400, help="images used")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs per column")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--naive-workers", type=int, default=2, help="DataLoader workers of the naive column")
    args = ap.parse_args()

    os.environ.setdefault("GRAFT_HOME", tempfile.mkdtemp(prefix="graft-bench-"))
    import numpy as np
    import torch

    from graft.backbones import create_backbone
    from graft.data.decode import load_image
    from graft.features import Embedder
    from graft.features.options import EmbedOptions

    paths = image_paths(args.data, args.limit)
    bb = create_backbone("efficientnet_lite0")
    pre = bb.preprocessing
    print(f"# throughput: {len(paths)} images of {args.data}, EfficientNet-Lite0 {pre.input_size}")
    print(f"machine: {machine_line()}")

    t = time.perf_counter()
    emb = Embedder(bb.model, pre, EmbedOptions(device="cpu", precision=args.precision))
    emb.engine(len(paths))  # builds (exports) the engine: a one-off per weights, cached on disk
    setup_s = time.perf_counter() - t
    runtime = emb.runtime

    rows = []
    # (a) naive
    import timm

    naive_model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    naive_model.load_state_dict(bb.model.state_dict())
    a = max(naive(naive_model, paths, 32, args.naive_workers) for _ in range(args.repeats))
    # (b) end to end from files, fresh Embedder each time (engine from the on-disk cache)
    b_runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        e = Embedder(bb.model, pre, EmbedOptions(device="cpu", precision=args.precision))
        res = e.embed_paths(paths)
        b_runs.append(len(res.ok_indices) / (time.perf_counter() - t))
    b = max(b_runs)
    # (c) the bound: pre-decoded, pre-normalised batches through the same engine
    crops = [pre(load_image(p, draft_size=pre.decode_size)) for p in paths]
    batches = [torch.from_numpy(np.stack(crops[i : i + emb.batch_size])) for i in range(0, len(crops), emb.batch_size)]
    c_runs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for x in batches:
            emb.forward(x)
        c_runs.append(len(crops) / (time.perf_counter() - t))
    c = max(c_runs)
    rows = [
        ["(a) naive fp32 eager + torchvision DataLoader", f"{a:.1f}", "1.00x", ""],
        [f"(b) graft Embedder.embed_paths ({runtime})", f"{b:.1f}", f"{b / a:.2f}x", f"{b / c:.2f} of (c)"],
        [f"(c) graft runtime on pre-decoded tensors ({runtime})", f"{c:.1f}", f"{c / a:.2f}x", ""],
    ]
    print(table(["path", "images/s", "vs (a)", "note"], rows))
    print(
        f"engine set-up (ONNX export + session, once per weights, cached): {setup_s:.1f} s; "
        f"threads {torch.get_num_threads()}, decoder workers {emb.num_workers}, batch {emb.batch_size}"
    )
    print(
        f"targets: (b) >= 5x (a): {'met' if b >= 5 * a else 'MISSED'}; (b) >= 0.85 (c): {'met' if b >= 0.85 * c else 'MISSED'}"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
