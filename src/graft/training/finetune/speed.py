"""How a fine-tuning step runs fastest on this machine: measured once, then cached.

Measured on a 2-core AVX512-BF16 CPU, Lite0 at 224 px (issue #11): fp32 eager 11.6
train img/s, channels-last 16.5, channels-last + bf16 autocast 18.6, channels-last +
``torch.compile`` 21.5. Which of these wins depends on the chip, the model and the
part of it that trains, so nothing is assumed: :func:`plan_speed` times a few
training steps (forward + backward) of each candidate on the real module and batch
shape, keeps bf16 only where its logits agree with fp32, tries ``torch.compile``
only where the run's eager time is long enough to pay its compile time
(:data:`COMPILE_MIN_SECONDS`), and stores the verdicts in
``$GRAFT_HOME/runtime/finetune_speed.json`` keyed by machine, model and torch
version, so each measurement is paid once (inductor's own cache keeps compiled code).

``GRAFT_COMPILE=0`` never compiles, ``GRAFT_COMPILE=1`` always tries; a compiled
step that raises falls back to eager for the rest of the run (:class:`CompiledStep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from graft.config import cpu_info, graft_home, quiet_cuda_home_notice
from graft.features.autotune import cpu_supports_fast_bf16
from graft.fileio import atomic_write_text
from graft.progress import NullProgress, Progress

__all__ = [
    "COMPILE_MIN_SECONDS",
    "CompiledStep",
    "SpeedPlan",
    "autocast",
    "cache_path",
    "plan_speed",
    "prefix_precision",
]

log = logging.getLogger("graft")

COMPILE_MIN_SECONDS = 600.0
"""Eager training seconds (images x epochs / measured images/s) below which compiling is not tried.

Measuring a compiled step costs its compile (70 s on the 2-core AMD CPU, 100-120 s on the AMX
Xeon; tens of seconds on a GPU) and the best gain seen is 1.3x, which saves at most 23 % of the
eager time: the measurement repays itself only from C / 0.23, 300-520 s (BENCHMARKS.md, "Session
13"). Seconds, not images: a threshold in images made a GPU compile for a rung of seconds.
"""
_BF16_MAX_ERR = 0.05  # max |logit difference| bf16 vs fp32, relative to the logits' range


@dataclass
class SpeedPlan:
    """How to run a training step: memory format, autocast precision, compiled or not."""

    channels_last: bool = False
    precision: str = "fp32"
    compile: bool = False
    images_per_s: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    @property
    def label(self) -> str:
        return (
            f"{self.precision}"
            + ("-channels_last" if self.channels_last else "")
            + ("-compiled" if self.compile else "")
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d


def autocast(device: str, precision: str) -> torch.autocast:
    """bf16/fp16 autocast for ``precision``; a disabled context for fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def cache_path() -> Any:
    return graft_home() / "runtime" / "finetune_speed.json"


class CompiledStep:
    """``torch.compile(module)`` that falls back to eager, for good, the first time compiling fails.

    Compilation is lazy (it happens on the first call), so a failure can come from the
    ``torch.compile`` call or from any later call; either way the run continues eager
    and ``warn`` hears of it once.
    """

    def __init__(self, module: nn.Module, warn: Callable[[str], None] | None = None) -> None:
        self.module = module
        self.warn = warn or log.warning
        self.compiled: Callable[..., Any] | None = None
        quiet_cuda_home_notice()
        try:
            self.compiled = torch.compile(module)
        except Exception as e:  # noqa: BLE001 - eager always works
            self._fail(e)

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def _fail(self, e: BaseException) -> None:
        self.compiled = None
        self.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); fine-tuning continues eager")

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001
                self._fail(e)
        return self.module(*args)


def _key(name: str, module: nn.Module, shape: tuple[int, ...], device: str, precision: str) -> str:
    n_params = sum(p.numel() for p in module.parameters())
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    text = (
        f"{cpu_info()['model']}|{torch.get_num_threads()}|{torch.__version__}|{device}|{name}|"
        f"{type(module).__name__}|{n_params}|{n_train}|{shape}|{precision}"
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    data = _read_cache()
    data[key] = entry
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path(), json.dumps(data, indent=2))
    except OSError as e:
        log.debug("could not store the fine-tuning speed plan: %s", e)


def _step_fn(module: nn.Module, device: str, precision: str, fn: Callable[..., Any]) -> Callable[[torch.Tensor], Any]:
    def step(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            out = fn(x).float()
        if out.requires_grad:
            out.square().mean().backward()
        return out.detach()

    return step


def _eval_logits(module: nn.Module, x: torch.Tensor, device: str, precision: str) -> torch.Tensor:
    """Outputs in eval mode (no dropout, fixed statistics): what the precision check compares."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad(), autocast(device, precision):
            return module(x).float()
    finally:
        for m, mode in modes.items():
            m.training = mode


Candidate = tuple[Callable[[], Any], Callable[[torch.Tensor], Any], torch.Tensor]


def _race(cands: dict[str, Candidate], rounds: int = 3) -> dict[str, float]:
    """Images/s of each ``(setup, step, x)``: best of ``rounds``, after one warm-up each (compile, allocations).

    Candidates take turns within each round, so a load change on a shared machine hits
    them all alike rather than whichever happened to run last.
    """
    best = {name: math.inf for name in cands}
    for setup, step, x in cands.values():
        setup()
        step(x)
    for _ in range(rounds):
        for name, (setup, step, x) in cands.items():
            setup()
            t = time.perf_counter()
            step(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: len(cands[name][2]) / t for name, t in best.items()}


def _agrees(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Low-precision outputs within :data:`_BF16_MAX_ERR` of fp32's, relative to fp32's range."""
    err = float((out - ref).abs().max()) / max(float(ref.max() - ref.min()), 1e-6)
    if not math.isfinite(err) or err > _BF16_MAX_ERR:
        log.info("low precision disagrees with fp32 (relative error %.3f); not used", err)
        return False
    return True


def _precisions(precision: str, device: str) -> list[str]:
    """Autocast precisions worth trying: the one asked for, or fp32 plus the fast low one (``auto``)."""
    if precision != "auto":
        return [precision]
    if device.startswith("cuda"):
        return ["fp32", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    return ["fp32", "bf16"] if cpu_supports_fast_bf16() else ["fp32"]


def _compile_wanted(work_images: int, eager_images_per_s: float) -> bool:
    env = os.environ.get("GRAFT_COMPILE", "").strip()
    if env in {"0", "1"}:
        return env == "1"
    return work_images / max(eager_images_per_s, 1e-9) >= COMPILE_MIN_SECONDS


def _eager_candidates(
    module: nn.Module, x: torch.Tensor, device: str, precision: str
) -> dict[str, tuple[Candidate, SpeedPlan]]:
    """Each eager (memory format, precision) to race; low precisions only where they agree with fp32."""
    cands: dict[str, tuple[Candidate, SpeedPlan]] = {}
    ref: torch.Tensor | None = None
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format

        def setup(fmt: torch.memory_format = fmt) -> None:
            module.to(memory_format=fmt)

        setup()
        xi = x.contiguous(memory_format=fmt)
        for prec in _precisions(precision, device):
            out = _eval_logits(module, xi, device, prec)
            ref = out if ref is None else ref
            if prec != "fp32" and precision == "auto" and not _agrees(out, ref):
                continue
            plan = SpeedPlan(cl, prec, False)
            cands[plan.label] = ((setup, _step_fn(module, device, prec, module), xi), plan)
    return cands


def _measure(module: nn.Module, x: torch.Tensor, device: str, precision: str) -> SpeedPlan:
    """The fastest eager plan, with every candidate's images/s."""
    cands = _eager_candidates(module, x, device, precision)
    speeds = _race({label: cand for label, (cand, _) in cands.items()})
    best = cands[max(speeds, key=lambda k: speeds[k])][1]
    best.images_per_s = {k: round(v, 2) for k, v in speeds.items()}
    return best


def _measure_compile(
    module: nn.Module, x: torch.Tensor, device: str, eager: SpeedPlan, progress: Progress
) -> dict[str, Any]:
    """Compiled vs eager on ``eager``'s format and precision: ``{"compile": kept, "images_per_s": ...}``."""
    progress.message("measuring torch.compile for fine-tuning (once per machine and model)")
    fmt = torch.channels_last if eager.channels_last else torch.contiguous_format

    def setup() -> None:
        module.to(memory_format=fmt)

    setup()
    xi = x.contiguous(memory_format=fmt)
    compiled = CompiledStep(module, warn=lambda m: log.info("%s", m))
    label = SpeedPlan(eager.channels_last, eager.precision, True).label
    try:
        duel = _race(
            {
                eager.label: (setup, _step_fn(module, device, eager.precision, module), xi),
                label: (setup, _step_fn(module, device, eager.precision, compiled), xi),
            }
        )
    except Exception as e:  # noqa: BLE001 - the eager plan stands
        log.info("compiled step failed: %s", e)
        return {"compile": False, "images_per_s": {}}
    # It must beat eager's best figure from either race by 10 %: compiling is the risky choice.
    faster = duel[label] > 1.1 * max(duel[eager.label], eager.images_per_s.get(eager.label, 0.0))
    return {"compile": bool(compiled.active and faster), "images_per_s": {label: round(duel[label], 2)}}


def plan_speed(
    module: nn.Module,
    example: torch.Tensor,
    *,
    name: str,
    device: str = "cpu",
    precision: str = "auto",
    work_images: int = 0,
    progress: Progress | None = None,
) -> SpeedPlan:
    """The fastest way to run training steps of ``module`` on batches shaped like ``example``.

    ``module`` must be in the train/eval state of training, its trainable parameters
    marked; it is left in the chosen memory format with its weights, buffers and
    gradients as they were (the measurement's steps change nothing).

    Args:
        name: the model's name (part of the cache key, with machine and torch version).
        precision: ``auto`` measures fp32 against bf16 (CUDA: bf16 or fp16, CPU: only
            with native bf16 units); ``fp32|bf16|fp16`` is used as given.
        work_images: images x epochs the run will train on (decides whether compiling can pay).
    """
    progress = progress or NullProgress()
    key = _key(name, module, tuple(example.shape), device, precision)
    cache = _read_cache()
    plan = _cached_plan(cache.get(key))
    if plan is None:
        with _unchanged(module):
            plan = _measure(module, example.to(device), device, precision)
        _write_cache(key, plan.to_dict())
    if _compile_wanted(work_images, plan.images_per_s.get(plan.label, 0.0)):
        verdict = cache.get(key + "|compile")
        if not isinstance(verdict, dict) or "compile" not in verdict:
            with _unchanged(module):
                verdict = _measure_compile(module, example.to(device), device, plan, progress)
            _write_cache(key + "|compile", verdict)
        plan.compile = bool(verdict["compile"])
        plan.images_per_s = {**plan.images_per_s, **dict(verdict.get("images_per_s") or {})}
    module.to(memory_format=torch.channels_last if plan.channels_last else torch.contiguous_format)
    return plan


@contextlib.contextmanager
def _unchanged(module: nn.Module) -> Iterator[None]:
    """Measuring steps inside leave ``module``'s weights, buffers, gradients and the random stream as they were."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for k, v in module.state_dict().items():
                v.copy_(state[k])
        for p in module.parameters():
            p.grad = None


def _cached_plan(hit: Any) -> SpeedPlan | None:
    """The eager plan stored under a key, or None (absent or from another graft version)."""
    if not isinstance(hit, dict):
        return None
    try:
        plan = SpeedPlan(**hit, cached=True)
    except TypeError:
        return None
    plan.compile = False  # the compile verdict has its own entry
    return plan


def prefix_precision(
    prefix: nn.Module,
    images: torch.Tensor,
    suffix: nn.Module,
    *,
    name: str,
    device: str = "cpu",
    precision: str = "auto",
) -> str:
    """Precision the frozen prefix runs in (no gradients): fp32 unless the low one is faster and agrees.

    Through ``suffix`` (in eval mode) bf16 prefix outputs must give the same logits as
    fp32 ones within a few percent of their range, or bf16 is not used.
    """
    cands = _precisions(precision, device)
    if len(cands) == 1:
        return cands[0]
    key = _key(name + "|prefix", prefix, tuple(images.shape), device, precision)
    hit = _read_cache().get(key)
    if isinstance(hit, dict) and hit.get("precision") in cands:
        return str(hit["precision"])
    x = images.to(device).contiguous(memory_format=torch.channels_last)
    runs: dict[str, Candidate] = {}
    ref: torch.Tensor | None = None
    for prec in cands:

        def run(xb: torch.Tensor, prec: str = prec) -> torch.Tensor:
            with torch.no_grad(), autocast(device, prec):
                return prefix(xb)

        out = _eval_logits(suffix, run(x).float(), device, "fp32")
        ref = out if ref is None else ref
        if prec == "fp32" or _agrees(out, ref):
            runs[prec] = (lambda: None, run, x)
    speeds = _race(runs)
    best = max(speeds, key=lambda k: speeds[k]) if speeds else "fp32"
    _write_cache(key, {"precision": best, "images_per_s": {k: round(v, 2) for k, v in speeds.items()}})
    return best
