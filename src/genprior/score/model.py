"""A score model of a generator's state at one stage: the network, the state's normalisation,
and the generator it belongs to.

The network is a transformer with **one token per spatial position** of the state, as in SGILO:
a state tensor ``(C, H, W)`` gives ``H W`` tokens of ``C`` features, a latent ``(R, F)`` (the rows
of W+) ``R`` tokens, a vector ``(F,)`` one token. Each tensor of the state (StyleGAN2's feature
map and its RGB skip image) has its own input and output projection and position embeddings;
the tokens of all of them attend to each other. The time enters as a sinusoidal embedding added
to every token. Small by default (width 128, 4 layers): a few MB.

Where the generator's tail reads a latent that its own samples share with the head (StyleGAN2's
later W+ rows repeat the ``w`` that made the state), the model covers it too: its last tensor is
that vector (one token), and ``latents`` names the generator inputs it stands for
(:func:`modelled_tensors`, :func:`split_modelled`). "The state" below includes it.

The model works on the *normalised* state ``u = (state - mean) / scale`` (``mean`` elementwise,
``scale`` one number per tensor, both measured on generator samples when training starts), so one
noise schedule suits every layer. It predicts the noise ``eps`` of the VP SDE
(:mod:`genprior.score.sde`) as ``sqrt(1 - abar(t)) u_t + F_theta(u_t, t)``: the first term is the
exact answer for a standard normal state, so the network ``F`` (zero at initialisation) learns
only how the state differs from one, and the score never starts worse than a Gaussian's.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from .sde import VPSDE

FORMAT = "genprior-state-score-1"
Shapes = tuple[tuple[int, ...], ...]


def token_layout(shape: Sequence[int]) -> tuple[int, int]:
    """``(tokens, features)`` of one state tensor of per-sample ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape[1] * shape[2], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 1:
        return 1, shape[0]
    raise UserError(f"a state tensor of shape {shape} has no token layout: give (C, H, W), (R, F) or (F,)")


def _to_tokens(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 3:
        return x
    return x.unsqueeze(1)


def _from_tokens(tok: Tensor, shape: Sequence[int]) -> Tensor:
    if len(shape) == 3:
        return tok.transpose(1, 2).reshape(tok.shape[0], *shape)
    if len(shape) == 2:
        return tok
    return tok.squeeze(1)


def modelled_tensors(
    G: Any, stage: int, inputs: dict[str, Tensor], latents: Sequence[str] = ()
) -> tuple[Tensor, ...]:
    """What a score model of ``G``'s state at ``stage`` models for these inputs: the state
    ``G.head(stage, inputs)`` and, when ``latents`` names the tail's shared latent inputs
    (``G.shared_tail_latents``), their mean (the shared vector itself for the generator's own
    samples; a solver's estimate where the rows differ)."""
    state = tuple(x.detach() for x in G.head(stage, inputs))
    if not latents:
        return state
    return state + (torch.stack([inputs[n].detach() for n in latents]).mean(0),)


def split_modelled(
    modelled: Sequence[Tensor], inputs: dict[str, Tensor], latents: Sequence[str] = ()
) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    """The inverse of :func:`modelled_tensors`: the state and the tail's inputs (``inputs`` with
    every shared latent input set to the modelled vector) that modelled tensors stand for."""
    if not latents:
        return tuple(modelled), inputs
    return tuple(modelled[:-1]), {**inputs, **{n: modelled[-1] for n in latents}}


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of ``1000 t`` (``t`` of shape ``(B,)``), ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    a = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], 1)


class StateScoreNet(nn.Module):
    """``eps_theta(u, t)`` for a state of the given per-sample ``shapes``."""

    def __init__(self, shapes: Shapes, width: int = 128, depth: int = 4, heads: int = 4):
        super().__init__()
        self.shapes = tuple(tuple(int(s) for s in sh) for sh in shapes)
        self.width, self.depth, self.heads = int(width), int(depth), int(heads)
        layout = [token_layout(s) for s in self.shapes]
        self.inp = nn.ModuleList(nn.Linear(f, width) for _, f in layout)
        self.pos = nn.ParameterList(nn.Parameter(0.02 * torch.randn(n, width)) for n, _ in layout)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.ModuleList(nn.Linear(width, f) for _, f in layout)
        for o in self.out:  # start as the zero predictor
            nn.init.zeros_(o.weight)
            nn.init.zeros_(o.bias)
        self._counts = [n for n, _ in layout]

    def forward(self, u: Sequence[Tensor], t: Tensor) -> tuple[Tensor, ...]:
        temb = self.time(time_embedding(t, self.width))[:, None]
        tok = torch.cat([lin(_to_tokens(x)) + p for lin, x, p in zip(self.inp, u, self.pos)], 1) + temb
        h = self.norm(self.blocks(tok))
        parts = torch.split(h, self._counts, 1)
        return tuple(_from_tokens(o(p), s) for o, p, s in zip(self.out, parts, self.shapes))


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, values): which weights a score
    model was trained on."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class StateScoreModel(nn.Module):
    """A trained score model of the state at ``stage`` of the generator whose weights hash to
    ``generator_sha`` (:func:`weights_fingerprint`)."""

    def __init__(
        self,
        net: StateScoreNet,
        mean: Sequence[Tensor],
        scale: Sequence[float],
        stage: int,
        generator_sha: str,
        sde: VPSDE | None = None,
        info: dict[str, Any] | None = None,
        latents: Sequence[str] = (),
    ):
        super().__init__()
        self.net = net
        self.latents = tuple(str(n) for n in latents)  # the inputs the last tensor stands for
        self.sde = sde or VPSDE()
        self.stage = int(stage)
        self.generator_sha = str(generator_sha)
        self.info = dict(info or {})
        for i, m in enumerate(mean):
            self.register_buffer(f"mean{i}", m.detach().float().clone())
        self.register_buffer("scale", torch.tensor([float(s) for s in scale], dtype=torch.float32))

    @property
    def shapes(self) -> Shapes:
        return self.net.shapes

    def _mean(self, i: int) -> Tensor:
        return getattr(self, f"mean{i}")

    # ---- coordinates ------------------------------------------------------------------------
    def normalize(self, state: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple((s - self._mean(i)) / self.scale[i] for i, s in enumerate(state))

    def denormalize(self, u: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(x * self.scale[i] + self._mean(i) for i, x in enumerate(u))

    # ---- scores ------------------------------------------------------------------------------
    def eps(self, u: Sequence[Tensor], t: Tensor) -> tuple[Tensor, ...]:
        """The predicted noise: ``sqrt(1 - abar) u_t`` (exact if the normalised state were
        ``N(0, I)``) plus the network's correction, which starts at zero."""
        c = (1 - self.sde.abar(t)).sqrt()
        return tuple(c.view(-1, *([1] * (x.dim() - 1))) * x + f for x, f in zip(u, self.net(u, t)))

    def score(self, u: Sequence[Tensor], sigma: float) -> tuple[Tensor, ...]:
        """Score of the normalised state blurred by Gaussian noise of std ``sigma``,
        ``grad log p_sigma(u)`` (the variance-exploding view of the VP model)."""
        t = torch.full((u[0].shape[0],), self.sde.t_of_sigma(sigma), device=u[0].device)
        c = 1.0 / math.sqrt(1.0 + sigma * sigma)
        return tuple(-e / sigma for e in self.eps(tuple(c * x for x in u), t))

    def check_generator(self, G: nn.Module) -> None:
        """Refuse a generator other than the one this model was trained on."""
        sha = weights_fingerprint(G)
        if sha != self.generator_sha:
            raise UserError(
                f"this score model was trained on another generator (weights {self.generator_sha[:12]}, "
                f"given {sha[:12]}): train one for this generator with `genprior train score`"
            )
        shared = tuple(G.shared_tail_latents(self.stage))
        if self.latents != shared:
            raise UserError(
                f"this score model covers the tail latents {list(self.latents)} but the generator's tail "
                f"at stage {self.stage} shares {list(shared)}: train it again with this genprior"
            )

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, steps: int = 500, seed: int = 0, t_min: float = 1e-3, device: Any = None
    ) -> tuple[Tensor, ...]:
        """``n`` states drawn with the reverse VP SDE (Euler-Maruyama, ``steps`` uniform steps
        from ``t = 1`` to ``t_min``, then Tweedie's denoising), in the generator's coordinates."""
        device = torch.device(device) if device is not None else self.scale.device
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = tuple(torch.randn((n, *s), generator=g).to(device) for s in self.shapes)
        ts = torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)
        for i in range(steps):
            t, dt = float(ts[i]), float(ts[i] - ts[i + 1])
            tt = torch.full((n,), t, device=device)
            ab = float(self.sde.abar(torch.tensor(t)))
            beta = float(self.sde.beta(torch.tensor(t)))
            eps = self.eps(x, tt)
            x = tuple(
                xi
                + dt * (0.5 * beta * xi + beta * (-e / math.sqrt(1 - ab)))
                + math.sqrt(beta * dt) * torch.randn(xi.shape, generator=g).to(device)
                for xi, e in zip(x, eps)
            )
        t = float(ts[-1])
        ab = float(self.sde.abar(torch.tensor(t)))
        eps = self.eps(x, torch.full((n,), t, device=device))
        x0 = tuple((xi - math.sqrt(1 - ab) * e) / math.sqrt(ab) for xi, e in zip(x, eps))
        return self.denormalize(x0)

    # ---- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "shapes": [list(s) for s in self.shapes],
            "width": self.net.width,
            "depth": self.net.depth,
            "heads": self.net.heads,
            "mean": [self._mean(i).detach().cpu() for i in range(len(self.shapes))],
            "scale": [float(s) for s in self.scale],
            "stage": self.stage,
            "generator_sha": self.generator_sha,
            "sde": {"beta_min": self.sde.beta_min, "beta_max": self.sde.beta_max},
            "info": self.info,
            "latents": list(self.latents),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateScoreModel:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(
                f"not a genprior score model (no format {FORMAT!r}): give a file of `genprior train score`"
            )
        shapes = tuple(tuple(s) for s in d["shapes"])
        net = StateScoreNet(shapes, d["width"], d["depth"], d["heads"])
        net.load_state_dict(d["net"])
        return cls(
            net,
            d["mean"],
            d["scale"],
            d["stage"],
            d["generator_sha"],
            VPSDE(**d["sde"]),
            d.get("info"),
            d.get("latents", ()),
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = "cpu") -> StateScoreModel:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"score model {p} does not exist: give the file `genprior train score` wrote")
        from ..generators.checkpoint import safe_load

        return cls.from_dict(safe_load(p)).to(device).eval()


class InputPrior:
    """The exact prior of a generator whose own samples draw every input independently from
    ``N(0, I)`` (the DCGAN's ``z``; ``G.shared_tail_latents(0)`` is empty): SGILO's score model
    of stage 0 that models no tensor, so every input follows the Langevin dynamics under its exact
    ``N(0, I)`` prior (SGILO's ``tail_latents`` and ``tail_noise``). No training, no file. A
    StyleGAN2, whose W+ rows all repeat one ``w = mapping(z)``, needs a learned model of ``w``."""

    stage = 0
    shapes: tuple = ()
    latents: tuple = ()

    def normalize(self, state: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(state)

    def denormalize(self, u: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(u)

    def score(self, u: Sequence[Tensor], sigma: float) -> tuple[Tensor, ...]:
        return ()

    def eval(self) -> InputPrior:
        return self

    @staticmethod
    def fits(G: Any) -> bool:
        """Whether ``G``'s own samples draw all its inputs independently from ``N(0, I)``."""
        return not tuple(G.shared_tail_latents(0))

    def check_generator(self, G: Any) -> None:
        if not self.fits(G):
            raise UserError(
                f"{type(G).__name__}'s own samples share the latents {list(G.shared_tail_latents(0))} "
                "across its inputs, so their prior is not N(0, I): give a score model trained with "
                "`genprior train score --stage 0`"
            )
