"""Load-test ``graft serve``: throughput, latency percentiles and errors.

Starts the server itself on a free loopback port (a subprocess), fires requests from a
second process (httpx async: ``--concurrency`` clients, ``--requests`` in total), then
measures sequential single-image latency with one client, prints the figures and the
machine load, and stops the server.

Usage:
    python bench/serve.py MODEL [--concurrency 32] [--requests 2000] [--sequential 200]
        [--images PATH ...] [--backend auto|onnx|torch] [--model-latency] [--json]

MODEL is an exported .onnx file or a model directory. Images default to the shared
hymenoptera val split.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "hymenoptera" / "val"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_images(inputs: list[str], limit: int = 64) -> list[tuple[str, bytes]]:
    from graft.data.files import collect_image_paths

    paths, _ = collect_image_paths(inputs)
    if not paths:
        sys.exit(f"no images found in {inputs}; pass --images PATH")
    return [(p.name, p.read_bytes()) for p in paths[:limit]]


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


# ---------------------------------------------------------------------------- client process
async def _fire(url: str, images: list[tuple[str, bytes]], total: int, concurrency: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            for i in counter:
                name, data = images[i % len(images)]
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict?top_k=1", files={"file": (name, data)})
                    ok = r.status_code == 200
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    ms = [x * 1000 for x in lat]
    return {
        "requests": total,
        "concurrency": concurrency,
        "ok": len(lat),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 3),
        "throughput_rps": round(len(lat) / wall, 2),
        "p50_ms": round(_pct(ms, 50), 2),
        "p90_ms": round(_pct(ms, 90), 2),
        "p99_ms": round(_pct(ms, 99), 2),
    }


def client_main(args: argparse.Namespace) -> None:
    images = _load_images(args.images)
    print(json.dumps(asyncio.run(_fire(args.url, images, args.requests, args.concurrency))))


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _phase(url: str, args: argparse.Namespace, requests: int, concurrency: int, server_pid: int) -> dict:
    """Run one load phase in a separate client process; add the server's CPU ms per request."""
    cmd = [
        sys.executable,
        __file__,
        "--client",
        url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--images",
        *args.images,
    ]
    cpu0 = _cpu_seconds(server_pid)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"load client failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["server_cpu_ms_per_request"] = round((_cpu_seconds(server_pid) - cpu0) * 1000 / max(1, requests), 2)
    return out


# ---------------------------------------------------------------------------- model-only latency
def model_latency(model: str, repeats: int = 50) -> dict:
    """Batch-1 model call latency (no HTTP, no decode): ONNX Runtime fp32 vs eager PyTorch."""
    from graft.predict import open_predictor

    out = {}
    backends = ["onnx"] if model.endswith(".onnx") else ["onnx", "torch"]
    for name in backends:
        b = open_predictor(model, name)
        h, w = b.preprocessing.input_size
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        for _ in range(5):
            b.predict_arrays(x)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            b.predict_arrays(x)
            ts.append((time.perf_counter() - t0) * 1000)
        out[b.name] = {"p50_ms": round(_pct(ts, 50), 2), "p99_ms": round(_pct(ts, 99), 2)}
    return out


# ---------------------------------------------------------------------------- orchestration
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="exported .onnx file or model directory")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--sequential", type=int, default=200, help="single-client requests for the p50 latency")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--images", nargs="+", default=[str(DEFAULT_IMAGES)])
    ap.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    ap.add_argument("--server-args", default="", help="extra graft serve options, e.g. '--max-batch 8'")
    ap.add_argument("--model-latency", action="store_true", help="also time raw model calls (ORT vs torch)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--client", dest="url", help=argparse.SUPPRESS)  # internal: run as the load process
    args = ap.parse_args()
    if args.url:
        return client_main(args)
    if not args.model:
        ap.error("MODEL is required")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server_cmd = [
        sys.executable,
        "-m",
        "graft.cli.main",
        "serve",
        args.model,
        "--port",
        str(port),
        "--backend",
        args.backend,
        "--log-level",
        "warning",
        *args.server_args.split(),
    ]
    load_before = os.getloadavg()
    server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        t0 = time.time()
        while True:
            if server.poll() is not None:
                sys.exit(f"server exited with {server.returncode}:\n{server.stderr.read() if server.stderr else ''}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > 180:
                sys.exit("server did not become healthy within 180 s")
            time.sleep(0.2)
        startup = time.time() - t0
        warm = _phase(url, args, args.warmup, 1, server.pid)  # first calls pay for lazy init
        figures = {"warmup_errors": warm["errors"]}
        figures["sequential"] = _phase(url, args, args.sequential, 1, server.pid)
        figures["load"] = _phase(url, args, args.requests, args.concurrency, server.pid)
        health = httpx.get(url + "/health", timeout=5).json()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    figures.update(
        model=args.model,
        backend=health["backend"],
        batching=health["batching"],
        server_startup_s=round(startup, 1),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        cpus=os.cpu_count(),
    )
    if args.model_latency:
        figures["model_latency_batch1"] = model_latency(args.model)
    if args.json:
        print(json.dumps(figures))
        return
    s, ld = figures["sequential"], figures["load"]
    print(
        f"model {args.model} on {figures['backend']}, {figures['cpus']} CPUs, "
        f"load average before {figures['load_average_before']} after {figures['load_average_after']}"
    )
    print(
        f"sequential (1 client, {s['requests']} requests): p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
        f"errors {s['errors']}, server CPU {s['server_cpu_ms_per_request']} ms/request"
    )
    print(
        f"load ({ld['concurrency']} clients, {ld['requests']} requests): {ld['throughput_rps']} req/s, "
        f"p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms, errors {ld['errors']} {ld['error_kinds'] or ''}, "
        f"server CPU {ld['server_cpu_ms_per_request']} ms/request"
    )
    print(f"micro-batching: {figures['batching']}")
    for name, v in figures.get("model_latency_batch1", {}).items():
        print(f"raw model call, batch 1, {name}: p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")


if __name__ == "__main__":
    main()
