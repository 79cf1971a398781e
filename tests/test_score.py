"""Score models of a generator's state: the SDE, the network, training (resumable bit for bit),
the reverse-SDE sampler against an exact score, files and the generator check."""

from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch

from genprior.errors import UserError
from genprior.generators.vae import MNISTVAE, VAELayered
from genprior.score.model import StateScoreModel, StateScoreNet, token_layout, weights_fingerprint
from genprior.score.sde import VPSDE
from genprior.training.score import ScoreTrainConfig, export_score, loss_by_level, train_score


def tiny_vae(seed=0):
    """The decoder of a tiny random VAE as a layered generator (stage 1: a 16-d hidden layer)."""
    m = MNISTVAE(image_size=8, hidden_dim=16, latent_dim=4)
    m.reset_parameters(torch.Generator().manual_seed(seed))
    return VAELayered(m.decoder, image_size=8).eval()


def test_sde_noise_levels_round_trip():
    sde = VPSDE()
    for t in (1e-4, 0.01, 0.3, 1.0):
        assert sde.t_of_sigma(sde.sigma_of_t(t)) == pytest.approx(t, rel=1e-6)
    t = torch.tensor([0.2])
    ab = float(sde.abar(t))
    assert sde.sigma_of_t(0.2) == pytest.approx(math.sqrt((1 - ab) / ab))


def test_token_layout_and_network_shapes():
    assert token_layout((64, 8, 8)) == (64, 64) and token_layout((8, 128)) == (8, 128)
    assert token_layout((100,)) == (1, 100)
    with pytest.raises(UserError):
        token_layout((1, 2, 3, 4))
    net = StateScoreNet(((6, 4, 4), (1, 2, 2), (5,)), width=16, depth=1, heads=2)
    u = (torch.randn(3, 6, 4, 4), torch.randn(3, 1, 2, 2), torch.randn(3, 5))
    out = net(u, torch.rand(3))
    assert [o.shape for o in out] == [x.shape for x in u]


class ExactGaussianScore(StateScoreModel):
    """Data ``u ~ N(m, s^2)`` per coordinate: the exact noise prediction of the VP SDE."""

    def __init__(self, m, s):
        net = StateScoreNet(((3,),), width=8, depth=1, heads=2)
        super().__init__(net, [torch.zeros(3)], [1.0], 1, "x")
        self.m, self.s = m, s

    def eps(self, u, t):
        ab = self.sde.abar(t).view(-1, 1)
        var = ab * self.s**2 + 1 - ab
        score = -(u[0] - ab.sqrt() * self.m) / var
        return (-(1 - ab).sqrt() * score,)


def test_reverse_sde_recovers_a_gaussian_from_its_exact_score():
    m, s = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.0, 0.1])
    (x,) = ExactGaussianScore(m, s).sample(4000, steps=400, seed=0)
    se = s / math.sqrt(4000)
    assert ((x.mean(0) - m).abs() < 4 * se + 0.01).all(), x.mean(0)
    assert ((x.std(0) / s - 1).abs() < 0.06).all(), x.std(0)
    # the VE-view score of the blurred prior is exact too
    model = ExactGaussianScore(m, s)
    u = (torch.randn(5, 3),)
    for sigma in (0.05, 0.5):
        (sc,) = model.score(u, sigma)
        assert torch.allclose(sc, -(u[0] - m) / (s**2 + sigma**2), atol=1e-4, rtol=1e-4)


def test_training_resumes_bit_for_bit_and_learns(tmp_path):
    G = tiny_vae()
    cfg = ScoreTrainConfig(
        stage=1, steps=8, batch=16, width=16, depth=1, heads=2, norm_samples=64, ckpt_every=3
    )
    whole = train_score(G, tmp_path / "a", cfg, progress=False)
    train_score(G, tmp_path / "b", cfg, progress=False, max_steps=5)
    part = train_score(G, tmp_path / "b", cfg, resume=True, progress=False)
    assert part["step"] == whole["step"] == 8
    for k, v in whole["ema"]["net"].items():
        assert torch.equal(v, part["ema"]["net"][k]), k
    for k, v in whole["model"]["net"].items():
        assert torch.equal(v, part["model"]["net"][k]), k
    # more training lowers the held-out denoising loss below the Gaussian baseline it starts from
    longer = train_score(
        G,
        tmp_path / "c",
        ScoreTrainConfig(**{**cfg.__dict__, "steps": 200, "batch": 32, "ema": 0.9, "lr": 2e-3}),
        progress=False,
    )
    l0 = {r["t"]: r["loss"] for r in loss_by_level(StateScoreModel.from_dict(whole["ema"]), G, n=256)}
    l1 = {r["t"]: r["loss"] for r in loss_by_level(StateScoreModel.from_dict(longer["ema"]), G, n=256)}
    assert l1[0.05] < l0[0.05] and all(l1[t] < 0.9 * l0[t] for t in (0.1, 0.2)), (l0, l1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_sees_the_cpu_runs_data_and_resumes_on_the_cpu(tmp_path):
    cfg = ScoreTrainConfig(stage=1, steps=6, batch=16, width=16, depth=1, heads=2, norm_samples=64)
    cpu = train_score(tiny_vae(), tmp_path / "cpu", cfg, progress=False)
    train_score(tiny_vae(), tmp_path / "gpu", cfg, progress=False, max_steps=3, device="cuda")
    mixed = train_score(tiny_vae(), tmp_path / "gpu", cfg, resume=True, progress=False)
    assert mixed["step"] == 6
    for k, v in cpu["ema"]["net"].items():  # same draws: the weights agree to float round-off
        torch.testing.assert_close(mixed["ema"]["net"][k], v, rtol=1e-3, atol=1e-4)


def test_files_generator_check_and_bad_settings(tmp_path):
    G = tiny_vae()
    cfg = ScoreTrainConfig(stage=1, steps=2, batch=4, width=16, depth=1, heads=2, norm_samples=16)
    train_score(G, tmp_path / "r", cfg, progress=False)
    export_score(tmp_path / "r" / "checkpoint.pt", tmp_path / "s.pt")
    m = StateScoreModel.load(tmp_path / "s.pt")
    m.check_generator(G)
    assert m.generator_sha == weights_fingerprint(G) and m.stage == 1
    with pytest.raises(UserError, match="another generator"):
        m.check_generator(tiny_vae(seed=1))
    with pytest.raises(UserError, match="another generator"):
        train_score(tiny_vae(seed=1), tmp_path / "r", cfg, resume=True, progress=False)
    with pytest.raises(UserError, match="already exists"):
        train_score(G, tmp_path / "r", cfg, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt"):
        StateScoreModel.load(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="stage 0 of this generator has nothing to learn"):
        train_score(G, tmp_path / "r0", ScoreTrainConfig(**{**cfg.__dict__, "stage": 0}), progress=False)
    for bad in (dict(stage=-1), dict(width=15), dict(lr=-1.0), dict(ema=1.0), dict(batch=2.5)):
        with pytest.raises(UserError):
            ScoreTrainConfig(**bad)
    from genprior.score.model import InputPrior
    from genprior.zoo import load_score_model

    # no bundled file fits this VAE; its latent is N(0, I), so its exact stage-0 prior is all there is
    assert isinstance(load_score_model(G), InputPrior)
    with pytest.raises(
        UserError,
        match=r"no bundled score model of stage 1 .*available stages: 0 \(its exact input prior\)\)",
    ):
        load_score_model(G, stage=1)


def test_cli_trains_and_exports(tmp_path, capsys):
    from genprior.cli import main
    from genprior.generators.vae import vae_checkpoint

    m = MNISTVAE(image_size=8, hidden_dim=16, latent_dim=4)
    m.reset_parameters(torch.Generator().manual_seed(0))
    torch.save(vae_checkpoint(m), tmp_path / "g.pt")
    argv = [
        "train",
        "score",
        "--model",
        str(tmp_path / "g.pt"),
        "--stage",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    argv += ["--steps", "3", "--set", "batch=4", "--set", "width=16", "--set", "depth=1", "--set", "heads=2"]
    argv += ["--set", "norm_samples=16", "--export", str(tmp_path / "s.pt"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "step 3 of 3" in out and "held-out denoising loss" in out
    assert StateScoreModel.load(tmp_path / "s.pt").stage == 1
    assert main(argv[:-3] + ["--set", "colour=red", "--no-progress"]) == 2
    assert "colour" in capsys.readouterr().err


def test_a_stylegan2_score_model_covers_the_tails_shared_w(tmp_path, tiny_stylegan2_path):
    """On StyleGAN2 the training data are the generator's own samples and the model covers the
    w that the tail's W+ rows repeat: its last tensor is w (one token), named by ``latents``, and
    a model without it (or of another stage's rows) is refused."""
    from genprior.score.model import modelled_tensors
    from genprior.training.score import generator_states
    from genprior.zoo import load_generator

    G = load_generator(tiny_stylegan2_path)
    cfg = ScoreTrainConfig(stage=1, steps=2, batch=4, width=16, depth=1, heads=2, norm_samples=16)
    train_score(G, tmp_path / "r", cfg, progress=False)
    export_score(tmp_path / "r" / "checkpoint.pt", tmp_path / "s.pt")
    m = StateScoreModel.load(tmp_path / "s.pt")
    assert m.latents == G.shared_tail_latents(1) and len(m.latents) == G.n_latent - 1
    assert m.shapes[-1] == (G.style_dim,) and len(m.shapes) == len(G.head(1, G.sample_inputs(1))) + 1
    m.check_generator(G)
    # the data: native samples, whose shared rows are one vector, and the state it made
    g = torch.Generator().manual_seed(3)
    data = generator_states(G, 1, 5, g, m.latents)
    inputs = G.sample_native_inputs(5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(data, modelled_tensors(G, 1, inputs, m.latents)))
    assert torch.allclose(data[-1], inputs["w1"], atol=1e-6) and torch.equal(inputs["w1"], inputs["w0"])
    d = m.to_dict()
    d["latents"] = []
    with pytest.raises(UserError, match="shares"):
        StateScoreModel.from_dict(d).check_generator(G)


def test_a_stage_0_model_covers_round_0s_latent_and_sgilo_samples_it(tmp_path, tiny_stylegan2_path):
    """At stage 0 there is no state: a StyleGAN2 score model models the one w its samples write in
    every W+ row (round 0's search space), and SGILO's chains sample that w and the noise maps."""
    from genprior.solvers.sgilo import SGILO, SGILOConfig
    from genprior.zoo import load_generator

    G = load_generator(tiny_stylegan2_path)
    cfg = ScoreTrainConfig(stage=0, steps=2, batch=4, width=16, depth=1, heads=2, norm_samples=16)
    train_score(G, tmp_path / "r", cfg, progress=False)
    export_score(tmp_path / "r" / "checkpoint.pt", tmp_path / "s0.pt")
    m = StateScoreModel.load(tmp_path / "s0.pt")
    assert m.stage == 0 and m.shapes == ((G.style_dim,),) and m.latents == G.latent_names()
    x = G(G.sample_native_inputs(2, generator=torch.Generator().manual_seed(0)))
    physics = dinv.physics.Inpainting(tuple(x.shape[1:]), mask=0.5, rng=torch.Generator().manual_seed(0))
    y = physics(x)
    sc = SGILOConfig(warm_steps=3, fit_steps=2, chains=3, levels=2, steps_per_level=2, final_steps=2)
    s = SGILO(G, sc, score_model=m)
    out = s(y, physics)
    assert out.shape == x.shape and torch.isfinite(out).all() and s.last_samples.samples.shape[0] == 3
    # every chain's image is its own: the chains sample the w and the tail's noise maps
    assert (s.last_samples.std.flatten(1).mean(1) > 1e-3).all()
    with pytest.raises(UserError, match="stage 0 must model"):
        SGILO(
            G,
            SGILOConfig(),
            score_model=type("S", (), {"stage": 0, "check_generator": lambda self, G: None})(),
        )


def test_the_zoo_picks_a_bundled_score_model_by_stage():
    from genprior.zoo import load_generator, load_score_model

    G = load_generator("fmnist-stylegan2-32")
    # the default is the shallowest bundled stage (its prior nearest to exact)
    assert load_score_model(G).stage == 0 and load_score_model(G, stage=2).stage == 2
    s0 = load_score_model(G, stage=0)
    assert s0.stage == 0 and s0.shapes == ((G.style_dim,),) and s0.latents == G.latent_names()
    with pytest.raises(UserError, match="no bundled score model of stage 1 .*available stages: 0, 2"):
        load_score_model(G, stage=1)
    # the DCGAN draws its z from N(0, I): its stage 0 is that exact prior, no file, and the default
    from genprior.score.model import InputPrior

    D = load_generator("dcgan-faces-64")
    assert isinstance(load_score_model(D), InputPrior) and load_score_model(D, stage=1).stage == 1
    with pytest.raises(UserError, match=r"not N\(0, I\)"):
        InputPrior().check_generator(G)  # the StyleGAN2's W+ rows share one w
