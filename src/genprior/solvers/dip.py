"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018): an untrained network as the prior.

For each image, a randomly initialised convolutional network ``f_theta`` with a fixed random input
``z`` is fitted to the measurements, ``min_theta ||A f_theta(z) - y||^2`` (mean over entries), with
Adam; the architecture's bias towards natural images, and stopping early, do the regularising.
The network is deepinv's :class:`deepinv.models.ConvDecoder` (Darestani & Heckel 2021), the one
deepinv recommends for its own :class:`deepinv.models.DeepImagePrior`. genprior runs its own loop
instead of calling deepinv's ``DeepImagePrior.forward`` because that one draws ``z`` from the
global RNG (no seed), fits one network to the whole batch, and returns no run record; the loss is
the same (deepinv's ``MCLoss``: the MSE between ``A f_theta(z)`` and ``y``).

Defaults: Adam with lr 0.01 (the paper's and deepinv's), ``ConvDecoder`` with 7 layers and a
4x4 input (deepinv's), 128 channels (deepinv: 256; halved so 64 px images run on a CPU), and
1000 steps (the paper uses 1800-3000 depending on the task, deepinv 2500: more steps fit the
measurements better and the noise too). Every image gets a fresh network and input, seeded with
``seed + i``; nothing touches the global RNG. ``input_noise_std`` > 0 perturbs ``z`` at every step
(the paper's regulariser, ``1/30`` in several of its experiments); it is off by default, as in
deepinv. The output is the last iterate (``output="best"``: the one of lowest measurement MSE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from deepinv.models import ConvDecoder
from torch import Tensor

from ..errors import UserError
from ..losses import fidelity
from .common import (
    Best,
    GeneratorFreeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_choice,
    check_int,
    check_number,
    check_seed,
    finish_run,
    is_int,
    is_sequence,
    progress_bar,
    setting_error,
)

__all__ = ["DeepImagePrior", "DIPConfig"]


@dataclass
class DIPConfig(SolverConfig):
    """Settings of :class:`DeepImagePrior`.

    Attributes:
        steps: Adam steps per image (paper: 1800-3000 by task; deepinv: 2500).
        lr: Adam learning rate (paper and deepinv: 0.01).
        layers: ``ConvDecoder`` layers (deepinv: 7).
        channels: ``ConvDecoder`` channels (deepinv: 256).
        in_size: spatial size of the random input ``z``, which has ``channels`` channels (deepinv: 4x4).
        input_noise_std: std of the Gaussian perturbation of ``z`` at each step (paper: 1/30 in
            some experiments; 0 disables it).
        output: ``"last"`` or ``"best"`` (lowest measurement MSE over the run).
        seed: image ``i`` uses seed ``seed + i`` for its network and input.
    """

    steps: int = 1000
    lr: float = 0.01
    layers: int = 7
    channels: int = 128
    in_size: tuple[int, int] = (4, 4)
    input_noise_std: float = 0.0
    output: str = "last"
    seed: int = 0

    def validate(self) -> None:
        check_int(self, "steps", 1)
        check_number(self, "lr")
        check_int(self, "layers", 2)
        check_int(self, "channels", 1)
        if not (
            is_sequence(self.in_size)
            and len(self.in_size) == 2
            and all(is_int(v) and v >= 1 for v in self.in_size)
        ):
            raise setting_error(self, "in_size", "give two integers >= 1 (height, width), e.g. (4, 4)")
        check_number(self, "input_noise_std")
        check_choice(self, "output", ("last", "best"))
        check_seed(self)


class DeepImagePrior(GeneratorFreeSolver):
    """Deep Image Prior as a deepinv ``Reconstructor``: ``x_hat = DeepImagePrior((C, H, W))(y, physics)``."""

    method = "dip"

    def __init__(
        self,
        image_shape: Sequence[int],
        config: DIPConfig | None = None,
        device: torch.device | str = "cpu",
        **overrides: Any,
    ):
        config = apply_overrides(config or DIPConfig(), overrides)
        super().__init__(image_shape, config, device)

    def network(self, seed: int, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Tensor]:
        """The seeded network and input of one image."""
        cfg: DIPConfig = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ConvDecoder(
                self.image_shape, in_size=tuple(cfg.in_size), layers=cfg.layers, channels=cfg.channels
            )
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((1, cfg.channels, *cfg.in_size), generator=g)
        return net.to(device), z.to(device)

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        cfg: DIPConfig = self.config
        self._check_y(y)
        batch = y.shape[0]
        rec = RunRecord(method=self.method)
        losses = torch.zeros(cfg.steps, batch)
        outs: list[Tensor] = []
        best_err = torch.zeros(batch)
        bar = progress_bar(cfg.steps * batch, progress, "DIP")
        with Timer() as timer, torch.enable_grad():
            for i in range(batch):
                net, z = self.network(cfg.seed + i, y.device)
                g = torch.Generator().manual_seed(cfg.seed + i + 1_000_003)
                opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
                yi = y[i : i + 1]
                best_x, best_e = None, float("inf")
                for t in range(cfg.steps + 1):
                    last = t == cfg.steps
                    zin = z
                    if cfg.input_noise_std > 0 and not last:
                        zin = z + cfg.input_noise_std * torch.randn(z.shape, generator=g).to(z.device)
                    with torch.set_grad_enabled(not last):
                        x = net(zin)
                        ax = physics.A(x)
                        if t == 0 and ax.shape[1:] != yi.shape[1:]:
                            raise UserError(
                                f"the physics maps a {self.image_shape} image to {tuple(ax.shape[1:])}, but the "
                                f"measurements are {tuple(yi.shape[1:])}: check the image shape"
                            )
                        err = fidelity(ax, yi, "mse")
                    e = float(err.detach())
                    if (cfg.output == "best" and e < best_e) or (last and cfg.output == "last"):
                        best_x, best_e = x.detach(), e
                    if last:
                        break
                    losses[t, i] = e
                    opt.zero_grad(set_to_none=True)
                    err.sum().backward()
                    opt.step()
                    bar.update(1)
                assert best_x is not None
                outs.append(best_x)
                best_err[i] = best_e
        bar.close()
        rec.loss = losses.tolist()
        rec.meas_err = losses.tolist()
        rec.round_of_step = [0] * cfg.steps
        best = Best(torch.cat(outs, 0), best_err, torch.zeros(batch, dtype=torch.long))
        return finish_run(rec, best, timer, round_steps=cfg.steps, output=cfg.output, steps=cfg.steps)
