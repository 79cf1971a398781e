import math

import deepinv as dinv
import pytest
import torch
from toy_generator import ToyGenerator

from genprior.errors import UserError
from genprior.solvers import CSGM, ILO, CSGMConfig, ILOConfig, lr_schedule
from genprior.solvers.projections import project_state


def _problem(seed=1, off_range=0.0, batch=2):
    G = ToyGenerator()
    g = torch.Generator().manual_seed(seed)
    inputs = G.sample_inputs(batch, generator=g)
    with torch.no_grad():
        x = G(inputs)
    if off_range:
        x = (x + off_range * torch.randn(x.shape, generator=g)).clamp(0, 1)
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.7, rng=torch.Generator().manual_seed(3))
    return G, x, physics, physics.A(x)


def test_lr_schedule_first_and_last_steps_move():
    n = 100
    f = [lr_schedule(t, n) for t in range(n)]
    assert f[0] > 0 and f[-1] > 0
    assert max(f) == pytest.approx(1.0)
    assert all(0 < v <= 1 for v in f)
    # warm-up rises, ramp-down falls
    assert f[0] < f[3] and f[-1] < f[-10]


def test_ilo_is_a_deepinv_reconstructor_and_repeats_with_seed():
    G, x, physics, y = _problem()
    cfg = dict(steps=(20, 10, 10), seed=5)
    a = ILO(G, ILOConfig(**cfg))
    assert isinstance(a, dinv.models.Reconstructor)
    xa = a(y, physics)
    xb = ILO(G, ILOConfig(**cfg))(y, physics)
    xc = ILO(G, ILOConfig(steps=(20, 10, 10), seed=6))(y, physics)
    assert xa.shape == x.shape
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)


def test_rounds_resume_exactly_and_best_is_over_all_rounds():
    G, x, physics, y = _problem(off_range=0.15)
    solver = ILO(G, ILOConfig(stages=(1, 2), steps=(40, 30, 30), radius=math.inf))
    xh = solver(y, physics)
    rec = solver.last_record
    assert [r["stage"] for r in rec.rounds] == [0, 1, 2]
    # each round starts exactly where the previous one ended (the state carries everything)
    for prev, nxt in zip(rec.rounds, rec.rounds[1:]):
        assert nxt["start_meas_err"] == pytest.approx(prev["final_meas_err"], rel=1e-5, abs=1e-9)
    # the output is the best over ALL rounds: never worse than the CSGM-like round 0
    best = torch.tensor(rec.best_meas_err)
    round0 = torch.tensor(rec.rounds[0]["best_meas_err"])
    allbest = torch.stack([torch.tensor(r["best_meas_err"]) for r in rec.rounds]).min(0).values
    assert torch.all(best <= round0)
    assert torch.allclose(best, allbest)
    # on an off-range target the intermediate rounds must actually help
    assert torch.all(best < 0.7 * round0)
    # the returned image is the best iterate: its measurement error matches the record
    err = ((physics.A(xh) - y) ** 2).flatten(1).mean(1)
    assert torch.allclose(err, best, rtol=1e-4, atol=1e-7)
    assert len(rec.loss) == 100 and len(rec.meas_err[0]) == 2


def test_l1_radius_zero_freezes_the_state():
    G, x, physics, y = _problem(off_range=0.15)
    free = ILO(G, ILOConfig(stages=(2,), steps=(30, 30), radius=math.inf))
    frozen = ILO(G, ILOConfig(stages=(2,), steps=(30, 30), radius=0.0))
    free(y, physics)
    frozen(y, physics)
    # with radius 0 only the last latent and noise can move in round 1: less gain than free
    g_free = free.last_record.rounds[1]["best_meas_err"]
    g_frozen = frozen.last_record.rounds[1]["best_meas_err"]
    assert sum(g_free) < sum(g_frozen)


def test_project_state_is_an_l1_ball_around_the_center():
    torch.manual_seed(0)
    center = (torch.randn(3, 4, 5), torch.randn(3, 2))
    state = tuple(c + torch.randn_like(c) for c in center)
    project_state(state, center, 2.0)
    dev = torch.cat([(s - c).flatten(1) for s, c in zip(state, center)], 1)
    assert torch.allclose(dev.abs().sum(1), torch.full((3,), 2.0), atol=1e-5)


def test_spherical_projection_restores_norms():
    from genprior.solvers.common import batch_norms, project_to_norm

    z0 = torch.randn(3, 2, 5)
    z = z0 * torch.tensor([3.0, 0.5, 2.0]).view(3, 1, 1)
    project_to_norm(z, batch_norms(z0))
    assert torch.allclose(batch_norms(z), batch_norms(z0))
    assert torch.allclose(z, z0, atol=1e-6)


def test_bad_stages_are_user_errors():
    G, x, physics, y = _problem()
    with pytest.raises(UserError):
        ILO(G, ILOConfig(stages=(2, 1)))(y, physics)
    with pytest.raises(UserError):
        ILO(G, ILOConfig(stages=(5,)))(y, physics)


def test_csgm_restarts_keep_the_best_per_image():
    G, x, physics, y = _problem()
    many = CSGM(G, CSGMConfig(steps=40, restarts=4, seed=0))
    xm = many(y, physics)
    rec = many.last_record
    assert len(rec.extra["best_restart"]) == 2
    err = ((physics.A(xm) - y) ** 2).flatten(1).mean(1)
    assert torch.allclose(err, torch.tensor(rec.best_meas_err), rtol=1e-4, atol=1e-7)


def test_csgm_fits_an_in_range_target():
    G, x, physics, y = _problem()
    xh = CSGM(G, CSGMConfig(steps=300, lr=0.05, restarts=3))(y, physics)
    assert ((xh - x) ** 2).mean() < ((0.5 - x) ** 2).mean() * 0.2


def test_geocross_acts_in_every_round_on_the_latents_in_use():
    G, x, physics, y = _problem(off_range=0.1)
    solver = ILO(G, ILOConfig(stages=(1, 2), steps=(10, 10, 10), geocross_weight=1.0))
    solver(y, physics)
    rec = solver.last_record
    gx = torch.tensor(rec.extra["geocross"])
    rounds = torch.tensor(rec.round_of_step)
    assert gx[rounds == 0].min() > 0
    assert gx[rounds == 1].min() > 0  # w1, w2 still free: the term does not vanish after round 0
    assert torch.all(gx[rounds == 2] == 0)  # one latent left in use: nothing to compare


def test_losses():
    from genprior.losses import fidelity, geocross

    ax = torch.tensor([[0.0, 0.5, -0.05]])
    y = torch.zeros(1, 3)
    assert fidelity(ax, y).item() == pytest.approx((0.25 + 0.0025) / 3)
    assert fidelity(ax, y, reduction="sum").item() == pytest.approx(0.2525)
    # dead-zone L1: residuals below the dead zone cost nothing
    assert fidelity(ax, y, "l1", deadzone=0.1).item() == pytest.approx(0.4 / 3)
    same = torch.randn(2, 1, 6).expand(2, 4, 6)
    assert torch.allclose(geocross(same), torch.zeros(2), atol=1e-6)
    opposite = torch.stack([torch.ones(6), -torch.ones(6)])[None]
    # two antipodal rows: angle pi for both ordered pairs, mean over 4 pairs = pi^2/2, times D/8
    assert geocross(opposite).item() == pytest.approx(math.pi**2 / 2 * 6 / 8, rel=1e-5)


def test_noise_floor_keeps_the_first_iterate_that_reaches_the_noise_level():
    import deepinv as dinv

    from genprior.solvers.ilo import noise_floor

    G = ToyGenerator()
    x = G.sample(2, seed=4)
    sigma = 0.1
    physics = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(sigma=sigma))
    torch.manual_seed(0)
    y = physics(x)
    assert torch.allclose(noise_floor("auto", y, physics), torch.full((2,), sigma**2))
    assert noise_floor("auto", y, dinv.physics.Denoising(noise_model=dinv.physics.ZeroNoise())) is None
    cfg = dict(stages=(1, 2), steps=(30, 60, 60), radius=math.inf)
    plain = ILO(G, ILOConfig(**cfg))
    morozov = ILO(G, ILOConfig(**cfg, noise_floor="auto"))
    plain(y, physics)
    morozov(y, physics)
    p, m = plain.last_record, morozov.last_record
    # unconstrained deeper rounds fit the noise: the plain rule goes below sigma^2 ...
    assert max(p.best_meas_err) < sigma**2
    # ... the discrepancy rule keeps the earliest iterate at the noise level instead
    for i in range(2):
        errs = [step[i] for step in m.meas_err] + [m.rounds[-1]["final_meas_err"][i]]
        first = next(e for e in errs if e <= sigma**2)
        assert m.best_meas_err[i] == pytest.approx(first, rel=1e-5)
    with pytest.raises(UserError):
        noise_floor(-1.0, y, physics)


def test_ilo_from_a_given_start_evaluates_it_then_goes_deeper():
    """ILO.solve(start=...) (SGILO's refinement): round 0 is the start itself, unsearched, and
    the rounds go on at the configured stages deeper than the start's, from its state."""
    from genprior.solvers.ilo import Start

    G, x, physics, y = _problem(off_range=0.15)
    inputs = G.sample_inputs(2, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        state = tuple(s + 0.1 for s in G.head(1, inputs))  # a state off the generator's range
        x_start = G.tail(1, state, inputs)
    still = ILO(G, ILOConfig(stages=(1, 2), steps=0))
    out, rec = still.solve(y, physics, start=Start(1, state, inputs))
    assert torch.allclose(out, x_start.clamp(0, 1))
    assert [r["stage"] for r in rec.rounds] == [1, 2]  # stage 1 is not deeper
    moved = ILO(G, ILOConfig(stages=(1, 2), steps=(5, 30), radius=math.inf))
    _, rec = moved.solve(y, physics, start=Start(1, state, inputs))
    start_err = ((physics.A(x_start) - y) ** 2).flatten(1).mean(1)
    assert rec.rounds[0]["steps"] == 0  # the start is not searched, whatever steps[0] says
    assert rec.rounds[1]["start_meas_err"] == pytest.approx(start_err.tolist(), rel=1e-5)
    assert torch.all(torch.tensor(rec.best_meas_err) < start_err)
