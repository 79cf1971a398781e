"""Fully connected (leaky) ReLU generators: random expansive networks and trained ReLU MLPs.

The objects of the inversion theory (Hand & Voroninski; Lei, Jalal, Dhillon & Dimakis 2019;
Daskalakis, Rohatgi & Zampetakis 2020): a latent ``z`` in R^k goes through ``d`` layers

    x_0 = z,    x_i = act_i(W_i x_{i-1} + b_i),    i = 1..d,    G(z) = x_d in R^n,

with widths ``k = n_0 -> n_1 -> ... -> n_d = n``. For a *random* network the entries of
``W_i`` (shape ``n_i x n_{i-1}``) are i.i.d. ``N(0, 1/n_i)``: the variance is one over the
layer's **output** width, the normalisation of Hand & Voroninski, under which
``||W_i x|| ~ ||x||`` and a ReLU layer roughly halves ``||x||^2``. Biases (optional) are i.i.d.
``N(0, bias_std^2 / n_i)``.

Output convention. The output is the raw last-layer vector, not an image: ``image_shape`` is
``(1, 1, n)`` and ``forward`` returns ``(B, 1, 1, n)``; :meth:`RandomReLUGenerator.vector`
returns the same values as ``(B, n)``. The network computes in ``float64`` by default, which
the exact-recovery experiments (relative latent error below 1e-6) need; inputs of another dtype
are cast.

Layered-generator contract. Stage ``j`` (``1..d``) is "after layer ``j``": the state is
``(x_j,)``, shape ``(B, n_j)``, and ``tail(j, state, inputs)`` runs layers ``j+1..d`` on
``state[0]`` and reads no input (``tail_inputs(j) == ()``). Stage 0 follows the repository's
convention (the state before any layer is empty): ``head(0, inputs) == ()`` and ``tail(0, (),
inputs)`` reads ``inputs["z"]``, so ``tail_inputs(0) == ("z",)`` and a stage-0 solver round
optimises ``z``. ``tail(j, head(j, inputs), inputs) == forward(inputs)`` exactly (same operations
in the same order), and ``advance(j, l, state, inputs)`` carries any state from stage ``j`` to
stage ``l``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Inputs, InputSpec, LayeredGenerator, State

Activation = Literal["relu", "leaky_relu", "linear"]
_ACTIVATIONS = ("relu", "leaky_relu", "linear")


def _check_activation(name: str, what: str) -> str:
    if name not in _ACTIVATIONS:
        raise UserError(f"unknown {what} {name!r}: use one of {', '.join(_ACTIVATIONS)}")
    return name


class RandomReLUGenerator(LayeredGenerator):
    """A fully connected ReLU / leaky-ReLU network ``k -> n_1 -> ... -> n``.

    Args:
        widths: ``(k, n_1, ..., n_d)``, at least two entries, all positive.
        bias: draw biases ``N(0, bias_std^2 / n_i)`` (default: no bias, the setting of the theory).
        bias_std: scale of the random biases.
        activation: hidden activation, ``"relu"`` or ``"leaky_relu"`` (``"linear"`` also allowed).
        negative_slope: slope of the leaky ReLU for negative inputs (ignored for ``"relu"``).
        output_activation: activation of the last layer; ``None`` means the same as ``activation``
            (all layers ReLU, as in the theory); ``"linear"`` gives a linear output layer.
        seed: seed of the weights (a private ``torch.Generator``; the global RNG is untouched).
        dtype: ``torch.float64`` by default.

    Weights are stored as frozen parameters ``weights[i]`` (``n_i x n_{i-1}``) and ``biases[i]``
    (zeros when ``bias=False``); :meth:`weights_biases` returns them as numpy arrays, the form the
    LP inversion (:func:`genprior.theory.lp.lp_invert`) takes.
    """

    def __init__(
        self,
        widths: Sequence[int],
        *,
        bias: bool = False,
        bias_std: float = 1.0,
        activation: Activation = "relu",
        negative_slope: float = 0.2,
        output_activation: Activation | None = None,
        seed: int | None = 0,
        dtype: torch.dtype = torch.float64,
        _weights: Sequence[tuple[Tensor, Tensor | None]] | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise UserError(f"widths {widths} must list at least two positive sizes: k, n_1, ..., n")
        _check_activation(activation, "activation")
        if output_activation is not None:
            _check_activation(output_activation, "output activation")
        if activation == "leaky_relu" or output_activation == "leaky_relu":
            if not 0.0 < float(negative_slope) < 1.0:
                raise UserError(f"negative_slope {negative_slope} must lie in (0, 1) for a leaky ReLU")
        self.widths = widths
        self.activation = activation
        self.output_activation = output_activation or activation
        self.negative_slope = float(negative_slope)
        self.has_bias = bool(bias)
        self.seed = seed
        self.num_stages = len(widths) - 1
        self.image_shape = (1, 1, widths[-1])
        self.input_specs = (InputSpec("z", (widths[0],), kind="latent"),)

        ws, bs = [], []
        if _weights is None:
            g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            for n_in, n_out in zip(widths[:-1], widths[1:]):
                w = torch.randn((n_out, n_in), generator=g, dtype=torch.float64) / np.sqrt(n_out)
                if bias:
                    b = torch.randn((n_out,), generator=g, dtype=torch.float64) * (bias_std / np.sqrt(n_out))
                else:
                    b = torch.zeros(n_out, dtype=torch.float64)
                ws.append(w.to(dtype))
                bs.append(b.to(dtype))
        else:
            for w, b in _weights:
                ws.append(w.to(dtype))
                bs.append(torch.zeros(w.shape[0], dtype=dtype) if b is None else b.to(dtype))
        self.weights = nn.ParameterList([nn.Parameter(w, requires_grad=False) for w in ws])
        self.biases = nn.ParameterList([nn.Parameter(b, requires_grad=False) for b in bs])

    # ---- construction from trained weights ----------------------------------------------------
    @classmethod
    def from_weights(
        cls,
        weights_biases: Sequence[tuple[Tensor | np.ndarray, Tensor | np.ndarray | None]],
        *,
        activation: Activation = "relu",
        negative_slope: float = 0.2,
        output_activation: Activation | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> RandomReLUGenerator:
        """The same structure with given weights: ``[(W_1, b_1), ..., (W_d, b_d)]``.

        ``W_i`` has shape ``(n_i, n_{i-1})`` (the ``torch.nn.Linear.weight`` layout), ``b_i`` shape
        ``(n_i,)`` or ``None``. Use it to wrap a trained ReLU MLP generator, e.g.
        ``from_weights([(l.weight, l.bias) for l in mlp if isinstance(l, nn.Linear)])``.
        """
        if len(weights_biases) < 1:
            raise UserError("from_weights needs at least one (W, b) layer")
        pairs: list[tuple[Tensor, Tensor | None]] = []
        widths = []
        for i, wb in enumerate(weights_biases):
            try:
                w, b = wb
            except (TypeError, ValueError):
                raise UserError(f"layer {i + 1}: give a (W, b) pair, b may be None") from None
            w = torch.as_tensor(
                np.asarray(w.detach().cpu() if isinstance(w, Tensor) else w), dtype=torch.float64
            )
            if w.dim() != 2:
                raise UserError(
                    f"layer {i + 1}: W must be a matrix (n_out, n_in), got shape {tuple(w.shape)}"
                )
            if b is not None:
                b = torch.as_tensor(
                    np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b), dtype=torch.float64
                ).reshape(-1)
                if b.shape[0] != w.shape[0]:
                    raise UserError(f"layer {i + 1}: b has {b.shape[0]} entries but W has {w.shape[0]} rows")
            if widths and widths[-1] != w.shape[1]:
                raise UserError(
                    f"layer {i + 1}: W takes {w.shape[1]} inputs but layer {i} gives {widths[-1]}"
                )
            if not widths:
                widths.append(w.shape[1])
            widths.append(w.shape[0])
            pairs.append((w, b))
        has_bias = any(b is not None and bool((b != 0).any()) for _, b in pairs)
        return cls(
            widths,
            bias=has_bias,
            activation=activation,
            negative_slope=negative_slope,
            output_activation=output_activation,
            seed=None,
            dtype=dtype,
            _weights=pairs,
        )

    # ---- accessors ----------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def latent_dim(self) -> int:
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def depth(self) -> int:
        return self.num_stages

    def layer_activation(self, i: int) -> str:
        """Activation of layer ``i`` (1-based)."""
        return self.output_activation if i == self.num_stages else self.activation

    def weights_biases(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W_1, b_1), ..., (W_d, b_d)]`` as float64 numpy arrays."""
        return [
            (w.detach().cpu().double().numpy().copy(), b.detach().cpu().double().numpy().copy())
            for w, b in zip(self.weights, self.biases)
        ]

    def extra_repr(self) -> str:
        acts = (
            self.activation
            if self.output_activation == self.activation
            else (f"{self.activation}, output {self.output_activation}")
        )
        return f"widths={self.widths}, activation={acts}, bias={self.has_bias}, seed={self.seed}"

    # ---- computation --------------------------------------------------------------------------
    def _act(self, i: int, u: Tensor) -> Tensor:
        a = self.layer_activation(i)
        if a == "relu":
            return torch.relu(u)
        if a == "leaky_relu":
            return torch.nn.functional.leaky_relu(u, self.negative_slope)
        return u

    def layer(self, i: int, x: Tensor) -> Tensor:
        """Layer ``i`` (1-based) on a batch ``(B, n_{i-1})``."""
        w, b = self.weights[i - 1], self.biases[i - 1]
        return self._act(i, torch.addmm(b, x, w.t()) if x.dim() == 2 else x @ w.t() + b)

    def _latent(self, inputs: Inputs) -> Tensor:
        z = inputs["z"]
        z = z.to(device=self.weights[0].device, dtype=self.dtype)
        return z.reshape(z.shape[0], self.widths[0])

    def advance(self, k_from: int, k_to: int, state: State, inputs: Inputs) -> State:
        self.check_span(k_from, k_to)
        if k_to == 0:
            return ()
        x = self._latent(inputs) if k_from == 0 else state[0].to(self.dtype)
        for i in range(k_from + 1, k_to + 1):
            x = self.layer(i, x)
        return (x,)

    def head(self, k: int, inputs: Inputs) -> State:
        self.check_stage(k)
        return self.advance(0, k, (), inputs)

    def tail(self, k: int, state: State, inputs: Inputs) -> Tensor:
        (x,) = self.advance(k, self.num_stages, state, inputs)
        return x.reshape(x.shape[0], *self.image_shape)

    def tail_inputs(self, k: int) -> tuple[str, ...]:
        return ("z",) if k == 0 else ()

    def vector(self, z: Tensor) -> Tensor:
        """``G(z)`` as ``(B, n)`` for latents ``(B, k)`` (or ``(k,)`` -> ``(n,)``)."""
        squeeze = z.dim() == 1
        x = self.advance(0, self.num_stages, (), {"z": z.reshape(-1, self.widths[0])})[0]
        return x[0] if squeeze else x

    def activations(self, z: Tensor) -> list[Tensor]:
        """``[x_0 = z, x_1, ..., x_d]`` for latents ``(B, k)``."""
        xs = [self._latent({"z": z.reshape(-1, self.widths[0])})]
        for i in range(1, self.num_stages + 1):
            xs.append(self.layer(i, xs[-1]))
        return xs


def expansive_widths(
    k: int,
    depth: int,
    factor: float | None = None,
    log_c: float | None = None,
) -> tuple[int, ...]:
    """Widths of an expansive network: constant factor ``n_i = ceil(factor * n_{i-1})`` or the
    logarithmic schedule ``n_i = ceil(log_c * n_{i-1} * log(n_{i-1}))`` (natural log).

    Give exactly one of ``factor`` (>= 1) and ``log_c`` (> 0).
    """
    if (factor is None) == (log_c is None):
        raise UserError("give exactly one of factor and log_c")
    if k < 1 or depth < 1:
        raise UserError(f"k={k} and depth={depth} must be positive")
    widths = [int(k)]
    for _ in range(depth):
        prev = widths[-1]
        if factor is not None:
            if not factor >= 1:
                raise UserError(f"expansion factor {factor} must be at least 1")
            nxt = int(np.ceil(factor * prev - 1e-9))
        else:
            if not log_c > 0:
                raise UserError(f"log-schedule constant {log_c} must be positive")
            nxt = int(np.ceil(log_c * prev * np.log(max(prev, 2))))
        widths.append(max(nxt, prev))
    return tuple(widths)
