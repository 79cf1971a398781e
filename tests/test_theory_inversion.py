"""Inverting ReLU generators: random networks, layer-wise LP, GD with sign flip, Langevin, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from genprior.cli import main
from genprior.errors import UserError
from genprior.generators.random_relu import RandomReLUGenerator, expansive_widths
from genprior.theory.common import relative_error
from genprior.theory.gd import gd_invert
from genprior.theory.langevin import langevin_sample
from genprior.theory.lp import lp_invert, pattern_lp_refine


def instance(widths, seed, **kw):
    G = RandomReLUGenerator(widths, seed=seed, **kw)
    z = torch.randn(widths[0], generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
    with torch.no_grad():
        return G, z, G.vector(z)


# ---- the generator ------------------------------------------------------------------------------
def test_generator_contract_and_weights():
    G = RandomReLUGenerator((10, 40, 160), seed=3, bias=True)
    inp = G.sample_inputs(4, generator=torch.Generator().manual_seed(0))
    x = G(inp)
    assert x.shape == (4, 1, 1, 160) and x.dtype == torch.float64 and G.image_shape == (1, 1, 160)
    for k in range(G.num_stages + 1):
        st = G.head(k, inp)
        assert len(st) == (0 if k == 0 else 1)
        assert torch.equal(G.tail(k, st, inp), x)  # exact resume
        assert G.tail_inputs(k) == (("z",) if k == 0 else ())
        for j in range(k, G.num_stages + 1):
            assert all(torch.equal(a, b) for a, b in zip(G.advance(k, j, st, inp), G.head(j, inp)))
    assert torch.equal(G.vector(inp["z"]), x.reshape(4, -1))
    # same seed, same weights; the variance is 1 / n_out
    H = RandomReLUGenerator((10, 40, 160), seed=3, bias=True)
    assert all(torch.equal(a, b) for a, b in zip(G.weights, H.weights))
    big = RandomReLUGenerator((200, 400), seed=1)
    assert abs(float(big.weights[0].std()) * math.sqrt(400) - 1) < 0.02
    # from_weights rebuilds the same network
    F = RandomReLUGenerator.from_weights(G.weights_biases())
    assert torch.allclose(F(inp), x, rtol=0, atol=1e-14)
    L = RandomReLUGenerator((5, 20), activation="leaky_relu", negative_slope=0.1, seed=0)
    assert (L.vector(torch.randn(3, 5)) < 0).any()
    assert expansive_widths(10, 2, factor=1.5) == (10, 15, 23)
    assert expansive_widths(10, 1, log_c=1.0) == (10, 24)
    with pytest.raises(UserError):
        RandomReLUGenerator((10,))
    with pytest.raises(UserError):
        RandomReLUGenerator.from_weights([(np.zeros((4, 3)), None), (np.zeros((5, 5)), None)])


# ---- layer-wise LP ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_lp_exact_recovery_random_network(seed):
    G, z, x = instance((10, 40, 160), seed)
    for kw in (
        {},
        {"presolve": False},
        {"norm": "l1", "presolve": False},
        {"polish": False, "presolve": False},
    ):
        r = lp_invert(G, x, **kw)
        assert r.success, (kw, r.message)
        assert relative_error(r.z, z) < 1e-6, kw
        assert len(r.layers) == 2 and all(L.status == 0 for L in r.layers)
        assert r.residual < 1e-9
    # the weights as a list work the same
    r = lp_invert(G.weights_biases(), x.numpy(), presolve=False)
    assert relative_error(r.z, z) < 1e-6
    assert not any(L.presolved for L in r.layers)


def test_lp_leaky_and_bias_and_linear_output():
    G, z, x = instance((8, 24, 72), 5, activation="leaky_relu", negative_slope=0.2, bias=True)
    r = lp_invert(G, x)
    assert r.success and relative_error(r.z, z) < 1e-6
    G, z, x = instance((8, 30, 50), 6, bias=True, output_activation="linear")
    r = lp_invert(G, x, presolve=False)
    assert r.success and relative_error(r.z, z) < 1e-6


@pytest.fixture(scope="module")
def mnist_decoder():
    """A 20-60-784 ReLU decoder (Lei et al.'s MNIST setting) trained briefly as an autoencoder."""
    try:
        from genprior.data import heldout

        X = heldout("mnist")[0].reshape(-1, 784)
    except Exception:  # the held-out digits are missing: smooth synthetic strokes in [0, 1]
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        c = torch.rand(300, 3, 2, generator=g) * 16 + 6
        X = (
            sum(
                torch.exp(-((yy - c[:, i, 0, None, None]) ** 2 + (xx - c[:, i, 1, None, None]) ** 2) / 8)
                for i in range(3)
            )
            .clamp(0, 1)
            .reshape(300, 784)
        )
    torch.manual_seed(0)
    enc = nn.Linear(784, 20)
    dec = nn.Sequential(nn.Linear(20, 60), nn.ReLU(), nn.Linear(60, 784), nn.ReLU())
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    first = None
    for _ in range(250):
        codes = enc(X)
        loss = ((dec(codes) - X) ** 2).mean() + 1e-3 * (codes**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first  # it did train
    G = RandomReLUGenerator.from_weights([(dec[0].weight, dec[0].bias), (dec[2].weight, dec[2].bias)])
    with torch.no_grad():
        codes = enc(X[:12]).double()
    return G, codes


def test_lp_exact_recovery_trained_mnist_generator(mnist_decoder):
    G, codes = mnist_decoder
    assert G.widths == (20, 60, 784)
    for i, z in enumerate(codes):
        x = G.vector(z)
        r = lp_invert(G, x, presolve=i >= 4)  # the first few through HiGHS, the rest presolved
        assert r.success, r.message
        assert relative_error(r.z, z) < 1e-6


def test_lp_failure_is_reported_not_raised():
    G, z, x = instance((10, 40, 160), 1)
    bad = x.clone()
    bad[0] = -0.3  # a ReLU cannot output a negative value
    r = lp_invert(G, bad)
    assert not r.success and "range" in r.message and r.layers[0].max_violation >= 0.3 - 1e-9
    r = lp_invert(G, bad, slack=False)
    assert not r.success and r.z is None and "infeasible" in r.message
    # contradicting constraints: positive entries that no latent produces
    g = torch.Generator().manual_seed(0)
    wild = x * torch.rand(x.shape, generator=g, dtype=x.dtype) * 3
    r = lp_invert(G, wild, slack=False)
    assert not r.success and r.z is None and r.layers[-1].status == 2
    r = lp_invert(G, wild)
    assert not r.success and r.z is not None and math.isfinite(r.residual)
    with pytest.raises(UserError):
        lp_invert(G, x[:10])  # wrong size is a user error, not a result


def test_lp_with_measurements():
    import deepinv as dinv

    G, z, x = instance((10, 40, 160), 2)
    rng = np.random.default_rng(0)
    # inpainting as a selection matrix: exact from enough observed outputs
    idx = rng.choice(160, 120, replace=False)
    S = np.zeros((120, 160))
    S[np.arange(120), idx] = 2.0
    r = lp_invert(G, S @ x.numpy(), S)
    assert r.success and relative_error(r.z, z) < 1e-6
    ph = dinv.physics.Inpainting((1, 1, 160), mask=0.8, rng=torch.Generator().manual_seed(0))
    r = lp_invert(G, ph.A(x.float().reshape(1, 1, 1, 160)).double(), ph, tol=1e-5)
    assert relative_error(r.z, z) < 1e-5  # float32 physics
    # Gaussian A with m < n: the last layer's pattern LP, warm-started by gradient descent
    A = rng.standard_normal((60, 160)) / math.sqrt(60)
    r = lp_invert(G, A @ x.numpy(), A, seed=0)
    assert r.success and relative_error(r.z, z) < 1e-6 and r.layers[0].pattern_iters >= 1
    # the whole-network pattern LP from a perturbed latent, with m = 3k
    A = rng.standard_normal((30, 160)) / math.sqrt(30)
    r = pattern_lp_refine(G, A @ x.numpy(), A, z + 1e-3 * torch.randn(10, dtype=torch.float64))
    assert r.success and relative_error(r.z, z) < 1e-9


# ---- gradient descent ---------------------------------------------------------------------------
def test_gd_with_sign_flip_recovers():
    G, z, x = instance((10, 60, 360), 4)
    g = gd_invert(G, x, seed=0, steps=600)
    assert g.success and relative_error(g.z, z) < 1e-3
    # started at -z*, the sign flip jumps to the right basin at once
    g = gd_invert(G, x, z_init=-z, steps=300)
    assert g.flips >= 1 and relative_error(g.z, z) < 1e-6
    # with Gaussian measurements (m = 6k) and with a deepinv operator
    A = torch.randn(60, 360, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / math.sqrt(60)
    g = gd_invert(G, A @ x, A, seed=1, optimizer="adam", steps=1500)
    assert relative_error(g.z, z) < 1e-2


# ---- Langevin -----------------------------------------------------------------------------------
def test_langevin_mean_approaches_truth_as_noise_falls():
    errs = {0.5: [], 0.01: []}
    for s in range(3):
        G, z, x = instance((10, 40, 160), 10 + s)
        for sigma in errs:
            y = x + sigma * torch.randn(160, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            L = langevin_sample(G, y, sigma=sigma, seed=s, burn_in=800, n_samples=40, thin=5, chains=4)
            assert L.samples.shape == (160, 10) and torch.isfinite(L.samples).all()
            errs[sigma].append(relative_error(L.mean, z))
            if sigma == 0.01:
                assert float(L.std.mean()) < 0.2
    assert max(errs[0.01]) < 0.1
    assert np.mean(errs[0.01]) < 0.2 * np.mean(errs[0.5])
    # the Metropolis-adjusted chain (MALA) agrees and accepts most proposals
    M = langevin_sample(G, y, sigma=0.01, seed=0, burn_in=600, n_samples=40, thin=5, metropolis=True)
    assert 0.5 < M.accept_rate <= 1 and relative_error(M.mean, z) < 0.1
    # plain (unpreconditioned) Langevin runs too
    P = langevin_sample(G, y, sigma=0.01, seed=0, burn_in=300, n_samples=10, precondition=False)
    assert torch.isfinite(P.mean).all()
    with pytest.raises(UserError):
        langevin_sample(G, x, sigma=0.0)


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_theory_tiny_grid_and_resume(tmp_path, capsys):
    args = [
        "theory",
        "expansion",
        "--trials",
        "2",
        "--factors",
        "2,4",
        "--log-c",
        "1",
        "--k",
        "4",
        "--methods",
        "lp",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    for name in (
        "theory_expansion.csv",
        "theory_expansion_summary.csv",
        "theory_expansion.json",
        "theory_expansion.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    meta = json.loads((tmp_path / "theory_expansion.json").read_text())
    assert meta["trials_run"] == 6 and len(meta["summary"]) == 3
    lines = (tmp_path / "theory_expansion.csv").read_text().splitlines()
    assert len(lines) == 1 + 6
    capsys.readouterr()
    assert main(args[:3] + ["3"] + args[4:]) == 0  # one more trial per cell: the rest is reused
    assert "3 trials run, 6 reused" in capsys.readouterr().out
    assert main(args) == 0  # fewer trials: nothing runs; the table has 2, the store keeps all 3
    assert "0 trials run, 6 reused" in capsys.readouterr().out
    assert len((tmp_path / "theory_expansion.csv").read_text().splitlines()) == 1 + 6
    assert len(list((tmp_path / "theory_expansion_trials").glob("*.json"))) == 9
    assert (
        main(
            [
                "theory",
                "langevin",
                "--trials",
                "1",
                "--sigmas",
                "0.1",
                "--burn-in",
                "20",
                "--samples",
                "5",
                "--gd-steps",
                "20",
                "--out",
                str(tmp_path / "l"),
                "--figures",
                str(tmp_path / "f"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "f" / "theory_langevin.png").is_file()


def test_theory_resume_keeps_finished_trials_and_reruns_stale_ones(tmp_path, monkeypatch):
    from genprior.resume import UnitStore
    from genprior.theory import experiments, run

    exp = experiments.expansion_experiment(k=4, factors=(2, 4), log_c=(), methods=("lp",))
    calls = []
    real = exp.run_trial

    def dies_on_the_third(cell, s):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a run stopped in its third trial
        calls.append((cell["cell"], s))
        return real(cell, s)

    exp.run_trial = dies_on_the_third
    with pytest.raises(KeyboardInterrupt):
        run.run_experiment(exp, tmp_path, trials=2, progress=False)
    # the two finished trials are stored and in the partial table
    assert len((tmp_path / "theory_expansion.csv").read_text().splitlines()) == 1 + 2
    exp.run_trial = real
    out = run.run_experiment(exp, tmp_path, trials=2, progress=False)
    assert (out.ran, out.reused) == (2, 2)
    first = {(r["cell"], r["trial"]): r["rel_err"] for r in out.rows}
    # a damaged file and a trial computed by other code run again; the others are reused
    store = UnitStore(tmp_path / "theory_expansion_trials", run.config_hash(exp, 0))
    units = list(store)
    (store.folder / store.file_name(units[0].key)).write_text("{not json")
    store.save(units[1].key, units[1].data, "other code")
    out = run.run_experiment(exp, tmp_path, trials=2, progress=False)
    assert (out.ran, out.reused) == (2, 2)
    assert {(r["cell"], r["trial"]): r["rel_err"] for r in out.rows} == first  # seeded: same numbers


def test_theory_trial_fingerprint_covers_algorithms_not_reports():
    from genprior.resume import module_closure
    from genprior.theory.run import TRIAL_CODE

    mods = module_closure(TRIAL_CODE)
    for m in (
        "genprior.theory.lp",
        "genprior.theory.gd",
        "genprior.theory.langevin",
        "genprior.theory.common",
    ):
        assert m in mods
    assert "genprior.theory.report" not in mods and "genprior.theory.run" not in mods


@pytest.mark.parametrize(
    "bad",
    [
        ["expansion", "--trials", "0"],
        ["expansion", "--factors", "0.5,2"],
        ["depth", "--depths", "two"],
        ["noise", "--methods", "lp,foo"],
        ["langevin", "--sigmas", "-0.1"],
        ["measurements", "--ratios", "100"],
    ],
)
def test_cli_theory_bad_arguments_exit_2(bad, tmp_path, capsys):
    assert main(["theory", *bad, "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genprior theory: error:") and err.count("\n") == 1
