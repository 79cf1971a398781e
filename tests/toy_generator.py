"""A tiny layered generator for solver tests: three stages, a grouped W+-like latent, a noise map."""

import torch
from torch import nn

from genprior.generators.base import InputSpec, LayeredGenerator


class ToyGenerator(LayeredGenerator):
    input_specs = (
        InputSpec("w0", (4,), "latent", "wplus"),
        InputSpec("w1", (4,), "latent", "wplus"),
        InputSpec("w2", (4,), "latent", "wplus"),
        InputSpec("noise0", (1, 8, 8), "noise"),
    )
    num_stages = 2
    image_shape = (1, 8, 8)

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(4, 16)
        self.l2 = nn.Linear(16, 32)
        self.m2 = nn.Linear(4, 32)
        self.l3 = nn.Linear(32, 64)
        self.m3 = nn.Linear(4, 64)
        self.noise_strength = nn.Parameter(torch.tensor(0.05))
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() > 0:
                    p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)

    def tail_inputs(self, k):
        return {0: ("w0", "w1", "w2", "noise0"), 1: ("w1", "w2", "noise0"), 2: ("w2", "noise0")}[k]

    def head(self, k, inputs):
        self.check_stage(k)
        return self.advance(0, k, (), inputs)

    def advance(self, k_from, k_to, state, inputs):
        for k in range(k_from, k_to):
            if k == 0:
                state = (torch.nn.functional.leaky_relu(self.l1(inputs["w0"]), 0.2),)
            elif k == 1:
                state = (torch.tanh(self.l2(state[0]) + self.m2(inputs["w1"])),)
        return state

    def tail(self, k, state, inputs):
        (h,) = self.advance(k, 2, state, inputs)
        out = self.l3(h) + self.m3(inputs["w2"])
        img = torch.sigmoid(out.view(-1, 1, 8, 8) + self.noise_strength * inputs["noise0"])
        return img
