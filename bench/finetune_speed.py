"""Fine-tuning speed: a plain fp32 eager PyTorch loop vs graft's fine-tune step, same model, data and layers.

(a) what a user writes: torchvision transforms, a DataLoader, fp32 eager, the last
    block group (``blocks.6`` + ``conv_head`` + ``bn2``) and the head trainable, the
    whole network run forward every step;
(b) graft's ``train_network`` with ``FineTunePolicy(unfreeze=1)`` (the same layers),
    ``precision="auto"`` (measured speed plan; frozen-prefix activation cache);
(c) the same as (b) in fp32: the check that bf16 keeps the accuracy.

Training images/s are steady-state (a: epochs after the first; b, c: epochs after the
cached views are filled) and over the whole run (every epoch, plus graft's one-off
speed measurement). Validation accuracy after the same number of epochs. (a) runs
first and again last, and its faster run counts (the load of a shared machine drifts).

    python bench/finetune_speed.py [--train 128] [--val 100] [--epochs 4] [--device cuda]

Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, machine_line, table  # noqa: E402


def split_paths(root: Path, split: str, limit: int) -> tuple[list[str], list[int]]:
    """``limit`` images of ``root/split``, classes interleaved (a balanced prefix), with labels."""
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    per = [
        sorted(str(f) for f in (root / split / c).iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
        for c in classes
    ]
    out: list[tuple[str, int]] = []
    for i in range(max(map(len, per))):
        out += [(p[i], c) for c, p in enumerate(per) if i < len(p)]
    out = out[:limit]
    return [p for p, _ in out], [c for _, c in out]


def plain_loop(state: dict, paths, labels, vpaths, vlabels, args) -> dict[str, Any]:
    """The user's loop (PyTorch transfer-learning tutorial style); times each training epoch."""
    import timm
    import torch
    from PIL import Image
    from torchvision import transforms as T

    norm = T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose(
        [T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), norm]
    )

    class DS(torch.utils.data.Dataset):
        def __init__(self, ps, ys, tf):
            self.ps, self.ys, self.tf = ps, ys, tf

        def __len__(self):
            return len(self.ps)

        def __getitem__(self, i):
            return self.tf(Image.open(self.ps[i]).convert("RGB")), self.ys[i]

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    model.load_state_dict(state)
    model.reset_classifier(2)
    model.to(args.device)
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith(("blocks.6", "conv_head", "bn2", "classifier"))
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": head, "lr": args.lr}, {"params": body, "lr": args.lr * 0.1}], weight_decay=0.01)
    dl = torch.utils.data.DataLoader(
        DS(paths, labels, train_tf), batch_size=32, shuffle=True, num_workers=args.workers, drop_last=True
    )
    vdl = torch.utils.data.DataLoader(DS(vpaths, vlabels, val_tf), batch_size=64, num_workers=args.workers)
    secs, n_imgs, acc, t0 = [], [], 0.0, time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        t, n = time.perf_counter(), 0
        for x, y in dl:
            x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t)
        n_imgs.append(n)
        model.eval()
        ok = 0
        with torch.no_grad():
            for x, y in vdl:
                ok += int((model(x.to(args.device)).argmax(1).cpu() == y).sum())
        acc = ok / len(vpaths)
    wall = time.perf_counter() - t0
    return {"secs": secs, "n": n_imgs, "acc": acc, "steady_from": 1, "wall": wall, "label": "fp32 eager, whole forward"}


def graft_run(bb, paths, labels, vpaths, vlabels, args, precision: str) -> dict[str, Any]:
    """graft's train_network on the same layers; epoch timings from its progress tasks (training only)."""
    import numpy as np
    import torch

    from graft.network import GraftNet, HeadSpec, build_head
    from graft.progress import NullProgress
    from graft.training.finetune.policy import FineTunePolicy
    from graft.training.finetune.train import FineTuneConfig, TrainEnv, train_network
    from graft.transforms.train import build_train_transform

    spans: list[list[float]] = []
    msgs: list[str] = []

    class Timed:
        def __init__(self, total):
            self.total, self.done, self.t = total, 0, time.perf_counter()

        def advance(self, n=1):
            self.done += n

        def update(self, **kw):
            pass

        def close(self):
            spans.append([time.perf_counter() - self.t, self.done])

    class Prog(NullProgress):
        def task(self, description, total=None):
            return Timed(total) if "epoch" in description else super().task(description, total)

        def message(self, text):
            msgs.append(text)

    import copy

    torch.manual_seed(0)
    backbone = copy.deepcopy(bb.model)
    net = GraftNet(backbone, build_head(HeadSpec("linear", bb.num_features, 2)))
    pre = bb.preprocessing
    t0 = time.perf_counter()
    res = train_network(
        net,
        backbone,
        (paths, np.array(labels)),
        (vpaths, np.array(vlabels)),
        transforms=(build_train_transform(pre, strength="default"), pre),
        config=FineTuneConfig(
            epochs=args.epochs, lr=args.lr, batch_size=32, patience=args.epochs, prefix_views=args.views
        ),
        policy=FineTunePolicy(unfreeze=1, backbone_lr_ratio=0.1),
        env=TrainEnv(device=args.device, precision=precision, num_workers=args.graft_workers, progress=Prog()),
    )
    wall = time.perf_counter() - t0
    label = next((m.split("runs ", 1)[1] for m in msgs if m.startswith("fine-tuning runs")), "?")
    views = args.views if "cached views" in label else 0
    return {
        "secs": [s for s, _ in spans],
        "n": [n for _, n in spans],
        "acc": res.history[-1]["val_acc"],
        "steady_from": max(1, views),
        "wall": wall,
        "label": label,
    }


def best_epoch(r: dict[str, Any]) -> float:
    """img/s of the fastest steady-state epoch: the figure least disturbed by other tenants of the machine."""
    k = min(r["steady_from"], len(r["secs"]) - 1)
    return max(n / s for n, s in zip(r["n"][k:], r["secs"][k:]))


def rates(r: dict[str, Any]) -> tuple[float, float]:
    """(steady-state training img/s, training img/s over the whole call incl. validation and set-up)."""
    k = min(r["steady_from"], len(r["secs"]) - 1)
    return sum(r["n"][k:]) / sum(r["secs"][k:]), sum(r["n"]) / r["wall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="hymenoptera")
    ap.add_argument("--train", type=int, default=128, help="training images")
    ap.add_argument("--val", type=int, default=100, help="validation images")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--views", type=int, default=2, help="graft's cached augmented views (prefix_views)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop")
    ap.add_argument("--graft-workers", type=int, default=None, help="graft's decoder workers (default: graft's choice)")
    ap.add_argument("--no-fp32-check", action="store_true", help="skip (c), graft in fp32")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both paths run there)")
    ap.add_argument("--no-plain-repeat", action="store_true", help="run (a) once (default: also last, faster run kept)")
    args = ap.parse_args()

    os.environ.setdefault("GRAFT_HOME", tempfile.mkdtemp(prefix="graft-bench-"))
    import torch

    from graft.backbones import create_backbone
    from graft.config import resolve_device
    from graft.features.embedder import default_num_workers

    args.device = resolve_device(args.device)
    if args.graft_workers is None:
        args.graft_workers = default_num_workers()
    root = DATASETS / args.data
    paths, labels = split_paths(root, "train", args.train)
    vpaths, vlabels = split_paths(root, "val", args.val)
    bb = create_backbone("efficientnet_lite0")
    print(
        f"# fine-tune speed: {len(paths)} train / {len(vpaths)} val images of {args.data}, "
        f"EfficientNet-Lite0 {bb.preprocessing.input_size}, {args.epochs} epochs, batch 32"
    )
    print(f"machine: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs = {"(a) plain PyTorch loop": plain_loop(bb.model.state_dict(), paths, labels, vpaths, vlabels, args)}
    runs["(b) graft train_network, precision auto"] = graft_run(bb, paths, labels, vpaths, vlabels, args, "auto")
    if not args.no_fp32_check:
        runs["(c) graft train_network, fp32"] = graft_run(bb, paths, labels, vpaths, vlabels, args, "fp32")
    if not args.no_plain_repeat:  # the machine's load drifts: (a) runs again last, and its faster run counts
        again = plain_loop(bb.model.state_dict(), paths, labels, vpaths, vlabels, args)
        first = runs["(a) plain PyTorch loop"]
        print(
            f"(a) first run: epoch training seconds {[round(s, 1) for s in first['secs']]}, wall {first['wall']:.1f} s"
        )
        if rates(again)[0] > rates(first)[0]:
            runs["(a) plain PyTorch loop"] = again
        runs["(a) plain PyTorch loop"]["best"] = max(best_epoch(first), best_epoch(again))
    a_steady, a_whole = rates(runs["(a) plain PyTorch loop"])
    a_best = runs["(a) plain PyTorch loop"].get("best") or best_epoch(runs["(a) plain PyTorch loop"])
    rows = []
    for name, r in runs.items():
        steady, whole = rates(r)
        best = r.get("best") or best_epoch(r)
        rows.append(
            [
                name,
                r["label"],
                f"{steady:.1f}",
                f"{steady / a_steady:.2f}x",
                f"{best:.1f}",
                f"{best / a_best:.2f}x",
                f"{whole:.1f}",
                f"{whole / a_whole:.2f}x",
                f"{r['acc']:.3f}",
            ]
        )
    heads = [
        "path",
        "runs",
        "steady train img/s",
        "vs (a)",
        "best epoch img/s",
        "vs (a)",
        "end-to-end img/s",
        "vs (a)",
        "val acc",
    ]
    print(table(heads, rows))
    print("end-to-end: training images / wall time of all epochs incl. validation and graft's one-off speed plan")
    for name, r in runs.items():
        print(f"{name}: epoch training seconds {[round(s, 1) for s in r['secs']]}, wall {r['wall']:.1f} s")
    b_steady, _ = rates(runs["(b) graft train_network, precision auto"])
    print(f"target: (b) >= 1.8x (a) steady-state: {'met' if b_steady >= 1.8 * a_steady else 'MISSED'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
