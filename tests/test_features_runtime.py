"""Embedding runtime: engines agree, static padding is exact, choices are cached."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from graft.backbones.surgery import static_same_padding
from graft.config import graft_home
from graft.features import Embedder, autotune, choose_precision, engines
from graft.features.autotune import resolve_cpu_auto
from graft.features.engines import OrtEngine, TorchEngine, build_engine, build_ort_engine, onnxruntime_available
from graft.features.options import EmbedOptions
from graft.transforms.eval import Preprocessing

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime not installed")


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()


@pytest.fixture
def pre() -> Preprocessing:
    return Preprocessing(input_size=(64, 64))


def _images(root: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = root / f"im{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (40 + i, 70, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("size", [(224, 224), (225, 131)])
def test_static_same_padding_is_exact_and_shares_weights(size: tuple[int, int]) -> None:
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    net = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2), nn.ReLU(), Conv2dSame(8, 8, 5, stride=2, groups=8), Conv2dSame(8, 4, 1)
    ).eval()
    fixed = static_same_padding(net, size)
    assert not any(isinstance(m, Conv2dSame) for m in fixed.modules())
    assert any(isinstance(m, Conv2dSame) for m in net.modules())  # original untouched
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), net(x), rtol=0, atol=0)
    assert fixed[0][1].weight is net[0].weight  # shared, not copied


def test_eval_crop_normalised_in_bulk_equals_float_preprocessing(pre: Preprocessing, tmp_path: Path, tiny) -> None:
    from graft.data.decode import load_image

    img = load_image(_images(tmp_path, 1)[0])
    emb = Embedder(tiny, pre, EmbedOptions(device="cpu", precision="fp32", num_workers=0))
    got = emb.normalize(torch.from_numpy(np.array(pre.crop(img)))[None])
    ref = torch.from_numpy(pre(img))[None]
    # Every path crops with Preprocessing.crop; only the float arithmetic of normalising differs.
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)


@needs_ort
def test_ort_engine_matches_torch(tiny) -> None:
    ort = build_ort_engine(tiny, (64, 64), key="tiny-test")
    assert isinstance(ort, OrtEngine)
    x = torch.randn(5, 3, 64, 64)
    ref = TorchEngine(tiny, "cpu", "fp32", input_size=(64, 64))(x)
    torch.testing.assert_close(ort(x), ref, rtol=1e-4, atol=1e-4)
    # second build reads the cached export
    cached = list((Path(graft_home()) / "runtime" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    assert engines.onnx_cached("tiny-test", (64, 64), False)


@needs_ort
def test_embedder_engines_agree_end_to_end(tiny, pre: Preprocessing, tmp_path: Path, monkeypatch) -> None:
    paths = _images(tmp_path, 12)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.insert(3, tmp_path / "bad.jpg")
    monkeypatch.setenv("GRAFT_RUNTIME", "onnxruntime")
    fast = Embedder(tiny, pre, EmbedOptions(device="cpu", precision="auto", batch_size=4, num_workers=1))
    a = fast.embed_paths(paths)
    assert fast.runtime == "onnxruntime-fp32"
    monkeypatch.setenv("GRAFT_RUNTIME", "torch")
    slow = Embedder(tiny, pre, EmbedOptions(device="cpu", precision="fp32", batch_size=5, num_workers=0))
    b = slow.embed_paths(paths)
    assert slow.runtime.startswith("torch-fp32")
    assert [f.path for f in a.failed] == [str(tmp_path / "bad.jpg")] == [f.path for f in b.failed]
    oa, ob = np.argsort(a.ok_indices), np.argsort(b.ok_indices)
    np.testing.assert_array_equal(a.ok_indices[oa], np.array([i for i in range(13) if i != 3]))
    np.testing.assert_allclose(a.features[oa], b.features[ob], rtol=1e-4, atol=1e-4)
    # a caller-supplied float transform still works
    c = slow.embed_paths(paths[:2], transform=pre)
    np.testing.assert_allclose(c.features, b.features[ob][:2], rtol=1e-5, atol=1e-5)


def test_small_jobs_skip_the_export_and_failures_fall_back(tiny, monkeypatch) -> None:
    monkeypatch.delenv("GRAFT_RUNTIME", raising=False)
    eng = build_engine(tiny, (64, 64), device="cpu", precision="fp32", n_images=3, key=lambda: "k")
    assert isinstance(eng, TorchEngine)

    def boom(*a, **k):
        raise RuntimeError("export exploded")

    monkeypatch.setattr(engines, "build_ort_engine", boom)
    eng = build_engine(tiny, (64, 64), device="cpu", precision="fp32", n_images=1000, key=lambda: "k")
    assert isinstance(eng, TorchEngine) and eng.precision == "fp32"
    out = eng(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, tiny.num_features) and out.dtype == torch.float32


def test_explicit_bf16_uses_torch_autocast(tiny) -> None:
    eng = build_engine(tiny, (64, 64), device="cpu", precision="bf16", n_images=1000)
    assert isinstance(eng, TorchEngine) and eng.label == "torch-bf16-channels_last"
    ref = TorchEngine(tiny, "cpu", "fp32", input_size=(64, 64))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(eng(x), ref(x), rtol=0.1, atol=0.1)


def test_auto_on_bf16_cpu_benchmarks_once_and_caches(tiny, monkeypatch) -> None:
    monkeypatch.delenv("GRAFT_RUNTIME", raising=False)
    monkeypatch.setattr(autotune, "cpu_supports_fast_bf16", lambda: True)
    calls = []
    speeds = {"torch-bf16": 300.0, "torch-fp32": 50.0, "onnxruntime-fp32": 100.0}

    def fake_time(fn, x, reps=2):
        name = fn.label.replace("-channels_last", "")
        calls.append(name)
        return speeds[name]

    monkeypatch.setattr(autotune, "_time", fake_time)
    assert resolve_cpu_auto(tiny, (64, 64)) == "bf16"
    n = len(calls)
    assert sorted(calls) == ["onnxruntime-fp32", "torch-bf16"]  # eager fp32 cannot change the answer
    assert resolve_cpu_auto(tiny, (64, 64)) == "bf16"
    assert len(calls) == n  # cached
    stored = json.loads((graft_home() / "runtime" / "choice.json").read_text())
    (choice,) = stored.values()
    assert choice["engine"] == "torch" and choice["precision"] == "bf16"
    # without bf16 units, no benchmark: fp32 (ONNX Runtime where available)
    monkeypatch.setattr(autotune, "cpu_supports_fast_bf16", lambda: False)
    assert resolve_cpu_auto(tiny, (64, 64)) == "fp32"


def test_small_first_job_keeps_fp32_without_measuring(tiny, monkeypatch) -> None:
    """Below MEASURE_MIN_IMAGES an unmeasured machine keeps fp32 and stores nothing; a big job
    measures, and from then on every job, small ones too, uses the stored verdict."""
    monkeypatch.delenv("GRAFT_RUNTIME", raising=False)
    monkeypatch.setattr(autotune, "cpu_supports_fast_bf16", lambda: True)
    calls: list[str] = []

    def fake_time(fn, x, reps=2):
        calls.append(fn.label)
        return {"torch-bf16": 300.0}.get(fn.label.replace("-channels_last", ""), 100.0)

    monkeypatch.setattr(autotune, "_time", fake_time)
    small = autotune.MEASURE_MIN_IMAGES - 1
    assert resolve_cpu_auto(tiny, (64, 64), n_images=small) == "fp32"
    assert calls == [] and not (graft_home() / "runtime" / "choice.json").exists()
    assert Embedder(tiny, Preprocessing(input_size=(64, 64)), expected_images=small).precision == "fp32"
    assert calls == []
    assert resolve_cpu_auto(tiny, (64, 64), n_images=autotune.MEASURE_MIN_IMAGES) == "bf16" and calls
    n = len(calls)
    assert resolve_cpu_auto(tiny, (64, 64), n_images=1) == "bf16" and len(calls) == n


@pytest.mark.parametrize(("bf16", "expected"), [(105.0, "fp32"), (112.0, "bf16")])
def test_bf16_must_be_clearly_faster(tiny, monkeypatch, bf16, expected) -> None:
    """bf16 changes the features, so a near tie with fp32 (within BF16_MIN_GAIN) keeps fp32."""
    monkeypatch.delenv("GRAFT_RUNTIME", raising=False)
    monkeypatch.setattr(autotune, "cpu_supports_fast_bf16", lambda: True)
    speeds = {"torch-bf16": bf16, "onnxruntime-fp32": 100.0, "torch-fp32": 100.0}
    monkeypatch.setattr(autotune, "_time", lambda fn, x, reps=2: speeds[fn.label.replace("-channels_last", "")])
    assert resolve_cpu_auto(tiny, (64, 64)) == expected


def test_reuse_engines_builds_one_engine_per_model(tiny, monkeypatch) -> None:
    built: list[str] = []
    real = engines._build_engine

    def spy(*a, **k):
        built.append("x")
        return real(*a, **k)

    monkeypatch.setattr(engines, "_build_engine", spy)
    kw = dict(device="cpu", precision="fp32", n_images=1)
    with engines.reuse_engines():
        a = build_engine(tiny, (64, 64), **kw)
        assert build_engine(tiny, (64, 64), **kw) is a
        assert build_engine(tiny, (64, 64), device="cpu", precision="bf16", n_images=1) is not a
    assert len(built) == 2
    assert build_engine(tiny, (64, 64), **kw) is not a and len(built) == 3  # outside the block: a new one


def test_choose_precision_rejects_unknown() -> None:
    assert choose_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        choose_precision("int8", "cpu")


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_mirror_view_is_cached_from_the_same_decode(tiny, pre: Preprocessing, tmp_path: Path, monkeypatch, runtime):
    """View 0's pass also caches the mirror view: each file decoded once, the same features as the mirror transform."""
    from graft.features import embedder as embedder_module
    from graft.features.extract import FeatureRequest, model_features
    from graft.transforms.train import build_feature_view_transform

    if runtime == "onnxruntime" and not onnxruntime_available():
        pytest.skip("onnxruntime not installed")
    monkeypatch.setenv("GRAFT_RUNTIME", runtime)
    paths = [str(p) for p in _images(tmp_path, 9)]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.insert(7, str(tmp_path / "bad.jpg"))
    decoded: list[str] = []
    real = embedder_module.load_image
    monkeypatch.setattr(embedder_module, "load_image", lambda p, **kw: (decoded.append(str(p)), real(p, **kw))[1])
    opts = EmbedOptions(device="cpu", precision="fp32", batch_size=4, num_workers=0, cache_dir=tmp_path / "cache")
    mirror = build_feature_view_transform(pre, 1, 3)
    view0 = FeatureRequest(seed=3, mirror_view=1)
    view1 = FeatureRequest(seed=3, view=1, transform=mirror)

    v0 = model_features(tiny, pre, paths[:5], what=view0, options=opts)  # a first job: 5 files
    assert sorted(decoded) == sorted(paths[:5]) and v0.n_embedded == 5
    v0 = model_features(tiny, pre, paths, what=view0, options=opts)  # the rest; nothing decoded twice
    assert sorted(decoded) == sorted(paths) and v0.n_embedded == 5
    v1 = model_features(tiny, pre, paths, what=view1, options=opts)
    assert v1.n_embedded == 1 and [f.path for f in v1.failed] == [paths[7]]  # only the bad file is tried again
    assert v1.ok.tolist() == v0.ok.tolist() == [i for i in range(10) if i != 7]

    alone = model_features(tiny, pre, paths, what=view1, options=dataclasses.replace(opts, use_cache=False))
    np.testing.assert_allclose(v1.X, alone.X, rtol=1e-4, atol=1e-4)  # bulk vs numpy normalisation only
    assert not np.allclose(v1.X, v0.X, atol=1e-3)  # the mirror is a different view
    # Another seed: view 0 is cached (its key has no seed), the mirror is not. The pass that
    # fills the mirror leaves view 0's rows as they were and adds no second row for them.
    decoded.clear()
    size = lambda: sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*.bin"))  # noqa: E731
    before = size()
    again = model_features(tiny, pre, paths, what=dataclasses.replace(view0, seed=4), options=opts)
    assert again.n_embedded == 10 and len(decoded) == 10
    assert size() - before == 9 * v0.X.shape[1] * 4  # nine new float32 rows: the mirrors
    np.testing.assert_array_equal(again.X, v0.X)
    assert model_features(tiny, pre, paths, what=dataclasses.replace(view1, seed=4), options=opts).n_embedded == 1


@pytest.mark.filterwarnings("ignore:'pin_memory' argument:UserWarning")  # device="cuda" without a GPU
def test_on_cuda_short_batches_are_padded_to_one_shape(tiny, pre: Preprocessing, tmp_path: Path, monkeypatch) -> None:
    """A CUDA embedder runs every batch at its batch size (a new shape costs cuDNN seconds); features are unchanged."""
    monkeypatch.setenv("GRAFT_RUNTIME", "torch")
    paths = _images(tmp_path, 6)
    emb = Embedder(tiny, pre, EmbedOptions(device="cpu", precision="fp32", batch_size=4, num_workers=0))
    ref = emb.embed_paths(paths)
    shapes: list[int] = []
    real = Embedder.forward
    monkeypatch.setattr(Embedder, "forward", lambda self, b, **kw: (shapes.append(len(b)), real(self, b, **kw))[1])
    emb.device = "cuda"  # the padding rule only: the engine built above stays on the CPU
    mirrored: list[np.ndarray] = []
    out = emb.embed_paths(paths, on_mirror=lambda ids, feats: mirrored.append(feats))
    assert shapes == [4, 4, 4, 4]  # 4 + 2 images, each batch also mirrored: the short one padded
    assert [len(m) for m in mirrored] == [4, 2]
    assert out.features.shape == ref.features.shape and out.ok_indices.tolist() == list(range(6))
    np.testing.assert_allclose(out.features, ref.features, rtol=1e-5, atol=1e-5)
    emb.device = "cpu"
    shapes.clear()
    emb.embed_paths(paths)
    assert shapes == [4, 2]  # on a CPU a short batch stays short
