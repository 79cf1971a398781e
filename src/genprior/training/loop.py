"""The optimiser loop the step-seeded trainers share (``train score``, ``train ddpm``,
``train autoencoder``, ``train ldm``), and the resumable run with checkpoints and an EMA that they all
use (:func:`train_resumable`).

Each step: the learning rate of a linear warm-up, the step's loss (whose data and noise come from
the step number, so that a resumed run repeats an uninterrupted one bit for bit), one optimiser
step, the EMA of the weights, the running loss every 50 steps, a checkpoint every
``ckpt_every`` steps and when stopping (at ``stop_at``, after ``max_seconds`` of training in
all, or on an error).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..generators.checkpoint import safe_load
from ..io import atomic_path, config_dict


def run_steps(
    *,
    step: int,
    stop_at: int,
    elapsed: float,
    history: list[dict[str, float]],
    window: list[float],
    end: int,
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
    checkpoint. ``history`` gets the mean loss of every 50 steps and of the last ones before
    ``end`` (the run's whole length); ``window`` ``[sum, count]`` holds the losses since the last
    entry (both in place, and in the checkpoints: a run stopped and resumed logs what an
    uninterrupted one does). Returns the last checkpoint."""
    from tqdm.auto import tqdm

    pairs = list(zip(list(ema_params), list(params)))
    bar = tqdm(
        total=stop_at, initial=min(step, stop_at), disable=not progress, desc=f"train {what}", unit="step"
    )
    t0 = time.perf_counter()
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
            window[0], window[1] = window[0] + lv, window[1] + 1
            bar.update(1)
            if step % 50 == 0 or step == end:
                history.append({"step": step, "loss": window[0] / window[1]})
                bar.set_postfix(loss=f"{window[0] / window[1]:.4f}")
                window[0], window[1] = 0.0, 0
            if step % ckpt_every == 0 and step < stop_at:
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint(step, elapsed)
    finally:
        bar.close()
        elapsed += time.perf_counter() - t0
        ck = checkpoint(step, elapsed)
    return ck


CHECKPOINT_NAME = "checkpoint.pt"


def check_run_config(cfg: Any, positive: tuple[str, ...] = ("batch", "ckpt_every")) -> None:
    """The checks every run config of :func:`train_resumable` shares: integer fields are integers,
    ``positive`` ones at least 1, ``steps``, ``warmup`` and ``seed`` at least 0, ``lr`` > 0 and
    ``ema`` in [0, 1); a one-line :class:`UserError` naming the config and the field otherwise."""
    name = type(cfg).__name__
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.type in ("int", int) and (not isinstance(v, int) or isinstance(v, bool)):
            raise UserError(f"{name}: {f.name} = {v!r}: give an integer")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise UserError(f"{name}: {key} = {getattr(cfg, key)}: give an integer >= 1")
    if cfg.steps < 1:
        raise UserError(f"{name}: steps = {cfg.steps}: give an integer >= 1")
    if cfg.warmup < 0 or cfg.seed < 0:
        raise UserError(f"{name}: warmup and seed must be >= 0")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"{name}: lr = {cfg.lr}: give a number > 0")
    if not 0 <= cfg.ema < 1:
        raise UserError(f"{name}: ema = {cfg.ema}: give a number in [0, 1)")


def train_resumable(
    out: str | os.PathLike,
    config: Any,
    config_cls: type,
    *,
    train_format: str,
    what: str,
    resume: bool,
    new_model: Callable[[Any], nn.Module],
    from_dict: Callable[[dict[str, Any]], nn.Module],
    trainable: Callable[[nn.Module], Iterable[Tensor]],
    loss_at: Callable[[nn.Module, Any, int], Tensor],
    loaded: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """A resumable run of :func:`run_steps` with AdamW (no weight decay) and an EMA of the model,
    checkpointed to ``out/checkpoint.pt``: ``{"format": train_format, "config", "model", "ema",
    "opt", "step", "history", "window", "elapsed_s"}``.

    A new run builds ``new_model(cfg)`` after seeding torch with ``cfg.seed``; ``resume`` reads
    the checkpoint back (the config saved in it, with ``config.steps`` as the new target when a
    config is given). ``loss_at(model, cfg, step)`` is the loss of a step, whose draws must come
    from the step number for a resumed run to repeat an uninterrupted one bit for bit. ``loaded``:
    the checkpoint, when the caller has read it already (it is then not read again); ``extra``:
    further fields written into every checkpoint (what the caller checks on resuming)."""
    out = Path(out)
    ck_path = out / CHECKPOINT_NAME
    if resume:
        if not ck_path.is_file():
            raise UserError(f"cannot resume: {ck_path} does not exist; drop --resume to start a new run")
        ck = loaded if loaded is not None else safe_load(ck_path)
        if not isinstance(ck, dict) or ck.get("format") != train_format:
            raise UserError(f"{ck_path} is not a genprior {what} training checkpoint: give another --out")
        saved = dict(ck["config"])
        saved["steps"] = config.steps if config is not None else saved["steps"]
        cfg = config_cls(**saved)
        step, history, elapsed = int(ck["step"]), list(ck["history"]), float(ck["elapsed_s"])
        window = list(ck.get("window", [0.0, 0]))  # checkpoints before 2026-12-06 lack it
        if cfg.steps < step:
            raise UserError(
                f"{ck_path} is at step {step}, past steps = {cfg.steps}: give --steps {step} or more"
            )
        model, ema = from_dict(ck["model"]), from_dict(ck["ema"])
    else:
        cfg = config or config_cls()
        if ck_path.exists():
            raise UserError(f"{ck_path} already exists: pass --resume to continue it, or give another --out")
        torch.manual_seed(cfg.seed)  # the network's initialisation only
        model = new_model(cfg)
        ema = copy.deepcopy(model)
        step, history, window, elapsed, ck = 0, [], [0.0, 0], 0.0, None
    model, ema = model.to(device).train(), ema.to(device).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(trainable(model), lr=cfg.lr, weight_decay=0.0)
    if ck is not None:
        opt.load_state_dict(ck["opt"])
    stop_at = cfg.steps if max_steps is None else min(cfg.steps, max_steps)

    def checkpoint(step: int, elapsed: float) -> dict[str, Any]:
        d = {
            "format": train_format,
            "config": config_dict(cfg),
            "model": model.to_dict(),
            "ema": ema.to_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "history": history,
            "window": window,
            "elapsed_s": elapsed,
            **(extra or {}),
        }
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(ck_path) as tmp:
            torch.save(d, tmp)
        return d

    return run_steps(
        step=step,
        stop_at=stop_at,
        elapsed=elapsed,
        history=history,
        window=window,
        end=cfg.steps,
        opt=opt,
        params=trainable(model),
        ema_params=trainable(ema),
        lr=cfg.lr,
        warmup=cfg.warmup,
        ema=cfg.ema,
        ckpt_every=cfg.ckpt_every,
        loss_at=lambda s: loss_at(model, cfg, s),
        checkpoint=checkpoint,
        max_seconds=max_seconds,
        progress=progress,
        what=what,
    )


def ema_file(checkpoint: str | os.PathLike, train_format: str, what: str, **info: Any) -> dict[str, Any]:
    """The EMA model of a training checkpoint (``{"format": train_format, ...}``) as an inference
    file's dict, its ``info`` holding the model's own info, the steps, the training config, the
    seconds and ``info``."""
    ck = safe_load(checkpoint)
    if not isinstance(ck, dict) or ck.get("format") != train_format:
        raise UserError(f"{checkpoint} is not a genprior {what} training checkpoint")
    d = dict(ck["ema"])
    run = {"steps": ck["step"], "train_config": ck["config"], "elapsed_s": ck["elapsed_s"]}
    d["info"] = {**d.get("info", {}), **run, **info}
    return d


def save_atomic(d: dict[str, Any], out: str | os.PathLike) -> dict[str, Any]:
    """``torch.save(d, out)``, atomically; returns ``d``."""
    with atomic_path(out) as tmp:
        torch.save(d, tmp)
    return d


def export_ema(
    checkpoint: str | os.PathLike, out: str | os.PathLike, train_format: str, what: str, **info: Any
) -> dict[str, Any]:
    """Write :func:`ema_file` of ``checkpoint`` to ``out`` (atomically) and return it."""
    return save_atomic(ema_file(checkpoint, train_format, what, **info), out)
