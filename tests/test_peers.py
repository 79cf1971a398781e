"""Other libraries' implementations as rows of the method table: deepinv's CSGM on genprior's
generators, and genprior's CSGM started as deepinv starts it."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from toy_generator import ToyGenerator

from genprior.errors import UserError
from genprior.solvers.csgm import CSGM, CSGMConfig
from genprior.solvers.peers import DeepinvCSGM, DeepinvCSGMConfig, LatentBackbone, deepinv_starts
from genprior.solvers.registry import get_method


def _problem(n=3):
    G = ToyGenerator(seed=1).eval()
    x = G(G.sample_inputs(n, generator=torch.Generator().manual_seed(9)))
    mask = (torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(4)) > 0.5).float()
    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask)
    return G, x.detach(), physics


def test_the_backbone_is_the_generator_on_its_latents_end_to_end():
    G, _, _ = _problem()
    inputs = G.sample_inputs(2, generator=torch.Generator().manual_seed(0))
    bb = LatentBackbone(G, {"noise0": inputs["noise0"]})
    assert bb.nz == 12
    z = torch.cat([inputs[n] for n in ("w0", "w1", "w2")], 1).view(2, 12, 1, 1)
    torch.testing.assert_close(bb(z), G(inputs), rtol=0, atol=0)


def test_deepinv_csgm_is_deepinvs_loop_image_by_image():
    """The row runs deepinv's own loop: the same as that loop written out here (latent uniform in
    [-1, 1] from the global generator seeded with seed + i, Adam on the mean squared residual,
    the last iterate), with the noise maps genprior's CSGM holds for the same seed."""
    G, x, physics = _problem()
    y = physics(x)
    cfg = DeepinvCSGMConfig(steps=15, lr=0.05, seed=7)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    solver = DeepinvCSGM(G, cfg)
    out = solver(y, physics)
    assert torch.equal(torch.rand(1), before)  # the caller's random state is left alone
    held = G.sample_inputs(3, generator=torch.Generator().manual_seed(7))["noise0"]
    for i in range(3):
        torch.manual_seed(7 + i)
        z = torch.nn.Parameter(torch.rand(1, 12, 1, 1) * 2 - 1)
        opt = torch.optim.Adam([z], lr=0.05)
        bb = LatentBackbone(G, {"noise0": held[i : i + 1]})
        for _ in range(15):
            loss = torch.nn.functional.mse_loss(physics.A(bb(z)), y[i : i + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            torch.testing.assert_close(out[i : i + 1], bb(z).clamp(0, 1), rtol=0, atol=1e-6)
    rec = solver.last_record
    assert rec.rounds[0]["steps"] == 15 and len(rec.best_meas_err) == 3
    err = (physics.A(out) - y).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(torch.tensor(rec.best_meas_err), err, rtol=1e-5, atol=1e-7)


def test_genprior_csgm_from_deepinvs_start_is_deepinvs_csgm():
    """The same algorithm: from deepinv's start (deepinv_starts), genprior's batched CSGM ends
    where deepinv's one-image loop ends (the same Adam on the same mean squared residual), so a
    gap between the two rows of the bench is the draw of the start, not the implementation."""
    G, x, physics = _problem()
    y = physics(x)
    steps, lr, seed = 15, 0.02, 7
    ours = CSGM(G, CSGMConfig(steps=steps, lr=lr))
    held = {k: v for k, v in ours._init_inputs(3, seed).items() if k not in G.latent_names()}
    theirs = DeepinvCSGM(G, DeepinvCSGMConfig(steps=steps, lr=lr, seed=seed))(y, physics)
    mine, _ = ours.solve(y, physics, start=deepinv_starts(G, held, 3, seed))
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    # its own draws start elsewhere and end elsewhere
    assert not torch.allclose(
        CSGM(G, CSGMConfig(steps=steps, lr=lr, init="uniform", seed=seed))(y, physics), theirs
    )
    with pytest.raises(UserError, match="start must give every input"):
        ours.solve(y, physics, start={k: v[:2] for k, v in deepinv_starts(G, held, 3, seed).items()})


def test_the_row_is_in_the_table():  # its settings' bad values: tests/test_configs.py
    assert get_method("csgm-deepinv").config_class() is DeepinvCSGMConfig
    assert get_method("csgm-deepinv").solver_class() is DeepinvCSGM


def test_csgm_uniform_init_starts_in_the_unit_box():
    """With no steps CSGM returns its start: the generator at latents uniform in [-1, 1] (the same
    draw on every call), the noise maps as with the Gaussian start."""
    G, x, physics = _problem(2)
    y = physics(x)
    out = CSGM(G, CSGMConfig(steps=0, init="uniform", seed=3))(y, physics)
    inputs = G.sample_inputs(2, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for k in ("w0", "w1", "w2"):
        inputs[k] = 2 * torch.rand(inputs[k].shape, generator=g) - 1
    torch.testing.assert_close(out, G(inputs).clamp(0, 1), rtol=0, atol=0)
    gauss = CSGM(G, CSGMConfig(steps=0, seed=3))(y, physics)
    assert not torch.equal(out, gauss)


def _bench_script(name="compute"):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def steps_of(c, m, num_stages):
    return c.budget_steps(m["name"], {k: v for k, v in m.items() if k not in ("name", "label")}, num_stages)


def test_the_compute_grid_scales_each_budget_and_keeps_the_rows_asked_for():
    """benchmarks/compute.py: one row per method and multiple of the prior benchmark's budget,
    steps counted over rounds and restarts; --rows keeps only the task levels named."""
    c = _bench_script()
    raw = c.grid("fmnist", [0.5, 1, 3], 4, "cs:50,superres:8")
    assert [(t["type"], t["levels"]) for t in raw["tasks"]] == [("superres", [8]), ("cs", [50])]
    assert raw["images"]["count"] == 4
    spec = {m["label"]: m for m in raw["methods"]}
    assert set(spec) == {f"{m} x{x}" for m in c.DEFAULT_METHODS.split(",") for x in ("0.5", "1", "3")}

    def steps(label):
        m = spec[label]
        return c.budget_steps(m["name"], {k: v for k, v in m.items() if k not in ("name", "label")}, 7)

    assert steps("ilo x1") == 450 and steps("ilo x0.5") == 225 and steps("ilo x3") == 1350
    assert steps("csgm x3") == 3 * steps("csgm x1") and steps("csgm x1") % 2 == 0  # 2 restarts
    # the DCGAN's ILO runs its default stages 1-2: three rounds, 150 + 100 + 100
    faces = {m["label"]: m for m in c.grid("faces", [1], 6, "cs:200")["methods"]}
    assert (
        c.budget_steps("ilo", {k: v for k, v in faces["ilo x1"].items() if k not in ("name", "label")}, 4)
        == 350
    )
    # a level that is a list (the box) is named as in the config, its commas inside brackets
    box = c.grid("fmnist", [1], 4, "box:[8,8,24,24],denoise:0.2")
    assert [(t.get("name", t["type"]), t["levels"]) for t in box["tasks"]] == [
        ("box", [[8, 8, 24, 24]]),
        ("denoise", [0.2]),
    ]
    # SGILO (--methods): its defaults are its x1; every step count scales, chains count as restarts
    sg = {m["label"]: m for m in c.grid("fmnist", [1, 3], 4, "cs:50", "ilo,sgilo")["methods"]}
    assert set(sg) == {"ilo x1", "ilo x3", "sgilo x1", "sgilo x3"}
    # warm 150 + fit 100 + 8 chains x (10 x 10 + 60 Langevin + 100 at each of stages 1-4), twice:
    # the held-out calibration's solve and the estimate's (the default since 2026-12-06)
    assert steps_of(c, sg["sgilo x1"], 7) == 2 * (150 + 100 + 8 * (100 + 60 + 4 * 100))
    one = {k: v for k, v in sg["sgilo x1"].items() if k not in ("name", "label")} | {"holdout": 0}
    assert c.budget_steps("sgilo", one, 7) == 150 + 100 + 8 * (100 + 60 + 4 * 100)
    assert steps_of(c, sg["sgilo x3"], 7) == 3 * steps_of(c, sg["sgilo x1"], 7)
    # no fit where the tail shares no latent with the score model's stage (the DCGAN's)
    settings = {k: v for k, v in sg["sgilo x1"].items() if k not in ("name", "label")}
    assert c.budget_steps("sgilo", settings, 7, shares_tail=False) == steps_of(c, sg["sgilo x1"], 7) - 2 * 100
    from genprior.zoo import load_generator

    assert load_generator("fmnist-stylegan2-32").shared_tail_latents(0)
    assert not load_generator("dcgan-faces-64").shared_tail_latents(0)
    # the diffusion solvers run on their bundled models and count their reverse-diffusion steps
    dm = {m["label"]: m for m in c.grid("fmnist", [0.5, 3], 4, "cs:50", "resample,dps")["methods"]}
    assert dm["resample x0.5"]["model"] == "fmnist-ldm-32" and dm["dps x3"]["model"] == "fmnist-ddpm-32"
    # ReSample's default: 250 DDIM steps since 2026-12-06 (its consistency fits are not counted)
    assert steps_of(c, dm["resample x0.5"], 7) == 125 and steps_of(c, dm["dps x3"], 7) == 3000
    # per chain, and twice with two chains or more: the held-out calibration's solve (the default)
    assert c.budget_steps("dps", {"chains": 4}, 7) == 2 * 4 * 1000
    assert c.budget_steps("dps", {"chains": 4, "holdout": 0}, 7) == 4 * 1000
    with pytest.raises(ValueError, match="fmnist only"):
        c.grid("faces", [1], 6, "cs:200", "ilo,dps")
    with pytest.raises(ValueError, match="--methods"):
        c.grid("fmnist", [1], 4, "cs:50", "ilo,dip")
    with pytest.raises(ValueError, match="cs:75 not in the grid"):
        c.grid("fmnist", [1], 4, "cs:75")
    with pytest.raises(ValueError, match="give NAME:LEVEL"):
        c.grid("fmnist", [1], 4, "cs")


def test_a_joined_compute_run_must_share_the_grid(tmp_path):
    """--join reads another finished compute run's rows only when its images, seeds and generator
    are this grid's (so the same measurements); otherwise a one-line error."""
    import json

    c = _bench_script()
    raw = c.grid("fmnist", [1], 4, "cs:50")
    other = c.grid("fmnist", [1], 4, "cs:50", "sgilo")
    out = tmp_path / "sg"
    out.mkdir()
    with pytest.raises(ValueError, match="no finished compute run"):
        c.joined_run(out, raw)
    (tmp_path / "sg.json").write_text(json.dumps(other))
    row = {"task": "cs", "level": 50, "method": "sgilo x1", "psnr": 20.0, "time_s": 3.0}
    (out / "results.json").write_text(json.dumps({"rows": [row]}))
    rows, got = c.joined_run(out, raw)
    assert rows == [row] and got["methods"][0]["label"] == "sgilo x1"
    # --report-only writes the table from the finished run without running a cell
    md = tmp_path / "t.md"
    args = ["fmnist", "--out", str(out), "--count", "4", "--rows", "cs:50", "--methods", "sgilo"]
    assert c.main([*args, "--report-only", "--md", str(md)]) == 0
    # SGILO's default steps: the held-out calibration's solve and the estimate's, 4730 each
    assert "| cs | 50 | sgilo | x1 | 9460 | 3.00 | 20.00 |" in md.read_text()
    assert not (out / "cells").exists()
    (tmp_path / "sg.json").write_text(json.dumps({**other, "images": {**other["images"], "count": 8}}))
    with pytest.raises(ValueError, match="its images differ"):
        c.joined_run(out, raw)


def test_equal_seconds_interpolates_each_method_at_the_reference_seconds():
    """compute.py's equal-seconds table: a method's PSNR at ILO x1's seconds is interpolated in
    log-seconds between the budgets that bracket them, per image, and paired against ILO; a method
    whose budgets all cost more is read at its cheapest, with the ratio of the seconds."""
    c = _bench_script()

    def row(label, image, psnr, secs):
        return {
            "task": "cs",
            "level": 50,
            "method": label,
            "seed": 0,
            "batch": 0,
            "image": image,
            "psnr": psnr,
            "time_s": secs,
        }

    rows = [row("ilo x1", i, 20.0 + i, 2.0) for i in range(2)]
    rows += [row("csgm x0.5", i, 18.0 + i, 1.0) for i in range(2)]
    rows += [row("csgm x1", i, 22.0 + 3 * i, 4.0) for i in range(2)]
    rows += [row("sgilo x0.5", i, 30.0, 6.0) for i in range(2)]
    method_of = {"ilo x1": "ilo", "csgm x0.5": "csgm", "csgm x1": "csgm", "sgilo x0.5": "sgilo"}
    eq = {e["method"]: e for e in c.equal_seconds(rows, method_of)}
    # 2 s lies halfway between 1 s and 4 s in log-seconds: image 0 at 20.0, image 1 at 22.0
    assert eq["csgm"]["psnr"] == pytest.approx(21.0) and eq["csgm"]["ratio"] == 1.0
    assert eq["csgm"]["diff"] == pytest.approx(-0.5) and eq["csgm"]["better"] == 0.0
    assert eq["sgilo"]["psnr"] == pytest.approx(30.0) and eq["sgilo"]["ratio"] == pytest.approx(3.0)
    assert "[3 x]" in c.equal_seconds_table(list(eq.values()))
    assert "| cs | 50 | 2.0, 20.50 | -0.50 ± 0.50 | -9.50 ± 0.50 [3 x] |" in c.equal_seconds_matrix(
        list(eq.values())
    )


def test_the_speed_table_gives_each_ratio():
    """benchmarks/peers.py's speed table: deepinv over genprior, deepinv over the bare pass (the
    bound) and genprior over the bare pass (1 = at the bound), from the seconds per image-step; the
    page faults beside each time and the allocator setting it ran under."""
    p = _bench_script("peers")
    r = {
        "deepinv": 0.010,
        "genprior": 0.004,
        "bare": 0.0035,
        "faults_deepinv": 12.4,
        "faults_genprior": 350.0,
    }
    t = p.speed_table({"toy": r}, 50, 32)
    assert "| toy | 10.00 (12) | 4.00 (350) | 3.50 (0) | 2.50x | 2.86x | 1.143 |" in t
    assert "glibc's default allocator settings" in t
    assert "`GLIBC_TUNABLES=glibc.malloc.trim_threshold=1`" in p.speed_table(
        {"toy": r}, 50, 32, "glibc.malloc.trim_threshold=1"
    )


def test_the_speed_section_counts_page_faults():
    """_timed counts the minor page faults of the call it times: touching fresh pages adds them."""
    p = _bench_script("peers")
    if p._minor_faults() == 0:
        pytest.skip("no resource module here")
    import mmap

    def touch_fresh_pages(size: int = 64 * 2**20) -> None:
        # an anonymous map of its own: fresh pages whatever the allocator holds (a 64 MiB torch
        # tensor faulted nothing inside the full suite on a fresh clone, 2026-12-05, its memory
        # already mapped by then)
        m = mmap.mmap(-1, size)
        for i in range(0, size, mmap.PAGESIZE):
            m[i] = 1
        m.close()

    _, few = p._timed(lambda: None)
    _, many = p._timed(touch_fresh_pages)
    assert many > few + 1000


def test_seeds_are_averaged_per_image_before_the_standard_error():
    """With several seeds, the paired difference is averaged over the seeds of each image and the
    standard error taken over the images (the independent units), not over image-seed pairs."""
    p = _bench_script("peers")
    diffs = {("a", 0): 1.0, ("a", 1): 3.0, ("b", 0): -1.0, ("b", 1): 1.0, ("c", 0): 0.5, ("c", 1): 0.5}
    rows = []
    for (img, seed), d in diffs.items():
        common = {"image_id": img, "seed": seed, "task": "inpaint", "level": 0.8, "ssim": 0.5, "time_s": 1.0}
        rows.append({**common, "method": p.DEEPINV, "psnr": 20.0})
        rows.append({**common, "method": p.OURS, "psnr": 20.0 + d})
    got = p.seed_averaged(rows, p.OURS, p.DEEPINV)
    per_image = [2.0, 0.0, 0.5]
    mean = sum(per_image) / 3
    se = (sum((v - mean) ** 2 for v in per_image) / 2 / 3) ** 0.5
    assert got["n"] == 3 and got["seeds"] == 2
    assert got["mean"] == pytest.approx(mean) and got["se"] == pytest.approx(se)
    assert "averaged over the seeds per image" in p.set_table("fmnist", rows, [p.DEEPINV, p.OURS])


def test_a_joined_peers_run_must_be_the_same_grid_with_other_seeds(tmp_path):
    """--join takes an earlier run's rows only when its grid is this one but for the seeds, and
    those seeds are new; otherwise a one-line error."""
    import json

    from genprior import bench

    p = _bench_script("peers")
    cfg = tmp_path / "fmnist.toml"
    cfg.write_text(p.config_text("fmnist", 10, 0.01, 2, "inpaint", 0.8, (1, 2)))
    ours = bench.load_config(cfg).identity()
    old = tmp_path / "old"
    with pytest.raises(ValueError, match="no finished run"):
        p.joined_rows(old, "fmnist", ours)
    (old / "fmnist").mkdir(parents=True)
    earlier = tmp_path / "earlier.toml"
    row = {"image_id": "fmnist:0", "seed": 0, "method": p.DEEPINV, "psnr": 17.0}

    def finished(text):
        earlier.write_text(text)
        ident = bench.load_config(earlier).identity()
        (old / "fmnist" / "results.json").write_text(json.dumps({"config": ident, "rows": [row]}))

    finished(p.config_text("fmnist", 10, 0.01, 2, "inpaint", 0.8, (0,)))
    assert p.joined_rows(old, "fmnist", ours) == [row]
    finished(p.config_text("fmnist", 20, 0.01, 2, "inpaint", 0.8, (0,)))
    with pytest.raises(ValueError, match="other settings"):
        p.joined_rows(old, "fmnist", ours)
    finished(p.config_text("fmnist", 10, 0.01, 2, "inpaint", 0.8, (0, 1)))
    with pytest.raises(ValueError, match="distinct seeds"):
        p.joined_rows(old, "fmnist", ours)
    # two joined runs must not share a seed either
    finished(p.config_text("fmnist", 10, 0.01, 2, "inpaint", 0.8, (0,)))
    taken = {1, 2}
    assert p.joined_rows(old, "fmnist", ours, taken) == [row] and taken == {0, 1, 2}
    with pytest.raises(ValueError, match="distinct seeds"):
        p.joined_rows(old, "fmnist", ours, taken)
