"""The fast paths give the same model: engines agree, frozen layers record no graph."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from _datasets import shared_dataset
from graft.features import Embedder
from graft.features.autotune import cpu_supports_fast_bf16
from graft.features.engines import onnxruntime_available
from graft.features.options import EmbedOptions
from graft.training.head.linear_probe import fit_linear_head


def test_frozen_prefix_records_no_autograd_graph() -> None:
    """Fine-tuning the last block: the frozen blocks before it build no graph."""
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in list(net.blocks[-1].parameters()) + list(net.classifier.parameters()):
        p.requires_grad_(True)
    seen = {}
    net.blocks[-2].register_forward_hook(lambda m, i, o: seen.__setitem__("prefix", o))
    net.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("last", o))
    out = net(torch.randn(2, 3, 64, 64))
    assert seen["prefix"].grad_fn is None and not seen["prefix"].requires_grad
    assert seen["last"].grad_fn is not None and out.requires_grad


def _subset(name: str):
    """cats_dogs_filtered, 200 train / 500 val images: 0.5 point is 2.5 val images."""
    from graft.data.scan import scan_dataset

    splits = scan_dataset(shared_dataset(name), seed=0)
    splits.splits["train"] = splits.splits["train"][::10]
    splits.splits["val"] = splits.splits["val"][::2]
    return splits


def _probe_accuracy(emb: Embedder, splits, transform=None) -> tuple[float, np.ndarray]:
    feats = {}
    for split in ("train", "val"):
        recs = splits.splits[split]
        res = emb.embed_paths([str(r.path) for r in recs], transform=transform)
        order = np.argsort(res.ok_indices)
        y = np.array([recs[i].label for i in res.ok_indices[order]])
        feats[split] = (res.features[order], y)
    fit = fit_linear_head(*feats["train"], len(splits.classes), C=0.1)
    Xv, yv = feats["val"]
    return float((fit.logits(Xv).argmax(1) == yv).mean()), Xv


@pytest.fixture(scope="module")
def fp32_reference():
    """(splits, backbone, accuracy, val features) of plain fp32 eager PyTorch with full float preprocessing:
    the reference both probes compare with, embedded once (700 images)."""
    from graft.backbones import create_backbone

    splits = _subset("cats_dogs_filtered")
    bb = create_backbone("efficientnet_lite0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRAFT_RUNTIME", "torch")
        ref = Embedder(bb.model, bb.preprocessing, EmbedOptions(device="cpu", precision="fp32"))
        acc, Xv = _probe_accuracy(ref, splits, transform=bb.preprocessing)
    assert acc > 0.9
    return splits, bb, acc, Xv


@pytest.mark.integration
def test_fast_path_linear_probe_matches_fp32_eager(monkeypatch, fp32_reference) -> None:
    """Default (auto) runtime and preprocessing vs plain fp32 eager PyTorch: within 0.5 point."""
    splits, bb, acc_ref, Xr = fp32_reference
    monkeypatch.delenv("GRAFT_RUNTIME", raising=False)
    fast = Embedder(bb.model, bb.preprocessing, EmbedOptions(device="cpu", precision="auto"))
    acc_fast, Xf = _probe_accuracy(fast, splits)
    assert abs(acc_fast - acc_ref) <= 0.005 + 1e-9, (fast.runtime, acc_fast, acc_ref)
    if fast.precision == "fp32":
        cos = (Xf * Xr).sum(1) / (np.linalg.norm(Xf, axis=1) * np.linalg.norm(Xr, axis=1))
        assert cos.min() > 0.999, (fast.runtime, cos.min())
    if onnxruntime_available() and fast.precision == "fp32":
        assert fast.runtime == "onnxruntime-fp32"


@pytest.mark.integration
@pytest.mark.skipif(
    not (cpu_supports_fast_bf16() or torch.cuda.is_available()),
    reason="bf16 is emulated on this CPU (no AMX/AVX512-BF16): about 10x slower, never chosen here",
)
def test_bf16_linear_probe_matches_fp32(monkeypatch, fp32_reference) -> None:
    """bf16 with the default preprocessing vs the fp32 eager reference (on the CPU): within 0.5 point."""
    splits, bb, acc_fp32, _ = fp32_reference
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setenv("GRAFT_RUNTIME", "torch")
    acc_bf16, _ = _probe_accuracy(
        Embedder(bb.model, bb.preprocessing, EmbedOptions(device=device, precision="bf16")), splits
    )
    assert abs(acc_bf16 - acc_fp32) <= 0.005 + 1e-9
