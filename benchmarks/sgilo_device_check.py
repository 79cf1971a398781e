"""How far SGILO's output on CUDA is from the CPU's, from the same measurements and seeds
(docs/sgilo.md, "What is left"): the largest pixel difference after one Langevin step without
round 0 (``warm_steps = 0``) and after 20 round-0 steps. Needs a CUDA device.

    python benchmarks/sgilo_device_check.py
"""

import torch

from genprior import zoo
from genprior.physics import make_physics
from genprior.solvers.sgilo import SGILO, SGILOConfig


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("sgilo_device_check: needs a CUDA device")
    G = zoo.load_generator("fmnist-stylegan2-32")
    physics = make_physics("cs", G.image_shape, seed=3, measurements=50, noise_std=0.01)
    with torch.no_grad():  # the measurement noise is drawn on the device: one y for both runs
        y = physics(G(G.sample_native_inputs(2, generator=torch.Generator().manual_seed(0))))
    for warm in (0, 20):
        out = {}
        for dev in ("cpu", "cuda"):
            G = zoo.load_generator("fmnist-stylegan2-32", device=dev)
            ph = make_physics("cs", G.image_shape, seed=3, device=dev, measurements=50, noise_std=0.01)
            cfg = SGILOConfig(
                warm_steps=warm,
                fit_steps=0,
                chains=2,
                levels=1,
                steps_per_level=1,
                final_steps=0,
                score_stage=2,
                refine_steps=0,
                holdout=0,
            )
            out[dev] = (
                SGILO(G, cfg, score_model=zoo.load_score_model(G, stage=2))(y.to(dev), ph).detach().cpu()
            )
        print(f"warm_steps {warm}: largest pixel difference {(out['cpu'] - out['cuda']).abs().max():.3f}")


if __name__ == "__main__":
    main()
