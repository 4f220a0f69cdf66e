"""The seeds' recipe written plainly in PyTorch (the baseline graft is measured against).

Frozen EfficientNet-Lite0 base inside the model, recomputed every epoch; global
average pooling + dropout + dense; Adam 1e-3 for 10 epochs; then the last block
unfrozen at 1e-4 for 5 more. Same weights (graft.backbones.create_backbone) and the
same train/val split as ``graft train`` (graft.data.scan_dataset, seed 0).

    python bench/seed_recipe.py hymenoptera        # one run, prints JSON

Also used as the issue-2 benchmark through ``bench/time_to_accuracy.py --seed-only``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS  # noqa: E402


def run(name: str, epochs: int = 10, fine_epochs: int = 5, batch_size: int = 32, workers: int = 1) -> dict:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from graft.backbones import create_backbone
    from graft.data.decode import load_image
    from graft.data.scan import scan_dataset

    t0 = time.perf_counter()
    torch.manual_seed(0)
    splits = scan_dataset(DATASETS / name, seed=0)
    bb = create_backbone("efficientnet_lite0")
    pre = bb.preprocessing

    class DS(Dataset):
        def __init__(self, recs):
            self.recs = recs

        def __len__(self):
            return len(self.recs)

        def __getitem__(self, i):
            r = self.recs[i]
            return torch.from_numpy(pre(load_image(r.path))), r.label

    train = DataLoader(DS(splits.splits["train"]), batch_size=batch_size, shuffle=True, num_workers=workers)
    val = DataLoader(DS(splits.splits["val"]), batch_size=batch_size, num_workers=workers)
    base = bb.model
    for p in base.parameters():
        p.requires_grad_(False)
    model = nn.Sequential(base, nn.Dropout(0.2), nn.Linear(bb.num_features, len(splits.classes)))

    def evaluate() -> float:
        model.eval()
        ok = n = 0
        with torch.no_grad():
            for x, y in val:
                ok += int((model(x).argmax(1) == y).sum())
                n += len(y)
        return ok / n

    def fit(params, lr: float, n_epochs: int) -> list[float]:
        opt = torch.optim.Adam(params, lr=lr)
        accs = []
        for _ in range(n_epochs):
            model.train()
            base.eval()  # frozen BN statistics, as Keras' trainable=False base
            for x, y in train:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            accs.append(evaluate())
        return accs

    head_accs = fit(model[2].parameters(), 1e-3, epochs)
    t_head = time.perf_counter() - t0
    last = base.blocks[-1]
    for p in last.parameters():
        p.requires_grad_(True)
    ft_accs = fit(list(last.parameters()) + list(model[2].parameters()), 1e-4, fine_epochs) if fine_epochs else []
    return {
        "dataset": name,
        "head_val_acc": head_accs[-1],
        "final_val_acc": (ft_accs or head_accs)[-1],
        "head_seconds": t_head,
        "seconds": time.perf_counter() - t0,
        "val_acc_per_epoch": head_accs + ft_accs,
        "n_train": len(splits.splits["train"]),
        "n_val": len(splits.splits["val"]),
        "np": np.__version__,
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "hymenoptera")))
