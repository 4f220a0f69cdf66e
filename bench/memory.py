"""Peak memory and time of a ``graft train`` run against the number of images.

Synthetic JPEGs (2 classes, 320x240) are generated once into a temp folder; each
size runs ``graft train`` (embedding + head fit, cold cache) in a child process,
whose peak RSS comes from ``os.wait4`` (that child only, not earlier ones).

    python bench/memory.py [--sizes 1000 5000 20000] [--root /tmp/graft-bench-mem]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, table  # noqa: E402


def make_images(root: Path, n: int) -> Path:
    """root/n/{a,b}/*.jpg, generated once (cheap smooth images with class-dependent colour)."""
    import numpy as np
    from PIL import Image

    out = root / str(n)
    done = out / ".done"
    if done.exists():
        return out
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        cls = i % 2
        base = np.stack([xx * (0.5 + cls * 0.3), yy * (0.8 - cls * 0.3), (xx + yy) * 0.3], -1)
        img = np.clip(base + rng.normal(0, 20, (1, 1, 3)) + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        d = out / "ab"[cls]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=85)
    done.touch()
    return out


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return secs, usage.ru_maxrss / 1024.0, proc.returncode  # ru_maxrss is KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "graft-bench-mem")
    args = ap.parse_args()
    print("# memory and time against dataset size (graft train, cold cache)")
    print(f"machine: {machine_line()}")
    graft = Path(sys.executable).with_name("graft")
    rows = []
    for n in args.sizes:
        data = make_images(args.root, n)
        with tempfile.TemporaryDirectory(prefix="graft-mem-") as tmp:
            env = {**os.environ, "GRAFT_HOME": str(Path(tmp) / "home")}
            cmd = [str(graft), "train", str(data), "--out", str(Path(tmp) / "run"), "--quiet"]
            secs, rss, rc = run_child(cmd, env)
        rows.append([n, f"{secs:.1f}", f"{n / secs:.1f}", f"{rss:.0f}", "ok" if rc == 0 else f"exit {rc}"])
        print(table(["images", "seconds", "images/s", "peak RSS (MiB)", "status"], rows[-1:]), flush=True)
    print()
    print(table(["images", "seconds", "images/s", "peak RSS (MiB)", "status"], rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
