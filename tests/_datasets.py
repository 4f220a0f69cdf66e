"""Locate the shared real datasets (``../shared/datasets`` beside the repository).

Tests that need them call :func:`shared_dataset`; it skips with a reason when the
folder is absent, or fails when ``GRAFT_REQUIRE_DATASETS=1`` (CI that must run them).
``GRAFT_DATASETS_DIR`` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "DATASETS_DIR", "shared_dataset"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = Path(os.environ.get("GRAFT_DATASETS_DIR") or REPO_ROOT.parent / "shared" / "datasets")

#: Debian's headless Chromium, driven by Playwright in the browser tests (``GRAFT_CHROMIUM`` overrides).
CHROMIUM = Path(os.environ.get("GRAFT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def shared_dataset(name: str) -> Path:
    """Path of the shared dataset ``name``; skip (or fail if required) when missing."""
    path = DATASETS_DIR / name
    if path.is_dir():
        return path
    message = (
        f"shared dataset {name!r} not found at {path} "
        "(expected ../shared/datasets/NAME relative to the repository root, or set GRAFT_DATASETS_DIR)"
    )
    if os.environ.get("GRAFT_REQUIRE_DATASETS") == "1":
        pytest.fail(message + "; GRAFT_REQUIRE_DATASETS=1 makes this an error", pytrace=False)
    pytest.skip(message)
