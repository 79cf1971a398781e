"""The MNIST VAE of Bora et al. 2017 (CSGM), and its decoder as a layered generator.

Architecture (fully connected, softplus activations):

* encoder ``784 -> 500 -> 500 -> (20 mean, 20 log-variance)``;
* decoder ``20 -> 500 -> 500 -> 784``, sigmoid output, reshaped to ``(1, 28, 28)``.

Checkpoint format (what ``genprior train vae`` writes and what ``mnist-vae-20.pt`` is): a plain
dict that ``torch.load(..., weights_only=True)`` reads::

    {"format": "genprior-vae", "version": 1,
     "config": {"arch": "mlp-vae", "image_size": 28, "latent_dim": 20, "hidden_dim": 500, ...},
     "state_dict": {"encoder.fc1.weight": ..., "decoder.fc3.bias": ...},
     ...}                         # training checkpoints add "train" (optimizer, RNG, progress)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Inputs, InputSpec, LayeredGenerator, State

VAE_FORMAT = "genprior-vae"
VAE_FORMAT_VERSION = 1


class VAEEncoder(nn.Module):
    def __init__(self, image_dim: int = 784, hidden_dim: int = 500, latent_dim: int = 20) -> None:
        super().__init__()
        self.fc1 = nn.Linear(image_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.mean = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.softplus(self.fc2(F.softplus(self.fc1(x.flatten(1)))))
        return self.mean(h), self.logvar(h)


class VAEDecoder(nn.Module):
    def __init__(self, image_dim: int = 784, hidden_dim: int = 500, latent_dim: int = 20) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, image_dim)

    def forward(self, z: Tensor) -> Tensor:
        """Logits of the pixels, ``(B, image_dim)``."""
        return self.fc3(F.softplus(self.fc2(F.softplus(self.fc1(z)))))


class MNISTVAE(nn.Module):
    """Encoder + decoder; ``loss`` is Bora et al.'s: Bernoulli cross-entropy + KL, summed over
    pixels / latent dimensions and averaged over the batch (the negative ELBO, in nats)."""

    def __init__(self, image_size: int = 28, hidden_dim: int = 500, latent_dim: int = 20) -> None:
        super().__init__()
        self.image_size, self.hidden_dim, self.latent_dim = int(image_size), int(hidden_dim), int(latent_dim)
        d = self.image_size**2
        self.encoder = VAEEncoder(d, self.hidden_dim, self.latent_dim)
        self.decoder = VAEDecoder(d, self.hidden_dim, self.latent_dim)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier-uniform weights and zero biases (the initialisation of Bora et al.'s code)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                fan_in, fan_out = m.in_features, m.out_features
                bound = (6.0 / (fan_in + fan_out)) ** 0.5
                with torch.no_grad():
                    m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
                    m.bias.zero_()

    def config(self) -> dict[str, Any]:
        return {
            "arch": "mlp-vae",
            "image_size": self.image_size,
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
            "activation": "softplus",
            "likelihood": "bernoulli",
        }

    def loss(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(negative ELBO, reconstruction, KL)``, each a batch mean of per-image sums.

        Args:
            x: images ``(B, 1, H, W)`` or ``(B, H*W)`` in [0, 1] (grey levels are used as the
                Bernoulli targets, as in Bora et al.).
            eps: standard normal noise ``(B, latent_dim)`` for the reparameterisation.
        """
        x = x.flatten(1)
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        logits = self.decoder(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = -0.5 * (1 + logvar - mean.square() - logvar.exp()).sum(1)
        return (rec + kl).mean(), rec.mean(), kl.mean()


class VAELayered(LayeredGenerator):
    """The VAE decoder as a layered generator.

    * input ``z``: latent, shape ``(latent_dim,)``, standard normal (the VAE prior);
    * ``num_stages = 2``: stage 0's state is empty (the tail reads ``z``); stage 1 is ``(h1,)``
      and stage 2 is ``(h2,)``, the hidden activations after the first / second softplus;
    * output ``sigmoid(logits)`` reshaped to ``(B, 1, 28, 28)``, in [0, 1].
    """

    num_stages = 2

    def __init__(self, decoder: VAEDecoder, image_size: int = 28) -> None:
        super().__init__()
        self.decoder = decoder
        self.latent_dim = decoder.fc1.in_features
        self.image_size = int(image_size)
        if decoder.fc3.out_features != self.image_size**2:
            raise ValueError(f"decoder makes {decoder.fc3.out_features} pixels, not {self.image_size}^2")
        self.input_specs = (InputSpec("z", (self.latent_dim,), "latent"),)
        self.image_shape = (1, self.image_size, self.image_size)
        self.eval()

    def tail_inputs(self, k: int) -> tuple[str, ...]:
        self.check_stage(k)
        return ("z",) if k == 0 else ()

    def _layers(self) -> tuple[nn.Linear, nn.Linear]:
        return self.decoder.fc1, self.decoder.fc2

    def head(self, k: int, inputs: Inputs) -> State:
        self.check_stage(k)
        if k == 0:
            return ()
        h = inputs["z"]
        for layer in self._layers()[:k]:
            h = F.softplus(layer(h))
        return (h,)

    def advance(self, k_from: int, k_to: int, state: State, inputs: Inputs) -> State:
        self.check_span(k_from, k_to)
        if k_to == k_from:
            return state
        h = inputs["z"] if k_from == 0 else state[0]
        for layer in self._layers()[k_from:k_to]:
            h = F.softplus(layer(h))
        return (h,)

    def tail(self, k: int, state: State, inputs: Inputs) -> Tensor:
        self.check_stage(k)
        if k == 0:
            h = inputs["z"]
        else:
            if len(state) != 1:
                raise ValueError(f"VAE stage {k} state is one activation tensor, got {len(state)} tensors")
            h = state[0]
        for layer in self._layers()[k:]:
            h = F.softplus(layer(h))
        x = torch.sigmoid(self.decoder.fc3(h))
        return x.view(x.shape[0], 1, self.image_size, self.image_size)


# ---- checkpoints --------------------------------------------------------------------------------
def vae_checkpoint(model: MNISTVAE, **extra: Any) -> dict[str, Any]:
    """The plain dict that :func:`save` writes (tensors + a config of ints/strings)."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": VAE_FORMAT,
        "version": VAE_FORMAT_VERSION,
        "config": model.config(),
        "state_dict": sd,
        **extra,
    }


def is_vae_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == VAE_FORMAT


def vae_from_checkpoint(ckpt: Mapping[str, Any], source: str = "checkpoint") -> MNISTVAE:
    """Rebuild the full :class:`MNISTVAE` from a ``genprior-vae`` checkpoint dict."""
    if not is_vae_checkpoint(ckpt):
        raise UserError(
            f"{source} is not a genprior VAE checkpoint: give a file written by `genprior train vae`"
        )
    cfg = ckpt.get("config") or {}
    try:
        model = MNISTVAE(
            image_size=int(cfg.get("image_size", 28)),
            hidden_dim=int(cfg.get("hidden_dim", 500)),
            latent_dim=int(cfg.get("latent_dim", 20)),
        )
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        msg = str(e).strip().splitlines()
        raise UserError(
            f"{source} has a broken VAE state dict ({msg[0] if msg else type(e).__name__}): retrain it with `genprior train vae`"
        ) from None
    return model.eval()


def load_vae(
    path_or_dict: str | os.PathLike | Mapping[str, Any], device: torch.device | str = "cpu"
) -> VAELayered:
    """A :class:`VAELayered` (frozen, eval mode) from a checkpoint path or an already loaded dict."""
    if isinstance(path_or_dict, Mapping):
        ckpt, source = path_or_dict, "checkpoint"
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise UserError(
                f"VAE checkpoint {path} does not exist: train one with `genprior train vae --out {path}`"
            )
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(
                f"cannot read {path} as a checkpoint ({type(e).__name__}): give a .pt file written by genprior"
            ) from None
        source = str(path)
    model = vae_from_checkpoint(ckpt, source=source)
    gen = VAELayered(model.decoder, image_size=model.image_size).to(device).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen
