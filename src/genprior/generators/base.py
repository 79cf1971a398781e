"""The layered-generator interface: the one place where solvers and generators meet.

A solver (ILO, CSGM, PULSE, Langevin, ...) never knows which network it drives, and a network
never knows which solver drives it. Everything a solver needs is here:

* ``input_specs``: the generator's inputs (latent codes and noise maps), their shapes and kinds;
  ``sample_inputs`` draws them.
* ``num_stages`` and, for every stage ``k`` in ``0..num_stages``, a split ``G = tail_k o head_k``:
  ``head(k, inputs) -> state`` and ``tail(k, state, inputs) -> image``. ``state`` is a tuple of
  tensors holding *everything* the tail needs to go on (for StyleGAN2 the feature map and the
  running RGB skip image). Resuming from ``head(k, ...)`` reproduces ``forward`` exactly.
* ``advance(j, k, state, inputs)``: runs the layers from stage ``j`` to stage ``k`` on any
  state, so an optimised (off-range) state at stage ``j`` can be carried to stage ``k``.
* ``tail_inputs(k)``: the names of the inputs that ``tail_k`` still reads; these are the inputs
  that stay free when an intermediate-layer solver optimises the state at stage ``k``.

Convention: ``forward`` / ``tail`` return images in ``[0, 1]`` (roughly; they are not clamped),
shape ``(B, C, H, W)``, whatever the native range of the wrapped network is. Inputs are dicts
``name -> tensor`` with a leading batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import UserError

State = tuple[Tensor, ...]
Inputs = dict[str, Tensor]


@dataclass(frozen=True)
class InputSpec:
    """One input of a layered generator.

    Attributes:
        name: key in the inputs dict.
        shape: shape of one sample, without the batch dimension.
        kind: ``"latent"`` (a code the solver searches; geocross and latent priors apply) or
            ``"noise"`` (a per-layer noise map, e.g. StyleGAN2's).
        group: latents with the same group are the rows of one extended code (StyleGAN2's W+);
            PULSE's geocross penalises the angles between the members of a group.
    """

    name: str
    shape: tuple[int, ...]
    kind: Literal["latent", "noise"] = "latent"
    group: str | None = None


class LayeredGenerator(nn.Module):
    """Base class of every generator genprior can drive. Subclasses implement ``head``/``tail``.

    Stage 0 is the input itself: ``head(0, inputs)`` is the (possibly empty) state before any layer
    runs and ``tail(0, ...)`` is the whole network. Stage ``num_stages`` is the deepest split.
    """

    input_specs: tuple[InputSpec, ...] = ()
    num_stages: int = 0
    #: image shape (C, H, W) of the output
    image_shape: tuple[int, int, int] = (3, 0, 0)

    # ---- inputs -------------------------------------------------------------------------------
    def sample_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Inputs:
        """Draw inputs from the generator's input distribution (standard normal by default)."""
        device = self.device if device is None else torch.device(device)
        out: Inputs = {}
        for spec in self.input_specs:
            t = torch.randn((batch_size, *spec.shape), generator=generator, device="cpu")
            out[spec.name] = t.to(device)
        return out

    def sample_native_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Inputs:
        """Inputs whose outputs are distributed as the generator's own samples (what it was trained
        to produce). :meth:`sample_inputs` draws from the prior of the space a solver searches,
        which can be wider (StyleGAN2's W+ with independent rows); by default the two agree."""
        return self.sample_inputs(batch_size, generator=generator, device=device)

    def shared_tail_latents(self, k: int) -> tuple[str, ...]:
        """The latent inputs that ``tail(k, ...)`` reads and that the generator's own samples set to
        one shared vector, which also made the state (StyleGAN2: the later W+ rows, each the
        sample's ``w``). A model of the state at stage ``k`` models that vector with it. Default:
        none."""
        return ()

    def independent_tail_latents(self, k: int) -> tuple[str, ...]:
        """The other latent inputs that ``tail(k, ...)`` reads: the generator's own samples
        (:meth:`sample_native_inputs`) draw them from ``N(0, I)`` independently of the state at
        stage ``k``, so a posterior sampler of the state may give them that exact prior."""
        shared = self.shared_tail_latents(k)
        return tuple(n for n in self.tail_inputs(k) if self.spec(n).kind == "latent" and n not in shared)

    def latent_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.input_specs if s.kind == "latent")

    def noise_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.input_specs if s.kind == "noise")

    def spec(self, name: str) -> InputSpec:
        for s in self.input_specs:
            if s.name == name:
                return s
        raise KeyError(name)

    def tail_inputs(self, k: int) -> tuple[str, ...]:
        """Names of the inputs that ``tail(k, ...)`` reads. Default: all of them."""
        return tuple(s.name for s in self.input_specs)

    # ---- the split ----------------------------------------------------------------------------
    def head(self, k: int, inputs: Inputs) -> State:
        raise NotImplementedError

    def tail(self, k: int, state: State, inputs: Inputs) -> Tensor:
        raise NotImplementedError

    def advance(self, k_from: int, k_to: int, state: State, inputs: Inputs) -> State:
        """Run the layers between stage ``k_from`` and stage ``k_to >= k_from`` on ``state``.

        ``advance(j, k, head(j, inputs), inputs) == head(k, inputs)`` and
        ``tail(k, advance(j, k, s, inputs), inputs) == tail(j, s, inputs)`` for any state ``s``:
        this is how ILO carries a state it has moved off the generator's range one stage deeper.
        """
        raise NotImplementedError

    def forward(self, inputs: Inputs) -> Tensor:
        return self.tail(0, self.head(0, inputs), inputs)

    # ---- helpers ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def check_stage(self, k: int) -> None:
        if not 0 <= k <= self.num_stages:
            raise UserError(f"stage {k} is out of range for {type(self).__name__}: use 0..{self.num_stages}")

    def check_span(self, k_from: int, k_to: int) -> None:
        """Validate the stages of an ``advance(k_from, k_to, ...)`` call."""
        self.check_stage(k_from)
        self.check_stage(k_to)
        if k_to < k_from:
            raise ValueError(f"advance only goes deeper: stage {k_from} -> {k_to}")

    @torch.no_grad()
    def sample(self, batch_size: int, seed: int | None = None) -> Tensor:
        """The generator's own samples (:meth:`sample_native_inputs`), in [0, 1]."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return self(self.sample_native_inputs(batch_size, generator=g))
