"""The model directory: one self-describing, pickle-free artifact.

Layout::

    MODEL_DIR/
      config.json          classes, preprocessing, backbone, head, training, metrics, versions
      model.safetensors    backbone + head weights

Loading reads JSON and safetensors only: nothing in the directory can execute code.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from .exceptions import ModelFileError
from .fileio import replace_dir
from .heads import GraftNet, HeadSpec, build_head
from .preprocess import Preprocessing

__all__ = ["FORMAT", "FORMAT_VERSION", "LoadedModel", "save_model", "load_model", "read_config", "versions"]

FORMAT = "graft-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def versions() -> dict[str, str]:
    """Library versions recorded in every artifact and report."""
    import timm

    from . import __version__

    return {
        "graft": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class LoadedModel:
    """A model read back from disk."""

    net: GraftNet
    classes: list[str]
    preprocessing: Preprocessing
    config: dict[str, Any]
    path: Path

    @property
    def head_spec(self) -> HeadSpec:
        return HeadSpec.from_dict(self.config["head"])


def save_model(
    directory: str | os.PathLike,
    net: GraftNet,
    *,
    classes: list[str],
    preprocessing: Preprocessing,
    backbone: Mapping[str, Any],
    head: HeadSpec,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model directory atomically (a temp folder renamed into place).

    Args:
        directory: target folder; replaced if it holds an older graft model.
        net: the trained network.
        classes: class names in label order.
        preprocessing: eval preprocessing the network expects.
        backbone: JSON-ready backbone description (name, architecture, weights source/hash).
        head: the head spec.
        training: training configuration and stage summaries.
        metrics: validation metrics of this model.
    """
    directory = Path(directory)
    if directory.exists() and not (directory / CONFIG_NAME).exists() and any(directory.iterdir()):
        raise ModelFileError(
            f"{directory} exists and is not a graft model directory; refusing to overwrite it. "
            "Choose an empty or new folder."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "classes": list(classes),
        "preprocessing": preprocessing.to_dict(),
        "backbone": dict(backbone),
        "head": head.to_dict(),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
        "versions": versions(),
    }
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=_json_default))
    return replace_dir(tmp, directory)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` of a model directory."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.exists():
        raise ModelFileError(f"model directory {directory} does not exist; pass the folder graft train wrote (RUN_DIR/model)")
    if directory.is_dir() and not cfg_path.exists() and (directory / "model" / CONFIG_NAME).exists():
        cfg_path = directory / "model" / CONFIG_NAME  # a run directory was given
    if not cfg_path.exists():
        raise ModelFileError(
            f"{directory} is not a graft model: {CONFIG_NAME} is missing. "
            "Pass RUN_DIR/model as written by graft train (or an exported .onnx file)."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ModelFileError(f"{cfg_path} is not valid JSON ({e}); the model directory is damaged") from e
    if cfg.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path}: format is {cfg.get('format')!r}, expected {FORMAT!r}")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{cfg_path} was written by a newer graft (format {cfg['format_version']}); upgrade graft to read it"
        )
    cfg["_dir"] = str(cfg_path.parent)
    return cfg


def build_network(config: Mapping[str, Any]) -> GraftNet:
    """An untrained network with the architecture described by ``config``."""
    import timm

    arch = config["backbone"]["architecture"]
    try:
        backbone = timm.create_model(arch, pretrained=False, num_classes=0)
    except Exception as e:  # noqa: BLE001 - unknown arch in a newer/older timm
        raise ModelFileError(f"cannot build backbone {arch!r} with timm {timm.__version__}: {e}") from e
    spec = HeadSpec.from_dict(config["head"])
    return GraftNet(backbone, build_head(spec), spatial=spec.spatial)


def load_model(directory: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Read a model directory back; no code from the directory is executed."""
    cfg = read_config(directory)
    mdir = Path(cfg.pop("_dir"))
    net = build_network(cfg)
    weights = mdir / WEIGHTS_NAME
    if not weights.exists():
        raise ModelFileError(f"{weights} is missing; the model directory is incomplete")
    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{weights} could not be read as safetensors: {e}") from e
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFileError(
            f"{weights} does not match its config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    net.eval().to(device)
    return LoadedModel(net, list(cfg["classes"]), Preprocessing.from_dict(cfg["preprocessing"]), cfg, mdir)
