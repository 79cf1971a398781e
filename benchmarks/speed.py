"""Per-step cost of every solver against one bare forward+backward pass of the same generator.

For each bundled generator that is installed (or the ones given with ``--models``) and each batch
size (1, 8, 32 by default) this measures:

* ``bare``: one forward + backward of the generator alone -- ``x = G(inputs)``, ``x.square().mean()
  .backward()`` with gradients on the variables the solver optimises (all inputs for ILO round 0,
  the latents for CSGM, the state and remaining inputs of stage ``k`` for ILO round ``k``);
* the solver's time per optimisation step, by differencing two solves of ``n1`` and ``n2`` steps
  (so set-up and the final evaluation cancel out), and the overhead ratio ``step / bare``;
* images per second of a full solve with the solver's default settings (when the estimate is
  above ``--max-solve-seconds``, the full solve is skipped and the rate is estimated from the step
  time, marked ``est.``);
* peak memory of that solve: on CPU the rise of the process's peak resident set size (VmHWM,
  reset through ``/proc/self/clear_refs`` before each solve); on CUDA
  ``torch.cuda.max_memory_allocated``.

Times are the minimum over ``--repeats`` runs (the most robust estimate on a shared machine).
The measurement operator is inpainting with half of the pixels missing: elementwise, so the
ratio measures the solvers' own machinery (loss, Adam, projections, bookkeeping), not the physics.

    python benchmarks/speed.py --out docs/results/speed_cpu        # writes .csv and .md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from genprior.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ---- measuring ----------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: the clock: on a CPU with one torch thread, the process's CPU time (time.process_time), which
#: does not count the time other processes of a shared machine hold the core; on CUDA (or with
#: several threads) the wall clock.
CLOCK: dict[str, Callable[[], float]] = {"fn": time.perf_counter, "name": "wall"}  # type: ignore[dict-item]


def _timed(fn: Callable[[], Any], dev: torch.device) -> float:
    clock = CLOCK["fn"]
    _sync(dev)
    t0 = clock()
    fn()
    _sync(dev)
    return clock() - t0


def _min_time(fn: Callable[[], Any], dev: torch.device, repeats: int) -> float:
    return min(_timed(fn, dev) for _ in range(repeats))


def _proc_status() -> dict[str, int]:
    try:
        s = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    return {k: int(m.group(1)) * 1024 for k in ("VmRSS", "VmHWM") if (m := re.search(rf"{k}:\s+(\d+)", s))}


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated`` or the rise of the CPU peak RSS."""

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.peak: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.base = torch.cuda.memory_allocated(self.dev)
        else:
            import gc

            gc.collect()
            _malloc_trim()  # give freed heap pages back, so that RSS is the live memory
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                pass
            self.base = _proc_status().get("VmRSS", 0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            self.peak = float(torch.cuda.max_memory_allocated(self.dev) - self.base)
        else:
            st = _proc_status()
            self.peak = float(st["VmHWM"] - self.base) if "VmHWM" in st else None


def bare_fn(
    G: Any, batch: int, stage: int, free_names: tuple[str, ...], dev: torch.device
) -> Callable[[], None]:
    """One forward+backward of ``tail(stage)`` with gradients on ``free_names`` (and the state)."""
    g = torch.Generator().manual_seed(0)
    inputs = G.sample_inputs(batch, generator=g, device=dev)
    with torch.no_grad():
        state0 = tuple(s.detach() for s in G.head(stage, inputs)) if stage > 0 else ()

    def one() -> None:
        free = {k: inputs[k].detach().clone().requires_grad_(True) for k in free_names}
        cur = {**inputs, **free}
        state = tuple(s.clone().requires_grad_(True) for s in state0)
        x = G(cur) if stage == 0 else G.tail(stage, state, cur)
        x.square().mean().backward()

    return one


def measure(
    bare: Callable[[], None],
    make: Callable[[int], Any],
    y: torch.Tensor,
    physics: Any,
    n1: int,
    n2: int,
    inner: int,
    dev: torch.device,
    repeats: int,
) -> tuple[float, float]:
    """``(bare seconds, solver seconds per step)``: the minimum over ``repeats`` rounds, each timing
    ``inner`` bare passes, an ``n1``-step and an ``n2``-step solve one after the other (so both
    see the same machine load); the step time is the difference of the two solves over ``n2 - n1``."""
    for _ in range(2):  # warm-up (allocator, oneDNN primitives)
        bare()
    make(n1)(y, physics)
    tb = t1 = t2 = math.inf
    for _ in range(repeats):
        tb = min(tb, _timed(lambda: [bare() for _ in range(inner)], dev) / inner)
        t1 = min(t1, _timed(lambda: make(n1)(y, physics), dev))
        t2 = min(t2, _timed(lambda: make(n2)(y, physics), dev))
    return tb, max(t2 - t1, 1e-12) / (n2 - n1)


def solver_step(
    make: Callable[[int], Any],
    y: torch.Tensor,
    physics: Any,
    n1: int,
    n2: int,
    dev: torch.device,
    repeats: int,
) -> float:
    """Seconds per step: (time of an ``n2``-step solve - time of an ``n1``-step solve) / (n2 - n1)."""
    make(n1)(y, physics)  # warm-up
    t1 = _min_time(lambda: make(n1)(y, physics), dev, repeats)
    t2 = _min_time(lambda: make(n2)(y, physics), dev, repeats)
    return max(t2 - t1, 1e-12) / (n2 - n1)


# ---- the methods --------------------------------------------------------------------------------
def _is_stylegan2(G: Any) -> bool:
    return "stylegan2" in type(G).__name__.lower()


def method_table(G: Any) -> list[dict[str, Any]]:
    """What to time for generator ``G``: label, builder of an n-step solver, the bare reference
    (stage, free inputs) and the solver's total step count with default settings."""
    from genprior.solvers import CSGM, ILO, CSGMConfig, ILOConfig
    from genprior.solvers.ilo import default_stages

    rows: list[dict[str, Any]] = []
    all_inputs = tuple(s.name for s in G.input_specs)
    rows.append({
        "method": "ilo (round 0)",
        "make": lambda n: ILO(G, ILOConfig(stages=(), steps=n)),
        "stage": 0, "free": G.tail_inputs(0),
    })  # fmt: skip
    for k in range(1, G.num_stages + 1):
        if k not in default_stages(G.num_stages):
            continue
        rows.append({
            "method": f"ilo (round at stage {k})",
            "make": lambda n, k=k: ILO(G, ILOConfig(stages=(k,), steps=(0, n))),
            "stage": k, "free": G.tail_inputs(k),
        })  # fmt: skip
    rows.append(
        {
            "method": "csgm",
            "make": lambda n: CSGM(G, CSGMConfig(steps=n)),
            "stage": 0,
            "free": G.latent_names(),
        }
    )
    try:
        from genprior.solvers.pulse import PULSE, PULSEConfig

        rows.append({
            "method": "pulse",
            "make": lambda n: PULSE(G, PULSEConfig(steps=n, eps=0.0)),
            "stage": 0, "free": PULSE(G).free_names(),
        })  # fmt: skip
    except ImportError:
        pass
    try:
        from genprior.solvers.projector import ProjectorConfig, StyleGAN2Projector

        if not _is_stylegan2(G):
            raise ImportError  # the projector is StyleGAN2's (it needs W space statistics)
        rows.append({
            "method": "projector",
            "make": lambda n: StyleGAN2Projector(G, ProjectorConfig(steps=n, w_avg_samples=200)),
            "stage": 0, "free": all_inputs,
        })  # fmt: skip
    except ImportError:
        pass
    return rows


def full_solvers(G: Any) -> list[tuple[str, Callable[[], Any], list[tuple[str, int]]]]:
    """(label, default solver, plan) for the images/second column; the plan lists the step-timed
    method rows and their step counts, to estimate solves too slow to run."""
    from genprior.solvers import CSGM, ILO, CSGMConfig, ILOConfig
    from genprior.solvers.common import per_round
    from genprior.solvers.ilo import default_stages

    out: list[tuple[str, Callable[[], Any], list[tuple[str, int]]]] = []
    stages = default_stages(G.num_stages)
    steps = per_round(ILOConfig().steps, 1 + len(stages))
    plan = [("ilo (round 0)", steps[0])] + [
        (f"ilo (round at stage {k})", n) for k, n in zip(stages, steps[1:])
    ]
    out.append(("ilo", lambda: ILO(G, ILOConfig()), plan))
    if len(stages) > 1:  # also one intermediate round only (works without LayeredGenerator.advance)
        out.append(("ilo stages=[1]", lambda: ILO(G, ILOConfig(stages=(1,))), plan[:2]))
    c = CSGMConfig()
    out.append(("csgm", lambda: CSGM(G, CSGMConfig()), [("csgm", c.steps * c.restarts)]))
    try:
        from genprior.solvers.pulse import PULSE, PULSEConfig

        out.append(("pulse", lambda: PULSE(G), [("pulse", PULSEConfig().steps)]))
    except ImportError:
        pass
    try:
        from genprior.solvers.projector import ProjectorConfig, StyleGAN2Projector

        if not _is_stylegan2(G):
            raise ImportError
        out.append(("projector", lambda: StyleGAN2Projector(G), [("projector", ProjectorConfig().steps)]))
    except ImportError:
        pass
    return out


def generator_free_solvers(
    shape: tuple[int, int, int], dev: torch.device
) -> list[tuple[str, Callable[[int | None], Any], int]]:
    out: list[tuple[str, Callable[[int | None], Any], int]] = []
    try:
        from genprior.solvers.dip import DeepImagePrior, DIPConfig

        out.append(
            (
                "dip",
                lambda n: DeepImagePrior(shape, DIPConfig(**({} if n is None else {"steps": n})), device=dev),
                DIPConfig().steps,
            )
        )
    except ImportError:
        pass
    try:
        from genprior.solvers.sparse import Lasso, LassoConfig

        for basis in ("pixel", "dct", "wavelet"):
            alpha = 1e-3 if basis != "pixel" else 0.1
            out.append(
                (
                    f"lasso-{basis}",
                    lambda n, b=basis, a=alpha: Lasso(shape, LassoConfig(basis=b, alpha=a), device=dev),
                    0,
                )
            )
    except ImportError:
        pass
    return out


# ---- where ILO's step time goes -----------------------------------------------------------------
ABLATION = (
    ("bare G fwd+bwd", "the reference: forward, x.square().mean(), backward"),
    ("+ physics.A and mse fidelity", "loss = fidelity(physics.A(x), y)"),
    (
        "+ Adam (zero_grad, lr schedule, step)",
        "per step: set the lr of each group, zero_grad, step (foreach where ILO uses it)",
    ),
    ("+ spherical projection", "project_to_norm on every free input"),
    ("+ l1-ball projection of the state", "project_state (rounds >= 1 only)"),
    ("+ BestTracker.update", "per step: the best iterate per image"),
    (
        "+ per-step error bookkeeping",
        "old: err.cpu() and torch.minimum per step; new: a device list, one transfer per round",
    ),
    ("+ RunRecord.log_step", "old: two .cpu().tolist() per step; new: buffered, RunRecord.finish once"),
    (
        "+ geocross term and its log",
        "old: zeros_like term and float(gx.mean()) per step; new: log_extra(0.0) without groups",
    ),
    ("= ILO step (measured)", "ILO.solve, differenced"),
)


def ablate_ilo(
    G: Any, B: int, stage: int, steps: int, dev: torch.device, repeats: int
) -> list[tuple[str, float]]:
    """Time ILO's step piece by piece: each level adds one part of ``ILO.solve``'s loop body.

    Re-implements the loop of one round (same calls, same order) with switches, so that the cost
    of every part can be read off as a difference. Returns ``[(label, ms per step), ...]``.
    """
    from genprior.losses import fidelity
    from genprior.physics import make_physics
    from genprior.solvers import ILO, ILOConfig
    from genprior.solvers.common import BestTracker, RunRecord, batch_norms, lr_schedule, project_to_norm
    from genprior.solvers.projections import project_state

    # the loop changed in commit 4604fd6 (buffered records, foreach Adam, no geocross without
    # groups): replicate whichever version of ILO.solve is installed
    new = hasattr(RunRecord, "finish")
    physics = make_physics("inpaint", G.image_shape, mask_ratio=0.5, seed=0, device=dev)
    y = physics.A(G.sample(B, seed=1).to(dev))
    g = torch.Generator().manual_seed(0)
    inputs = G.sample_inputs(B, generator=g, device=dev)
    norms = {k: batch_norms(v) for k, v in inputs.items()}
    with torch.no_grad():
        state0 = tuple(s.detach() for s in G.head(stage, inputs)) if stage > 0 else ()
    # ILOConfig's default relative radius: ||state - state0||_1 <= 0.4 ||state0||_1, per image
    radius = 0.4 * sum(s.reshape(B, -1).abs().sum(1) for s in state0) if state0 else math.inf

    def loop(level: int) -> None:
        free = {k: inputs[k].detach().clone().requires_grad_(True) for k in G.tail_inputs(stage)}
        state = tuple(s.clone().requires_grad_(True) for s in state0)
        groups = [{"params": list(free.values()), "lr": 0.1, "base": 0.1}]
        if state:
            groups.append({"params": list(state), "lr": 0.05, "base": 0.05})
        opt = torch.optim.Adam(groups, foreach=True) if new else torch.optim.Adam(groups)
        best, rec = BestTracker(B), RunRecord("ilo")
        round_best = torch.full((B,), math.inf)
        errs = []
        for t in range(steps):
            cur = {**inputs, **free}
            x = G(cur) if stage == 0 else G.tail(stage, state, cur)
            if level == 0:
                loss = x.square().mean()
                loss.backward()
                for p in list(free.values()) + list(state):
                    p.grad = None
                continue
            err = fidelity(physics.A(x), y, "mse")
            loss = err
            if level >= 8 and not new:
                gx = torch.zeros_like(err)
                loss = loss + 1e-4 * gx
            if level >= 5:
                best.update(err, x, 0)
            if level >= 6:
                if new:
                    errs.append(err.detach())
                else:
                    err_cpu = err.detach().float().cpu()
                    round_best = torch.minimum(round_best, err_cpu)
            if level >= 7:
                rec.log_step(loss, err, B, 0)
            if level >= 8:
                if new:
                    rec.log_extra("geocross", 0.0)
                else:
                    rec.extra.setdefault("geocross", []).append(float(gx.detach().mean()))
            if level >= 2:
                f = lr_schedule(t, steps)
                for grp in opt.param_groups:
                    grp["lr"] = grp["base"] * f
                opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            if level >= 2:
                opt.step()
            else:
                for p in list(free.values()) + list(state):
                    p.grad = None
            with torch.no_grad():
                if level >= 3:
                    for k, v in free.items():
                        project_to_norm(v, norms[k])
                if level >= 4 and state:
                    project_state(state, state0, radius)
        if new and level >= 6 and errs:
            torch.stack(errs).float().cpu()
        if new and level >= 7:
            rec.finish()

    st = tuple() if stage == 0 else (stage,)

    def ilo(n: int) -> None:
        ILO(G, ILOConfig(stages=st, steps=(n,) if stage == 0 else (0, n)))(y, physics)

    levels = [lv for lv in range(9) if not (lv == 4 and not state0)]
    jobs: list[tuple[str, Callable[[], None]]] = [(ABLATION[lv][0], lambda lv=lv: loop(lv)) for lv in levels]
    jobs.append(("ilo short", lambda: ilo(3)))
    jobs.append((ABLATION[9][0], lambda: ilo(3 + steps)))
    best = {label: math.inf for label, _ in jobs}
    for _, fn in jobs:  # warm-up
        fn()
    for _ in range(repeats):  # interleaved, so that every part sees the same machine load
        for label, fn in jobs:
            best[label] = min(best[label], _timed(fn, dev))
    out = [
        (label, best[label] / steps * 1e3) for label, _ in jobs if not label.startswith(("ilo short", "="))
    ]
    out.append((ABLATION[9][0], (best[ABLATION[9][0]] - best["ilo short"]) / steps * 1e3))
    return out


def run_ablation(args: argparse.Namespace) -> list[dict[str, Any]]:
    from genprior.solvers.ilo import default_stages
    from genprior.zoo import load_generator

    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models or ["mnist-vae-20"]:
        G = load_generator(name, device=dev)
        for B in args.batches:
            stages = (
                args.ablate_stages
                if args.ablate_stages is not None
                else [0] + default_stages(G.num_stages)[:1]
            )
            for stage in [k for k in stages if k <= G.num_stages]:
                res = ablate_ilo(G, B, stage, args.ablate_steps, dev, args.repeats)
                bare = res[0][1]
                print(f"\n{name}, batch {B}, ILO round at stage {stage}  (ms per step, ratio to bare)")
                prev = None
                for label, ms in res:
                    delta = "" if prev is None or label.startswith("=") else f"  (+{ms - prev:.3f})"
                    print(f"  {label:<40} {ms:8.3f}  {ms / bare:5.2f}{delta}")
                    rows.append(
                        {
                            "model": name,
                            "batch": B,
                            "stage": stage,
                            "part": label,
                            "ms": ms,
                            "ratio": ms / bare,
                        }
                    )
                    prev = ms if not label.startswith("=") else prev
    return rows


def l1_microbench(repeats: int, dev: torch.device) -> list[dict[str, Any]]:
    """Cost of ILO's ``project_state`` alone, for state shapes of the bundled generators, with the
    deviation outside the ball (the projection is active) and inside it (only the check runs).
    The radius is ILOConfig's default, 0.4 times the l1 norm of the starting state."""
    from genprior.solvers.projections import project_state

    shapes = (
        ("mnist-vae-20 stage 1/2", (500,)),
        ("dcgan-faces-64 stage 1", (512, 4, 4)),
        ("dcgan-faces-64 stage 2", (256, 8, 8)),
        ("dcgan-faces-64 stage 3", (128, 16, 16)),
    )
    rows = []
    for name, shape in shapes:
        for B in (1, 8, 32):
            g = torch.Generator().manual_seed(0)
            s0 = (torch.rand((B, *shape), generator=g).to(dev),)
            radius = 0.4 * s0[0].reshape(B, -1).abs().sum(1)
            outside = (s0[0] + 0.5 * torch.randn((B, *shape), generator=g).to(dev),)
            inside = (s0[0] + 1e-4 * torch.randn((B, *shape), generator=g).to(dev),)
            n = 20
            res = {}
            for label, st in (("active", outside), ("inactive", inside), ("copy", None)):
                src = outside if st is None else st

                def run(src=src, st=st) -> None:
                    for _ in range(n):
                        t = tuple(x.clone() for x in src)
                        if st is not None:
                            project_state(t, s0, radius)

                run()
                res[label] = _min_time(run, dev, repeats) / n
            row = {
                "state": name,
                "batch": B,
                "numel": int(torch.tensor(shape).prod()),
                "active_ms": (res["active"] - res["copy"]) * 1e3,
                "inactive_ms": (res["inactive"] - res["copy"]) * 1e3,
            }
            print(
                f"  {name:<26} B={B:<3} {row['numel']:>6} values: active {row['active_ms']:8.3f} ms, "
                f"inactive {row['inactive_ms']:7.3f} ms",
                flush=True,
            )
            rows.append(row)
    return rows


# ---- the benchmark ------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        n = re.search(r"^CPU\(s\):\s*(\d+)", out, re.M)
        if m:
            return f"{m.group(1).strip()} ({n.group(1) if n else '?'} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from genprior.physics import make_physics
    from genprior.zoo import list_models, load_generator

    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    names = args.models or [m["name"] for m in list_models() if m["installed"]]
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(_line(row), flush=True)
        if args.out is not None:  # keep what is measured even if a later model fails
            write(rows, args.out, {**args.meta, "status": "partial"})

    print(_header(), flush=True)
    for name in names:
        try:
            G = load_generator(name, device=dev)
            G.sample(1, seed=0)
        except Exception as e:
            print(f"# {name}: skipped ({type(e).__name__}: {e})", flush=True)
            continue
        shape = tuple(G.image_shape)
        physics = make_physics("inpaint", shape, mask_ratio=0.5, seed=0, device=dev)
        for B in args.batches:
            x = G.sample(B, seed=1).to(dev)
            with torch.no_grad():
                y = physics.A(x)
            step_s: dict[str, float] = {}
            for spec in method_table(G):
                base = dict(model=name, batch=B, method=spec["method"])
                try:
                    bare = bare_fn(G, B, spec["stage"], tuple(spec["free"]), dev)
                    t0 = _timed(bare, dev)
                    n = int(
                        min(
                            args.max_steps,
                            max(args.min_steps, math.ceil(args.target_seconds / max(t0, 1e-6))),
                        )
                    )
                    tb, step = measure(
                        bare, spec["make"], y, physics, args.n1, args.n1 + n, args.inner, dev, args.repeats
                    )
                    step_s[spec["method"]] = step
                    emit({**base, "bare_ms": tb * 1e3, "step_ms": step * 1e3, "ratio": step / tb})
                except Exception as e:
                    emit({**base, "note": f"fails: {type(e).__name__} {str(e)[:60]}".strip()})
            if args.steps_only:
                continue
            # full solves with default settings
            for label, make, plan in full_solvers(G):
                emit(_full_solve(label, make, plan, name, B, y, physics, dev, args, step_s))
        # generator-free baselines: same images, their own cost (per-image algorithms)
        for B in [] if args.steps_only else args.baseline_batches:
            x = G.sample(B, seed=1).to(dev)
            with torch.no_grad():
                y = physics.A(x)
            for label, make, total_steps in generator_free_solvers(shape, dev):
                base = dict(model=name, batch=B, method=label)
                try:
                    step = None
                    if total_steps:
                        n = args.min_steps
                        step = solver_step(lambda k: make(k), y[:1], physics, args.n1, args.n1 + n, dev, 1)
                        # one network per image, run one after the other: B images cost B times one
                        est = B * step * total_steps
                        if est > args.max_solve_seconds:
                            emit(
                                {
                                    **base,
                                    "step_ms": step * 1e3 * B,
                                    "img_s": 1.0 / (step * total_steps),
                                    "img_s_note": "est.",
                                    "note": "per-image networks, sequential",
                                }
                            )
                            continue
                    with PeakMemory(dev) as mem:
                        t = _timed(lambda: make(None)(y, physics), dev)
                    emit(
                        {
                            **base,
                            "step_ms": None if step is None else step * 1e3 * B,
                            "img_s": B / t,
                            "peak_mib": _mib(mem.peak),
                        }
                    )
                except Exception as e:
                    emit({**base, "note": f"fails: {type(e).__name__} {str(e)[:60]}".strip()})
        del G
    return rows


def _full_solve(
    label: str,
    make: Callable[[], Any],
    plan: list[tuple[str, int]],
    name: str,
    B: int,
    y: torch.Tensor,
    physics: Any,
    dev: torch.device,
    args: argparse.Namespace,
    step_s: dict[str, float],
) -> dict[str, Any]:
    base = {"model": name, "batch": B, "method": f"{label} (full solve)"}
    total = sum(n for _, n in plan)
    try:
        if all(k in step_s for k, _ in plan):
            est = sum(n * step_s[k] for k, n in plan)
            if est > args.max_solve_seconds:  # too slow to run here: estimate from the step times
                return {
                    **base,
                    "img_s": B / est,
                    "img_s_note": "est.",
                    "note": f"{total} steps, ~{est:.0f} s",
                }
        solver = make()
        with PeakMemory(dev) as mem:
            t = _timed(lambda: solver(y, physics), dev)
        return {**base, "img_s": B / t, "peak_mib": _mib(mem.peak), "note": f"{total} steps, {t:.2f} s"}
    except Exception as e:
        return {**base, "note": f"fails: {type(e).__name__} {str(e)[:60]}".strip()}


def _mib(v: float | None) -> float | None:
    return None if v is None else v / 2**20


COLUMNS = (
    "model",
    "batch",
    "method",
    "bare_ms",
    "step_ms",
    "ratio",
    "img_s",
    "img_s_note",
    "peak_mib",
    "note",
)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _header() -> str:
    return f"{'model':<20} {'B':>3} {'method':<28} {'bare ms':>9} {'step ms':>9} {'ratio':>6} {'img/s':>9} {'peak MiB':>9}  note"


def _line(r: dict[str, Any]) -> str:
    img = _fmt(r.get("img_s")) + (" " + r["img_s_note"] if r.get("img_s_note") else "")
    return (
        f"{r['model']:<20} {r['batch']:>3} {r['method']:<28} {_fmt(r.get('bare_ms')):>9} {_fmt(r.get('step_ms')):>9} "
        f"{_fmt(r.get('ratio')):>6} {img:>9} {_fmt(r.get('peak_mib')):>9}  {r.get('note', '')}"
    )


def write(rows: list[dict[str, Any]], out: Path, meta: dict[str, str]) -> None:
    import csv
    import io

    from genprior.io import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") if r.get(k) is not None else "" for k in COLUMNS})
    write_text_atomic(out.with_suffix(".csv"), buf.getvalue())
    md = [f"<!-- {k}: {v} -->" for k, v in meta.items()]
    md += [
        "| model | batch | method | bare fwd+bwd (ms) | step (ms) | overhead ratio | images/s | peak memory (MiB) | note |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        img = _fmt(r.get("img_s")) + (f" ({r['img_s_note']})" if r.get("img_s_note") else "")
        md.append(
            f"| {r['model']} | {r['batch']} | {r['method']} | {_fmt(r.get('bare_ms'))} | {_fmt(r.get('step_ms'))} | "
            f"{_fmt(r.get('ratio'))} | {img} | {_fmt(r.get('peak_mib'))} | {r.get('note', '')} |"
        )
    write_text_atomic(out.with_suffix(".md"), "\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        type=lambda s: [v for v in s.split(",") if v],
        help="comma list (default: every installed zoo model)",
    )
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument(
        "--baseline-batches",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=[1],
        help="batch sizes for the generator-free baselines (Lasso, DIP), default 1",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (minimum is kept)")
    p.add_argument("--inner", type=int, default=5, help="bare passes per timing")
    p.add_argument("--n1", type=int, default=3, help="steps of the shorter solve")
    p.add_argument("--min-steps", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument(
        "--target-seconds", type=float, default=0.5, help="aim for this long a differenced interval"
    )
    p.add_argument(
        "--max-solve-seconds", type=float, default=60.0, help="estimate instead of running longer full solves"
    )
    p.add_argument("--out", type=Path, help="write OUT.csv and OUT.md")
    p.add_argument(
        "--ablate-ilo", action="store_true", help="instead: where ILO's step time goes, part by part"
    )
    p.add_argument("--ablate-steps", type=int, default=200)
    p.add_argument(
        "--ablate-stages",
        type=lambda s: [int(v) for v in s.split(",") if v],
        default=None,
        help="ILO rounds to take apart (0 = round 0; default 0 and the first intermediate stage)",
    )
    p.add_argument(
        "--steps-only",
        action="store_true",
        help="only the per-step times and ratios (no full solves, no baselines)",
    )
    p.add_argument(
        "--l1", action="store_true", help="instead: cost of ILO's l1-ball projection of the state alone"
    )
    p.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="auto: process CPU time on a CPU with --threads 1, else wall clock",
    )
    args = p.parse_args(argv)
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.device == "cpu" and args.threads == 1)
    CLOCK.update(fn=time.process_time, name="process CPU time") if use_cpu else CLOCK.update(
        fn=time.perf_counter, name="wall"
    )
    meta = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "device": args.device
        if args.device == "cpu"
        else torch.cuda.get_device_name(torch.device(args.device)),
        "torch": torch.__version__,
        "threads": str(args.threads),
        "clock": CLOCK["name"],
        "genprior": str(Path(__import__("genprior").__file__).parent),
        "load average at start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    for k, v in meta.items():
        print(f"# {k}: {v}")
    args.meta = meta
    if args.l1:
        torch.set_num_threads(args.threads)
        rows = l1_microbench(args.repeats, torch.device(args.device))
        if args.out is not None:
            import csv
            import io

            from genprior.io import write_text_atomic

            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            write_text_atomic(args.out.with_suffix(".csv"), buf.getvalue())
            print(f"wrote {args.out.with_suffix('.csv')}")
        return 0
    if args.ablate_ilo:
        rows = run_ablation(args)
        if args.out is not None:
            import csv
            import io

            from genprior.io import write_text_atomic

            buf = io.StringIO()
            w = csv.DictWriter(
                buf, fieldnames=["model", "batch", "stage", "part", "ms", "ratio"], lineterminator="\n"
            )
            w.writeheader()
            w.writerows(rows)
            write_text_atomic(args.out.with_suffix(".csv"), buf.getvalue())
            print(f"wrote {args.out.with_suffix('.csv')}")
        return 0
    try:
        rows = run(args)
    except UserError as e:
        print(f"speed.py: error: {e}", file=sys.stderr)
        return 2
    meta["load average at end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    if args.out is not None:
        write(rows, args.out, meta)
        print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
