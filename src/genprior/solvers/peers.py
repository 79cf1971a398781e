"""Other libraries' implementations of genprior's methods, as rows of the method table.

A comparison is only as honest as its baselines: these rows run another library's own code on
genprior's generators and measurements, so the bench compares them with genprior's solvers on the
same images, operators and noise (``benchmarks/peers.py``).

``csgm-deepinv`` is deepinv's :class:`deepinv.models.CSGMGenerator` (Bora et al. 2017) as deepinv
runs it: one image at a time, a latent drawn uniformly in ``[-1, 1]`` from torch's global random
generator, Adam on the mean squared residual for ``steps`` iterations (stopping early when the
loss changes by less than ``tol`` relative to itself; 0 runs every step), and the last iterate as
the output. The generator is wrapped as deepinv's backbone (a module with an ``nz`` attribute,
mapping ``z`` of shape ``(1, nz, 1, 1)`` to an image): ``z`` is every latent input of the
generator laid end to end (the DCGAN: its 100-d ``z``; the StyleGAN2: its W+ rows), and the other
inputs (StyleGAN2's noise maps) are held at the draw genprior's CSGM holds them at for the same
seed. Nothing of deepinv's loop is changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..generators.base import Inputs, LayeredGenerator
from ..metrics import measurement_error
from .common import (
    Best,
    GenerativeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_int,
    check_number,
    check_seed,
    finish_run,
)


@dataclass
class DeepinvCSGMConfig(SolverConfig):
    """Settings of :class:`DeepinvCSGM` (deepinv's names in brackets).

    Attributes:
        steps: Adam iterations per image (``inf_max_iter``; deepinv's default 2500).
        lr: Adam's learning rate (``inf_lr``; deepinv's default 0.01).
        tol: stop once the loss changes by less than this, relative to itself (``inf_tol``;
            deepinv's default 1e-4); 0 runs every step, for comparisons at equal steps.
        seed: image ``i`` of a batch draws its latent after ``torch.manual_seed(seed + i)`` (the
            caller's random state is restored afterwards); the held inputs come from ``seed`` as
            in genprior's CSGM.
    """

    steps: int = 2500
    lr: float = 0.01
    tol: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        check_int(self, "steps", 1)
        check_number(self, "lr", 0.0, above=True)
        check_number(self, "tol")
        check_seed(self)


class LatentBackbone(nn.Module):
    """A :class:`LayeredGenerator` as deepinv's generator backbone: ``z`` of shape ``(B, nz, 1, 1)``
    holds the generator's latent inputs end to end; ``held`` gives the other inputs (batch 1 or
    ``B``)."""

    def __init__(self, generator: LayeredGenerator, held: Inputs):
        super().__init__()
        self.generator = generator
        self.held = held
        self.names = generator.latent_names()
        self.shapes = [tuple(generator.spec(n).shape) for n in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.nz = sum(self.sizes)  # deepinv reads the latent size from this attribute

    def forward(self, z: Tensor) -> Tensor:
        parts = z.reshape(z.shape[0], self.nz).split(self.sizes, dim=1)
        latents = {n: p.reshape(z.shape[0], *s) for n, p, s in zip(self.names, parts, self.shapes)}
        return self.generator({**self.held, **latents})


def deepinv_starts(generator: LayeredGenerator, held: Inputs, n: int, seed: int) -> Inputs:
    """The inputs :class:`DeepinvCSGM` starts ``n`` images from (deepinv's draw: per image ``i``,
    torch's global generator seeded ``seed + i`` (forked, so nothing outside changes), the
    latents end to end uniform in [-1, 1], on the generator's device) with ``held`` (batch ``n``)
    for the other inputs: genprior's CSGM started there (``CSGM.solve(start=...)``) runs the same
    algorithm from the same point."""
    backbone = LatentBackbone(generator, {})
    dev = generator.device
    zs = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for i in range(n):
            torch.manual_seed(seed + i)
            zs.append(torch.rand(1, backbone.nz, 1, 1, device=dev) * 2 - 1)
    parts = torch.cat(zs).reshape(n, backbone.nz).split(backbone.sizes, dim=1)
    latents = {k: p.reshape(n, *s) for k, p, s in zip(backbone.names, parts, backbone.shapes)}
    return {**held, **latents}


class DeepinvCSGM(GenerativeSolver):
    """deepinv's CSGM on a genprior generator, as a deepinv ``Reconstructor``:
    ``x_hat = DeepinvCSGM(G, DeepinvCSGMConfig(steps=...))(y, physics)``. The physics must apply to
    one image of the batch (operators whose parameters have batch size 1, as the bench's)."""

    method = "csgm-deepinv"

    def __init__(
        self, generator: LayeredGenerator, config: DeepinvCSGMConfig | None = None, **overrides: Any
    ):
        config = apply_overrides(config or DeepinvCSGMConfig(), overrides)
        super().__init__(generator, config)

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        from deepinv.models import CSGMGenerator

        cfg: DeepinvCSGMConfig = self.config
        G = self.generator
        self._check_y(y)
        B = y.shape[0]
        held = self._init_inputs(B, cfg.seed)  # genprior's CSGM holds these same non-latent inputs
        held = {k: v for k, v in held.items() if k not in G.latent_names()}
        dev = G.device
        devices = [dev] if dev.type == "cuda" else []
        xs = []
        with Timer() as timer:
            for i in range(B):
                backbone = LatentBackbone(G, {k: v[i : i + 1] for k, v in held.items()})
                net = CSGMGenerator(
                    backbone,
                    inf_max_iter=cfg.steps,
                    inf_tol=cfg.tol,
                    inf_lr=cfg.lr,
                    inf_progress_bar=progress,
                ).eval()
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(cfg.seed + i)
                    xs.append(net(y[i : i + 1], physics).detach())
        x = torch.cat(xs)
        with torch.no_grad():
            err = measurement_error(x, y, physics)
        rec = RunRecord(method=self.method)
        best = Best(x, err.float(), torch.zeros(B, dtype=torch.long))
        return finish_run(rec, best, timer, round_steps=cfg.steps)
