"""Soak-test ``graft serve``: steady clients, one hostile client, memory watched the whole time.

Starts the server on a free loopback port (a subprocess, the real ``graft serve`` with its
connection limits), then for ``--seconds`` runs ``--clients`` well-behaved clients posting
real images while one more client sends malformed, empty, oversized, too-many-pixel and
half-sent requests, and idle connections. Prints requests, errors by kind, latency
percentiles of the good requests, and the server's RSS at start, every 15 s and at the end
(it should stay flat). Loopback only, bounded in time; it stops by itself.

Usage:
    python bench/soak.py MODEL [--clients 32] [--seconds 120] [--images PATH ...]

MODEL is an exported .onnx file or a model directory (default: trains the bundled demo).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import machine_line, table

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "hymenoptera" / "val"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")  # compresses to almost nothing: a pixel bomb
    return buf.getvalue()


HOSTILE = [
    ("garbage", lambda: [("file", ("x.jpg", os.urandom(4000), "image/jpeg"))]),
    ("empty", lambda: [("file", ("e.png", b"", "image/png"))]),
    ("oversized body", lambda: [("file", ("big.jpg", b"\xff\xd8\xff" + b"0" * 11_000_000, "image/jpeg"))]),
    ("pixel bomb", lambda: [("file", ("bomb.png", _png(8000, 8000), "image/png"))]),
    ("many 24 MP images", lambda: [("file", (f"{i}.png", _png(6000, 4000), "image/png")) for i in range(16)]),
    ("too many files", lambda: [("file", (f"{i}.png", _png(8, 8), "image/png")) for i in range(40)]),
]


async def _good(url: str, images: list[tuple[str, bytes]], stop: float, lat: list[float], errors: dict) -> int:
    import httpx

    n = 0
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < stop:
            name, data = images[n % len(images)]
            t0 = time.perf_counter()
            try:
                r = await client.post(url, files={"file": (name, data)})
                if r.status_code == 200:
                    lat.append((time.perf_counter() - t0) * 1000)
                else:
                    errors[f"good {r.status_code}"] = errors.get(f"good {r.status_code}", 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            n += 1
    return n


async def _hostile(url: str, host: str, port: int, stop: float, answers: dict) -> int:
    import httpx

    payloads = [(kind, make()) for kind, make in HOSTILE]
    n, idle = 0, []
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < stop:
            kind, files = payloads[n % len(payloads)]
            try:
                r = await client.post(url, files=files)
                key = f"{kind}: {r.status_code}"
            except httpx.HTTPError as e:
                key = f"{kind}: {type(e).__name__}"
            answers[key] = answers.get(key, 0) + 1
            if n % 3 == 0 and len(idle) < 200:  # half-sent request heads, never finished
                try:
                    _r, w = await asyncio.open_connection(host, port)
                    w.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
                    idle.append(w)
                except OSError:
                    answers["idle connect failed"] = answers.get("idle connect failed", 0) + 1
            n += 1
            await asyncio.sleep(0.05)
    for w in idle:
        w.close()
    return n


async def _soak(url: str, host: str, port: int, images: list, clients: int, seconds: float, pid: int) -> dict:
    stop = time.monotonic() + seconds
    lat: list[float] = []
    errors: dict[str, int] = {}
    answers: dict[str, int] = {}
    rss = [(0.0, _rss_mb(pid))]

    async def watch() -> None:
        t0 = time.monotonic()
        while time.monotonic() < stop:
            await asyncio.sleep(15)
            rss.append((time.monotonic() - t0, _rss_mb(pid)))

    results = await asyncio.gather(
        *(_good(url, images, stop, lat, errors) for _ in range(clients)),
        _hostile(url, host, port, stop, answers),
        watch(),
    )
    rss.append((seconds, _rss_mb(pid)))
    return {
        "good": sum(results[:clients]),
        "hostile": results[clients],
        "lat": lat,
        "errors": errors,
        "answers": answers,
        "rss": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--images", nargs="*", default=[str(DEFAULT_IMAGES)])
    args = ap.parse_args()
    from graft.data.files import collect_image_paths

    paths, _ = collect_image_paths(args.images)
    images = [(p.name, p.read_bytes()) for p in paths[:64]]
    model = args.model
    if model is None:
        out = Path(tempfile.mkdtemp()) / "demo"
        subprocess.run([sys.executable, "-m", "graft.cli.main", "demo", "--quiet", "--out", str(out)], check=True)
        model = str(out / "model")
        if not images:
            images = [(p.name, p.read_bytes()) for p in sorted(Path(out).rglob("*.JPG"))[:64]]
    if not images:
        sys.exit("no images found; pass --images PATH")
    host, port = "127.0.0.1", _free_port()
    cmd = [sys.executable, "-m", "graft.cli.main", "serve", model, "--port", str(port), "--log-level", "error"]
    server = subprocess.Popen(cmd)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"http://{host}:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        res = asyncio.run(
            _soak(f"http://{host}:{port}/predict", host, port, images, args.clients, args.seconds, server.pid)
        )
        alive = httpx.get(f"http://{host}:{port}/health", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(20)
    lat = res["lat"]
    print(f"graft serve soak: {args.clients} clients + 1 hostile for {args.seconds:g} s; {machine_line()}")
    print(f"model {model}\n")
    print(
        table(
            ["", "value"],
            [
                ["good requests", res["good"]],
                ["good requests answered 200", len(lat)],
                ["errors on good requests", sum(res["errors"].values())],
                ["hostile requests", res["hostile"]],
                ["p50 / p99 ms (good)", f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f}" if lat else "-"],
                ["server RSS MB (start -> end)", f"{res['rss'][0][1]:.0f} -> {res['rss'][-1][1]:.0f}"],
                ["/health after the soak", "ok" if alive else "DEAD"],
            ],
        )
    )
    print("\nRSS over time: " + ", ".join(f"{t:.0f}s {mb:.0f} MB" for t, mb in res["rss"]))
    print("good-request errors: " + (", ".join(f"{k} x{v}" for k, v in sorted(res["errors"].items())) or "none"))
    print("hostile answers: " + ", ".join(f"{k} x{v}" for k, v in sorted(res["answers"].items())))


if __name__ == "__main__":
    main()
