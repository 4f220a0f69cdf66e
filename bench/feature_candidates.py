"""Frozen-feature candidates of issue 11, item 1, measured side by side on the shared datasets.

Each row is stage 1's linear head (C by cross-validation on the training rows, the
training images' mirror view included where graft's default uses it) fitted on one kind
of feature, scored on the same validation split graft uses (20 % stratified, seed 0,
where the dataset has no split):

- ``lite0 default``: graft's default, Lite0 with the multi-depth choice made by
  cross-validation on the training data (what ``graft train`` runs);
- ``lite0 final``: Lite0's final pooled features only;
- ``lite1 final``, ``lite2 final``: the other offline backbones, each at its own auto size;
- ``lite0+1+2``: the three final features side by side (one head on the concatenation);
- ``+ test-time mirror``: the default's head, its probabilities averaged over each
  validation image and its mirror image.

All features are fp32 (ONNX Runtime, what graft runs on a CPU unless bf16 is clearly
faster), so a stored bf16 verdict cannot make rows differ by precision. Validation decides
nothing here: the rows are measurements.

    python bench/feature_candidates.py [hymenoptera flowers_kaggle_128 sign_digits]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, git_rev, machine_line, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="*", default=["hymenoptera", "flowers_kaggle_128", "sign_digits"])
    args = ap.parse_args()

    import numpy as np
    import torch

    from graft.backbones.options import BackboneOptions
    from graft.data.options import SplitOptions
    from graft.features.dataset import SplitFeatures, embed_dataset, embed_split, scan_splits
    from graft.features.options import EmbedOptions
    from graft.network import HeadSpec
    from graft.training.fit.stages import _choose_and_fit_head, fit_head_stage
    from graft.training.head.feature_choice import select_columns
    from graft.training.head.options import HeadOptions

    print(f"{machine_line()}; graft {git_rev()}", flush=True)
    rows = []
    for name in args.datasets:
        splits = scan_splits(DATASETS / name, SplitOptions())
        classes = list(splits.classes)
        t0 = time.perf_counter()
        embs = {
            bb: embed_dataset(
                splits,
                BackboneOptions(bb),
                multi_depth=(bb == "efficientnet_lite0"),
                seed=0,
                embed=EmbedOptions(device="cpu", precision="fp32"),
            )
            for bb in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
        }
        secs = time.perf_counter() - t0
        lite0 = embs["efficientnet_lite0"]
        choice, default = _choose_and_fit_head(lite0, HeadOptions(), classes, 0)
        acc = {"lite0 default": default.metrics["accuracy"]}

        def final(emb):  # the last width columns: the final pooled features
            w = (emb.widths or [emb.train.X.shape[1]])[-1]
            cols = list(range(emb.train.X.shape[1] - w, emb.train.X.shape[1]))
            return select_columns(emb.train, cols), select_columns(emb.val, cols)

        def fit(train, val, classes=classes):
            spec = HeadSpec("linear", train.X.shape[1], len(classes))
            return fit_head_stage(spec, train, val, classes, seed=0).metrics["accuracy"]

        finals = {bb: final(e) for bb, e in embs.items()}
        for bb, (tr, va) in finals.items():
            acc[f"{bb.replace('efficientnet_', '')} final"] = fit(tr, va)
        same = all(np.array_equal(finals["efficientnet_lite0"][0].y, tr.y) for tr, _ in finals.values())
        if same:
            tr0, va0 = finals["efficientnet_lite0"]
            cat = [np.concatenate([f[i].X for f in finals.values()], axis=1) for i in (0, 1)]
            acc["lite0+1+2 final"] = fit(
                SplitFeatures(cat[0], tr0.y, tr0.groups, tr0.paths), SplitFeatures(cat[1], va0.y, va0.groups, va0.paths)
            )
        # Test-time mirror: the default head on the mirror view of each validation image, averaged.
        from graft.features.extract import FeatureRequest, bind_model_features
        from graft.features.options import EmbedOptions
        from graft.transforms.train import build_feature_view_transform

        pre = lite0.preprocessing
        embed = bind_model_features(
            lite0.backbone.model,
            pre,
            what=FeatureRequest(taps=lite0.taps, seed=0),
            options=EmbedOptions(device="cpu", precision="fp32"),
        )
        both = embed_split(
            lite0.data.splits["val"],
            embed,
            name="val",
            views=1,
            view_transform=lambda v, pre=pre: None if v == 0 else build_feature_view_transform(pre, v, 0),
        )
        both = select_columns(both, choice.columns)
        with torch.no_grad():
            p = torch.softmax(default.head(torch.from_numpy(both.X)).float(), 1).numpy()
        n = len(lite0.val.y)
        if len(p) == 2 * n:
            acc["lite0 default + test-time mirror"] = float(((p[:n] + p[n:]).argmax(1) == both.y[:n]).mean())
        rows.append((name, len(lite0.val.y), acc, secs))
        print(name, {k: round(v, 4) for k, v in acc.items()}, f"embedding {secs:.0f} s", flush=True)
    keys = list(dict.fromkeys(k for _, _, acc, _ in rows for k in acc))
    print(
        table(
            ["dataset", "val images", *keys],
            [[n, nv, *(f"{acc[k]:.4f}" if k in acc else "" for k in keys)] for n, nv, acc, _ in rows],
        )
    )
    print(machine_line())


if __name__ == "__main__":
    main()
