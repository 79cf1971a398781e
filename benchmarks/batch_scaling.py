"""What a bigger batch costs on the demo's models: one forward and backward pass of each bundled
demo generator at batch 4 (one demo task) and batch 20 (all five tasks of a model at once),
milliseconds per pass, at the process's torch threads. docs/demo.md quotes it.

    .venv/bin/python benchmarks/batch_scaling.py
"""

import time

import torch

from genprior.zoo import load_generator


def _step(G, inputs, free) -> None:
    G({**inputs, **free}).square().mean().backward()


def main() -> None:
    for name in ("fmnist-stylegan2-32", "dcgan-faces-64"):
        G = load_generator(name)
        for batch in (4, 20):
            inputs = G.sample_inputs(batch, generator=torch.Generator().manual_seed(0))
            free = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if k in G.latent_names()}
            for _ in range(3):
                _step(G, inputs, free)
            t0 = time.perf_counter()
            for _ in range(20):
                _step(G, inputs, free)
            ms = (time.perf_counter() - t0) / 20 * 1e3
            print(f"{name:<20} batch {batch:>2}: {ms:6.1f} ms per pass ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
