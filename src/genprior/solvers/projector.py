"""The StyleGAN2 projector (Karras, Laine, Aittala, Hellsten, Lehtinen, Aila, "Analyzing and
Improving the Image Quality of StyleGAN", CVPR 2020; ``projector.py`` of NVlabs' stylegan2-ada-pytorch),
on any layered generator and any measurement operator.

It searches a single ``w`` per latent group, broadcast to every row of the group (W, not W+),
starting from the mean latent ``w_avg``, together with all the generator's noise maps:

* ``w`` is perturbed by Gaussian noise of scale ``w_std * initial_noise_factor * max(0, 1 - t /
  noise_ramp_length)^2`` at progress ``t`` in [0, 1) (the perturbation vanishes after 75% of the
  run), where ``w_std`` is the root of the mean squared distance of sampled latents to their mean;
* the loss is LPIPS (VGG16) between ``A(x)`` and ``y`` when they are images, else their MSE,
  plus ``regularize_noise_weight`` times the noise regulariser :func:`noise_regularizer`;
* after every Adam step each noise map is renormalised to zero mean and unit variance;
* the learning rate follows the warm-up / cosine ramp-down of
  :func:`~genprior.solvers.common.lr_schedule` (rampup 0.05, rampdown 0.25).

``w_avg`` is the generator's latent mean: ``generator.latent_mean()`` when the generator has that
method (a tensor broadcast to every latent, or a dict from latent name to tensor), else zeros --
right for generators whose latents are standard normal (DCGAN's z, the Gaussianised W of PULSE).
``w_std`` is estimated from ``w_avg_samples`` draws of ``generator.sample_inputs`` (seed 123, as in
the reference).

Defaults follow the reference except ``steps`` (1000 there; 300 here so the bundled small
generators finish in seconds on a CPU) and ``w_avg_samples`` (10 000 there; 1000 here: the
estimate moves by about 2%, and drawing noise maps for every sample is the cost). As in the
reference, the output is the final iterate (``output="best"`` returns the iterate of lowest
measurement error instead); images larger than 256 px are area-downsampled to 256 px before LPIPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..generators.base import Inputs, LayeredGenerator
from ..losses import fidelity
from .common import (
    Best,
    BestTracker,
    GenerativeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_choice,
    check_int,
    check_number,
    check_seed,
    finish_run,
    lr_schedule,
    progress_bar,
    setting_error,
)

__all__ = ["StyleGAN2Projector", "ProjectorConfig", "noise_regularizer", "normalize_noise", "DISTANCES"]

DISTANCES: tuple[str, ...] = ("auto", "lpips", "mse")
#: the LPIPS trunks :class:`genprior.losses.lpips.LPIPS` knows (any letter case)
LPIPS_NETS: tuple[str, ...] = ("vgg", "vgg16", "alex", "alexnet")
OUTPUTS: tuple[str, ...] = ("last", "best")


def noise_regularizer(maps: list[Tensor]) -> Tensor:
    """The projector's multi-scale noise regulariser, per image: shape ``(B,)``.

    For every map and every level of its average-pooling pyramid (halving until the shorter side
    is 8 px or less), the squared mean of the map times itself shifted by one pixel (circularly),
    horizontally and vertically: it vanishes for spatially uncorrelated noise and penalises noise
    maps that carry image structure. Maps are ``(B, ..., H, W)``; leading channels are pooled
    together; a side of length 1 has no shift.
    """
    if not maps:
        raise ValueError("noise_regularizer needs at least one noise map")
    b = maps[0].shape[0]
    reg = maps[0].new_zeros(b)
    for v in maps:
        if v.dim() < 2:
            raise ValueError("noise maps must have a batch dimension and at least one spatial dimension")
        n = v.reshape(b, -1, *v.shape[-2:]) if v.dim() >= 3 else v.reshape(b, 1, 1, -1)
        while True:
            for dim in (3, 2):
                if n.shape[dim] > 1:
                    reg = reg + (n * torch.roll(n, shifts=1, dims=dim)).mean(dim=(1, 2, 3)).pow(2)
            if min(n.shape[2], n.shape[3]) <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return reg


@torch.no_grad()
def normalize_noise(v: Tensor) -> None:
    """In place: each sample of ``v`` to zero mean and unit variance (the projector's renormalisation)."""
    dims = tuple(range(1, v.dim()))
    v.sub_(v.mean(dim=dims, keepdim=True))
    v.mul_(v.square().mean(dim=dims, keepdim=True).clamp_min(1e-12).rsqrt())


@dataclass
class ProjectorConfig(SolverConfig):
    """Settings of :class:`StyleGAN2Projector` (defaults: stylegan2-ada ``projector.py`` unless noted).

    Attributes:
        steps: Adam steps (reference: 1000).
        lr: initial learning rate (reference: 0.1), scaled by the warm-up / ramp-down schedule.
        rampup, rampdown: warm-up and cosine ramp-down lengths as fractions of the run
            (reference: 0.05, 0.25).
        initial_noise_factor: scale of the perturbation of ``w`` relative to ``w_std`` (0.05).
        noise_ramp_length: fraction of the run over which the perturbation decays (0.75).
        regularize_noise_weight: weight of :func:`noise_regularizer` (1e5).
        w_avg_samples: samples used to estimate ``w_std`` (reference: 10 000).
        distance: ``"lpips"`` (VGG16 LPIPS between ``A(x)`` and ``y``; they must be 1- or
            3-channel images), ``"mse"``, or ``"auto"``: LPIPS when they are such images, else MSE.
        lpips_net: trunk of the LPIPS distance (reference: VGG16).
        output: ``"last"`` (reference) or ``"best"`` (lowest measurement MSE over the run).
        seed: seed of the initial noise maps and of the perturbations of ``w``.
    """

    steps: int = 300
    lr: float = 0.1
    rampup: float = 0.05
    rampdown: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    w_avg_samples: int = 1000
    distance: str = "auto"
    lpips_net: str = "vgg"
    output: str = "last"
    seed: int = 0

    def validate(self) -> None:
        check_int(self, "steps", 1)
        for name in ("lr", "rampup", "rampdown", "initial_noise_factor", "noise_ramp_length"):
            check_number(self, name)
        check_number(self, "regularize_noise_weight")
        check_int(self, "w_avg_samples", 2)
        check_choice(self, "distance", DISTANCES)
        if not (isinstance(self.lpips_net, str) and self.lpips_net.lower() in LPIPS_NETS):
            raise setting_error(self, "lpips_net", f"use one of {', '.join(repr(n) for n in LPIPS_NETS)}")
        check_choice(self, "output", OUTPUTS)
        check_seed(self)


class StyleGAN2Projector(GenerativeSolver):
    """The StyleGAN2 projector as a deepinv ``Reconstructor``: ``x_hat = StyleGAN2Projector(G)(y, physics)``.

    ``solver.last_record.extra`` holds ``distance`` (the one used), ``w_std`` (per optimised
    code) and ``noise_reg`` (the final regulariser per image).
    """

    method = "projector"

    def __init__(self, generator: LayeredGenerator, config: ProjectorConfig | None = None, **overrides: Any):
        config = apply_overrides(config or ProjectorConfig(), overrides)
        super().__init__(generator, config)
        self.codes = self._codes()
        self._lpips_cache: dict[str, Any] = {}

    # ---- the codes ----------------------------------------------------------------------------
    def _codes(self) -> dict[str, tuple[str, ...]]:
        """One optimised code per latent group (its members share it) and per ungrouped latent."""
        codes: dict[str, list[str]] = {}
        for spec in self.generator.input_specs:
            if spec.kind != "latent":
                continue
            key = f"group:{spec.group}" if spec.group is not None else spec.name
            codes.setdefault(key, []).append(spec.name)
        for key, names in codes.items():
            shapes = {self.generator.spec(n).shape for n in names}
            if len(shapes) > 1:
                raise UserError(
                    f"latent group {key[6:]!r} mixes shapes {sorted(shapes)}: the projector needs one shared w per group"
                )
        return {k: tuple(v) for k, v in codes.items()}

    def w_avg(self) -> dict[str, Tensor]:
        """The initial code of each group: the generator's ``latent_mean()``, else zeros."""
        G = self.generator
        fn = getattr(G, "latent_mean", None)
        mean = fn() if callable(fn) else None
        out = {}
        for key, names in self.codes.items():
            shape = G.spec(names[0]).shape
            if mean is None:
                m = torch.zeros(shape)
            elif isinstance(mean, dict):
                m = mean.get(names[0], mean.get(key[6:] if key.startswith("group:") else key))
                if m is None:
                    raise UserError(f"{type(G).__name__}.latent_mean() has no entry for latent {names[0]!r}")
            else:
                m = mean
            out[key] = torch.as_tensor(m, dtype=torch.float32).to(G.device).expand(shape).clone()
        return out

    @torch.no_grad()
    def w_std(self) -> dict[str, float]:
        """Root mean squared distance of sampled codes to their mean, per code (the reference's
        ``w_std``), from ``w_avg_samples`` draws of the input distribution (seed 123)."""
        G = self.generator
        total = int(self.config.w_avg_samples)
        per_sample = sum(math.prod(s.shape) for s in G.input_specs) or 1
        chunk = max(1, min(total, 2**22 // per_sample))
        g = torch.Generator().manual_seed(123)
        first = {key: names[0] for key, names in self.codes.items()}
        s1 = {key: 0.0 for key in first}
        s2 = {key: 0.0 for key in first}
        done = 0
        while done < total:
            k = min(chunk, total - done)
            inputs = G.sample_inputs(k, generator=g, device="cpu")
            for key, name in first.items():
                z = inputs[name].reshape(k, -1).double()
                s1[key] = s1[key] + z.sum(0)
                s2[key] += float(z.square().sum())
            done += k
        return {
            key: math.sqrt(max(0.0, (s2[key] - float(s1[key].square().sum()) / total) / total))
            for key in first
        }

    # ---- the distance -------------------------------------------------------------------------
    def _distance_fn(self, y: Tensor):
        cfg: ProjectorConfig = self.config
        image_like = y.dim() == 4 and y.shape[1] in (1, 3)
        if cfg.distance == "lpips" and not image_like:
            raise UserError(
                f"LPIPS needs measurements that are 1- or 3-channel images (B, C, H, W): got shape "
                f"{tuple(y.shape)}; use distance='mse' (or 'auto')"
            )
        if cfg.distance == "mse" or not image_like:
            return "mse", lambda ax, yy: fidelity(ax, yy, "mse")
        if cfg.lpips_net not in self._lpips_cache:
            from ..losses.lpips import LPIPS

            self._lpips_cache[cfg.lpips_net] = LPIPS(cfg.lpips_net).to(self.generator.device)
        lp = self._lpips_cache[cfg.lpips_net]

        def dist(ax: Tensor, yy: Tensor) -> Tensor:
            if max(ax.shape[-2:]) > 256:  # VGG was built for 224 px: the reference works at 256 px
                scale = 256 / max(ax.shape[-2:])
                size = (max(1, round(ax.shape[-2] * scale)), max(1, round(ax.shape[-1] * scale)))
                ax, yy = F.interpolate(ax, size=size, mode="area"), F.interpolate(yy, size=size, mode="area")
            return lp(ax, yy)

        return "lpips", dist

    # ---- the solve ----------------------------------------------------------------------------
    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        cfg: ProjectorConfig = self.config
        G = self.generator
        self._check_y(y)
        batch = y.shape[0]
        dist_name, dist = self._distance_fn(y)
        inputs = self._init_inputs(batch, cfg.seed)
        w = {
            k: v.unsqueeze(0).repeat((batch,) + (1,) * v.dim()).requires_grad_(True)
            for k, v in self.w_avg().items()
        }
        w_std = self.w_std()
        noise = {k: inputs[k].clone().requires_grad_(True) for k in G.noise_names()}
        opt = torch.optim.Adam(list(w.values()) + list(noise.values()), betas=(0.9, 0.999), lr=cfg.lr)
        g_pert = torch.Generator().manual_seed(cfg.seed + 1)

        def assemble(codes: dict[str, Tensor]) -> Inputs:
            cur = dict(inputs)
            for key, names in self.codes.items():
                for n in names:
                    cur[n] = codes[key]
            cur.update(noise)
            return cur

        rec = RunRecord(method=self.method)
        best = BestTracker(batch)
        bar = progress_bar(cfg.steps, progress, "projector")
        with Timer() as timer:
            for t in range(cfg.steps + 1):
                last = t == cfg.steps
                frac = t / cfg.steps
                with torch.set_grad_enabled(not last):
                    if last:
                        codes = w
                    else:
                        ramp = (
                            max(0.0, 1.0 - frac / cfg.noise_ramp_length) ** 2
                            if cfg.noise_ramp_length > 0
                            else 0.0
                        )
                        codes = {}
                        for k, v in w.items():
                            scale = w_std[k] * cfg.initial_noise_factor * ramp
                            pert = torch.randn(v.shape, generator=g_pert).to(v.device) * scale
                            codes[k] = v + pert
                    x = G(assemble(codes))
                    ax = physics.A(x)
                    err = fidelity(ax, y, "mse")
                    loss = err if dist_name == "mse" else dist(ax, y)
                    reg = noise_regularizer(list(noise.values())) if noise else None
                    if reg is not None and cfg.regularize_noise_weight > 0:
                        loss = loss + cfg.regularize_noise_weight * reg
                if cfg.output == "best" or last:
                    best.update(err, x, 0)
                if last:
                    break
                rec.log_step(loss, err, batch, 0)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_schedule(t, cfg.steps, cfg.rampup, cfg.rampdown)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                for v in noise.values():
                    normalize_noise(v)
                bar.update(1)
        bar.close()
        assert best.x is not None
        return finish_run(
            rec,
            Best(x.detach() if cfg.output == "last" else best.x, best.err, best.round),
            timer,
            round_steps=cfg.steps,
            best_round=[0] * batch,
            distance=dist_name,
            w_std=w_std,
            noise_reg=(reg.detach().float().cpu().tolist() if reg is not None else [0.0] * batch),
            output=cfg.output,
        )
