"""The separate environment graft converts LiteRT files in: ``python -m graft.export.litert_env``.

litert-torch (Google's PyTorch -> LiteRT converter) would downgrade packages graft's own
environment uses (measured with ``pip install --dry-run litert-torch==0.10.0`` beside torch 2.14:
pydantic 2.13 -> 2.11, typing_extensions 4.15 -> 4.12, plus jax, jaxlib, transformers; about
900 MB). So it lives in a venv under GRAFT_HOME that sees graft's packages (torch, timm, graft)
through a ``.pth`` file but has its own copies of what litert-torch pins; graft runs the
converter there in a subprocess and checks the file with the LiteRT runtime in its own environment.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from graft.config import graft_home

__all__ = ["LITERT_TORCH", "env_python", "setup_command", "create", "link"]

LITERT_TORCH = "litert-torch==0.10.0"


def env_dir() -> Path:
    return graft_home() / "envs" / "litert"


def env_python() -> Path | None:
    """The environment's interpreter, or None when it was not created yet."""
    py = env_dir() / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return py if py.is_file() else None


def setup_command() -> str:
    return f"{Path(sys.executable).name} -m graft.export.litert_env"


def link(py: Path) -> None:
    """Point the environment's ``.pth`` at the site-packages of the graft running now.

    Done before every conversion, not only at creation: the environment lives in GRAFT_HOME and
    outlives the graft environment that made it (a moved or re-created venv, a second checkout),
    and a stale path would leave the converter without torch.
    """
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # after its own site-packages: its pinned copies win, torch/timm/graft come from graft's environment
    pth, line = Path(site) / "zz_graft_env.pth", sysconfig.get_paths()["purelib"] + "\n"
    if not pth.is_file() or pth.read_text() != line:
        pth.write_text(line)


def create() -> Path:
    """Create the environment (a venv whose ``.pth`` points at graft's site-packages) and install litert-torch."""
    d = env_dir()
    subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
    py = env_python()
    if py is None:
        raise OSError(f"creating the LiteRT environment in {d} left no python in it; remove {d} and run again")
    link(py)
    subprocess.run([str(py), "-m", "pip", "install", "-q", LITERT_TORCH], check=True)
    return d


if __name__ == "__main__":  # pragma: no cover - a one-time setup command
    print(f"creating {env_dir()} and installing {LITERT_TORCH} (about 900 MB)")
    print(f"ready: {create()}")
