"""The model directory: one self-describing, pickle-free artifact.

Layout::

    MODEL_DIR/
      config.json          the ArtifactSpec (classes, preprocessing, backbone, head, training, metrics, versions)
      model.safetensors    backbone + head weights

Loading reads JSON and safetensors only: nothing in the directory can execute code,
and the architecture must be a plain timm name, so nothing touches the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from graft.artifact.spec import MODEL_FORMAT, MODEL_FORMAT_VERSION, ArtifactSpec
from graft.exceptions import ModelFileError
from graft.fileio import atomic_dir, json_text
from graft.network import HEAD_TYPES, GraftNet, HeadSpec, build_head
from graft.network.ood import OODScorer
from graft.transforms.eval import Preprocessing

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "LoadedModel",
    "build_network",
    "find_model_dir",
    "load_model",
    "read_spec",
    "save_model",
    "weights_digest",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_MAX_FEATURES = 1 << 24  # head input width; guards against absurd allocations from a damaged config


@dataclass
class LoadedModel:
    """A model read back from disk."""

    net: GraftNet
    spec: ArtifactSpec
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    @property
    def config(self) -> dict[str, Any]:
        return self.spec.to_dict()

    @property
    def head_spec(self) -> HeadSpec:
        return HeadSpec.from_dict(self.spec.head)


def save_model(directory: str | os.PathLike, net: GraftNet, spec: ArtifactSpec) -> Path:
    """Write the model directory atomically (a temp folder renamed into place; removed again if a write fails).

    The weights are serialised in memory and written by Python, so a full or read-only disk
    is one :class:`~graft.exceptions.StorageError` naming the folder, not a ``SafetensorError``.

    Raises:
        ModelFileError: ``directory`` holds something other than a graft model.
        StorageError: the disk is full, read-only or not writable.
    """
    directory = Path(directory)
    if directory.exists() and not (directory / CONFIG_NAME).exists() and any(directory.iterdir()):
        raise ModelFileError(
            f"{directory} exists and is not a graft model directory; refusing to overwrite it. "
            "Choose an empty or new folder."
        )
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_dir(directory) as tmp:
        (tmp / WEIGHTS_NAME).write_bytes(safetensors_bytes(state, metadata={"format": MODEL_FORMAT}))
        (tmp / CONFIG_NAME).write_text(json_text(spec.stamped().to_dict()))
    return directory


def find_model_dir(path: str | os.PathLike) -> Path:
    """The model folder at ``path``: the folder itself, or ``RUN_DIR/model`` for a run folder.

    Raises:
        ModelFileError: no graft model there.
    """
    directory = Path(path)
    if not directory.exists():
        raise ModelFileError(
            f"model directory {directory} does not exist; pass the folder graft train wrote (RUN_DIR/model)"
        )
    if directory.is_dir() and not (directory / CONFIG_NAME).exists() and (directory / "model" / CONFIG_NAME).exists():
        return directory / "model"  # a run directory was given
    if not (directory / CONFIG_NAME).is_file():
        raise ModelFileError(
            f"{directory} is not a graft model: {CONFIG_NAME} is missing. "
            "Pass RUN_DIR/model as written by graft train (or an exported .onnx file)."
        )
    return directory


def read_spec(path: str | os.PathLike) -> tuple[ArtifactSpec, Path]:
    """Read and validate ``config.json``: (spec, the model folder)."""
    mdir = find_model_dir(path)
    cfg_path = mdir / CONFIG_NAME
    try:
        cfg = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{cfg_path} is not valid JSON ({e}); the model directory is damaged") from None
    except RecursionError:
        raise ModelFileError(
            f"{cfg_path} is nested too deeply to be a graft config; the model directory is damaged"
        ) from None
    except OSError as e:
        raise ModelFileError(f"{cfg_path} cannot be read ({e.strerror or e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != MODEL_FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelFileError(f"{cfg_path}: format is {found!r}, expected {MODEL_FORMAT!r}")
    try:
        version = int(cfg.get("format_version", 0))
    except (TypeError, ValueError):
        version = 0
    if version > MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{cfg_path} was written by a newer graft (format {version}); upgrade graft to read it")
    return ArtifactSpec.from_dict(cfg, source=str(cfg_path)), mdir


def build_network(spec: ArtifactSpec, source: str = "config.json") -> GraftNet:
    """An untrained network with the architecture ``spec`` describes (never downloads anything)."""
    import timm

    arch = spec.architecture
    head = _head_spec(spec, source)
    try:
        backbone = _backbone(spec, source)
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - unknown arch in a newer/older timm
        raise ModelFileError(f"{source}: cannot build backbone {arch!r} with timm {timm.__version__}: {e}") from None
    ood = _ood_scorer(spec, head, source)  # its buffers come with the weights
    return GraftNet(backbone, build_head(head), spatial=head.spatial, ood=ood, taps=_taps(spec, source))


def _backbone(spec: ArtifactSpec, source: str) -> Any:
    """The untrained backbone: a timm model, or the wide composite of several (:mod:`graft.backbones.wide`)."""
    import timm

    from graft.backbones.wide import WIDE_ARCHITECTURE, wide_from_description

    if spec.architecture != WIDE_ARCHITECTURE:
        return timm.create_model(spec.architecture, pretrained=False, num_classes=0)
    try:
        return wide_from_description(spec.backbone.get("members"), source)
    except ValueError as e:
        raise ModelFileError(str(e)) from None


def _taps(spec: ArtifactSpec, source: str) -> tuple[int, ...]:
    """The multi-depth feature taps the model was trained with (none in older models)."""
    taps = spec.backbone.get("feature_taps") or []
    if not isinstance(taps, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 64 for t in taps
    ):
        raise ModelFileError(f"{source}: backbone.feature_taps must be a list of block indices; got {taps!r}")
    return tuple(taps)


def _ood_scorer(spec: ArtifactSpec, head: HeadSpec, source: str) -> OODScorer | None:
    if not spec.ood:
        return None
    try:
        n_ref = int(spec.ood["n_reference"])
        k = int(spec.ood["k"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{source}: the 'ood' section lacks n_reference or k") from None
    if not (0 < k <= n_ref) or n_ref * int(head.in_features) > _MAX_FEATURES * 4:
        raise ModelFileError(f"{source}: the 'ood' section has sizes graft cannot build ({n_ref} x {head.in_features})")
    return OODScorer(n_ref, int(head.in_features), k)


def _head_spec(spec: ArtifactSpec, source: str) -> HeadSpec:
    h = spec.head
    try:
        head = HeadSpec.from_dict(h)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: head is not valid ({e})") from None
    if (
        head.type not in HEAD_TYPES
        or not 0 < int(head.in_features) <= _MAX_FEATURES
        or not 0 < int(head.hidden) <= _MAX_FEATURES
    ):
        raise ModelFileError(f"{source}: head {dict(h)} has sizes graft cannot build")
    if int(head.in_features) * max(int(head.num_classes), int(head.hidden)) > _MAX_FEATURES:
        raise ModelFileError(f"{source}: head {dict(h)} would need an absurd amount of memory; the config is damaged")
    if int(head.num_classes) != len(spec.classes):
        raise ModelFileError(
            f"{source}: the head has {head.num_classes} outputs but the config lists {len(spec.classes)} classes"
        )
    return head


def load_model(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Read a model directory back; no code from the directory is executed."""
    spec, mdir = read_spec(path)
    net = build_network(spec, str(mdir / CONFIG_NAME))
    weights = mdir / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelFileError(f"{weights} is missing; the model directory is incomplete")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ModelFileError(f"{weights} could not be read as safetensors: {e}") from None
    damaged = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if damaged is not None:
        raise ModelFileError(
            f"{weights} holds non-finite values (NaN or infinity) in {damaged!r}: the model is damaged "
            "(training diverged, or the file was altered); train it again or use an intact copy"
        )
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ModelFileError(f"{weights} does not match its config.json: {str(e).splitlines()[0]}") from None
    if missing or unexpected:
        raise ModelFileError(
            f"{weights} does not match its config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    net.eval().to(device)
    return LoadedModel(net, spec, mdir)


def weights_digest(path: str | os.PathLike) -> str:
    """sha256 of a model folder's config and weights: the key of its ONNX export in the cache."""
    import hashlib

    mdir = find_model_dir(path)
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(mdir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
