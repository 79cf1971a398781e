"""The optimiser loop the step-seeded trainers share (``train score``, ``train ddpm``).

Each step: the learning rate of a linear warm-up, the step's loss (whose data and noise come from
the step number, so that a resumed run repeats an uninterrupted one bit for bit), one optimiser
step, the EMA of the weights, the running loss every 50 steps, a checkpoint every
``ckpt_every`` steps and when stopping (at ``stop_at``, after ``max_seconds`` of training in
all, or on an error).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError


def run_steps(
    *,
    step: int,
    stop_at: int,
    elapsed: float,
    history: list[dict[str, float]],
    opt: torch.optim.Optimizer,
    params: Iterable[Tensor],
    ema_params: Iterable[Tensor],
    lr: float,
    warmup: int,
    ema: float,
    ckpt_every: int,
    loss_at: Callable[[int], Tensor],
    checkpoint: Callable[[int, float], dict[str, Any]],
    max_seconds: float | None,
    progress: bool,
    what: str,
) -> dict[str, Any]:
    """Run steps ``step .. stop_at - 1``; ``checkpoint(step, elapsed)`` writes and returns a
    checkpoint (``history`` is appended to in place). Returns the last checkpoint."""
    from tqdm.auto import tqdm

    pairs = list(zip(list(ema_params), list(params)))
    bar = tqdm(
        total=stop_at, initial=min(step, stop_at), disable=not progress, desc=f"train {what}", unit="step"
    )
    t0 = time.perf_counter()
    run_sum, run_n = 0.0, 0
    try:
        while step < stop_at:
            if max_seconds is not None and elapsed + time.perf_counter() - t0 > max_seconds:
                break
            for grp in opt.param_groups:
                grp["lr"] = lr * min(1.0, (step + 1) / max(warmup, 1))
            loss = loss_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for pe, pm in pairs:
                    pe.lerp_(pm, 1 - ema)
            step += 1
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise UserError(f"the {what} loss became {lv} at step {step}: lower --lr or change --seed")
            run_sum, run_n = run_sum + lv, run_n + 1
            bar.update(1)
            if step % 50 == 0 or step == stop_at:
                history.append({"step": step, "loss": run_sum / run_n})
                bar.set_postfix(loss=f"{run_sum / run_n:.4f}")
                run_sum, run_n = 0.0, 0
            if step % ckpt_every == 0 and step < stop_at:
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint(step, elapsed)
    finally:
        bar.close()
        elapsed += time.perf_counter() - t0
        ck = checkpoint(step, elapsed)
    return ck
