"""The contract every layered generator keeps, checked on all of them at once.

For every pair of stages j <= k: resuming from ``head(j)`` and carrying the state with
``advance(j, k)`` reproduces ``forward`` exactly; and the tail after ``advance`` of a *perturbed*
state equals the tail applied at stage j to that state (what ILO relies on when it moves a state
that is off the generator's range one stage deeper).
"""

import importlib.util

import pytest
import torch
from toy_generator import ToyGenerator

from genprior.generators.base import LayeredGenerator


def _dcgan():
    from genprior.generators.dcgan import DCGANLayered

    torch.manual_seed(0)
    return DCGANLayered(nz=16, ngf=8)


def _vae():
    from genprior.zoo import load_generator

    return load_generator("mnist-vae-20")


def _stylegan2(request):
    path = request.getfixturevalue("tiny_stylegan2_path")
    from genprior.zoo import load_generator

    return load_generator(str(path))


def _random_relu():
    from genprior.generators.random_relu import RandomReLUGenerator

    return RandomReLUGenerator((5, 20, 40, 60), bias=True, seed=1)


def _faces():
    if importlib.util.find_spec("gan_face_generate") is None:
        pytest.skip("gan-face-generate not installed")
    from genprior.zoo import load_generator

    return load_generator("dcgan-faces-64")


MAKERS = {
    "toy": lambda r: ToyGenerator(),
    "dcgan-small": lambda r: _dcgan(),
    "dcgan-faces": lambda r: _faces(),
    "vae": lambda r: _vae(),
    "stylegan2-fixture": _stylegan2,
    "random-relu": lambda r: _random_relu(),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_resume_and_advance_are_exact(name, request):
    G: LayeredGenerator = MAKERS[name](request)
    inputs = G.sample_inputs(2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = G(inputs)
        assert ref.shape[1:] == torch.Size(G.image_shape) or name == "random-relu"
        tol = 1e-5 * max(1.0, float(ref.abs().max()))
        for j in range(G.num_stages + 1):
            sj = G.head(j, inputs)
            assert (G.tail(j, sj, inputs) - ref).abs().max() <= tol, f"resume at stage {j}"
            pert = tuple(s + 0.05 * torch.randn_like(s) for s in sj)
            for k in range(j, G.num_stages + 1):
                sk = G.advance(j, k, sj, inputs)
                hk = G.head(k, inputs)
                assert len(sk) == len(hk)
                for a, b in zip(sk, hk):
                    assert (a - b).abs().max() <= tol, f"advance {j}->{k}"
                moved = G.tail(k, G.advance(j, k, pert, inputs), inputs)
                assert (moved - G.tail(j, pert, inputs)).abs().max() <= tol, f"advance {j}->{k} off range"


@pytest.mark.parametrize("name", ["toy", "dcgan-small", "stylegan2-fixture"])
def test_tail_reads_exactly_tail_inputs(name, request):
    G = MAKERS[name](request)
    inputs = G.sample_inputs(1, generator=torch.Generator().manual_seed(1))
    for k in range(G.num_stages + 1):
        state = tuple(s.detach().requires_grad_(True) for s in G.head(k, inputs))
        leaf = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
        out = G.tail(k, state, leaf)
        if out.requires_grad:
            out.sum().backward()
        used = {n for n, t in leaf.items() if t.grad is not None and t.grad.abs().sum() > 0}
        assert used == set(G.tail_inputs(k)), f"stage {k}"
