"""``genprior bench``: a tiny grid runs, resumes after a crash, gives the same rows with workers."""

import json
import math
import shutil
import textwrap
import time
from pathlib import Path

import pytest
import torch

from genprior import bench
from genprior.cli import main
from genprior.errors import UserError
from genprior.generators.vae import MNISTVAE, vae_checkpoint
from genprior.solvers.registry import METHODS

GRID = """
name = "tiny"
generator = "tiny.pt"
seeds = [0]
batch_size = 2
plot_metrics = ["mse", "psnr"]

[images]
source = "samples"
count = 4
seed = 1

[[tasks]]
type = "cs"
levels = [10, 20]
noise_std = 0.05
cs_scale = "unscaled"

[[methods]]
name = "csgm"
steps = 8
restarts = 2

[[methods]]
name = "ilo"
steps = [6, 4]
stages = [1]
"""
N_CELLS = 2 * 2 * 2  # levels x methods x image batches


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    model = MNISTVAE(image_size=8, hidden_dim=16, latent_dim=4)
    model.reset_parameters(torch.Generator().manual_seed(0))
    torch.save(vae_checkpoint(model), d / "tiny.pt")
    (d / "grid.toml").write_text(GRID)
    return d


@pytest.fixture(scope="module")
def reference(workdir):
    """One uninterrupted serial run of the grid."""
    res = bench.run_bench(workdir / "grid.toml", workdir / "ref", progress=False)
    return res


def test_grid_writes_tables_and_plots(workdir, reference):
    out = workdir / "ref"
    assert reference.executed == N_CELLS and reference.skipped == 0
    assert len(reference.rows) == N_CELLS * 2  # two images per cell
    for name in ("results.csv", "results.json", "summary.csv", "summary.md", "plot_mse.png", "plot_psnr.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "plot_mse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].split(",") == list(bench.ROW_COLUMNS)
    assert len(lines) == 1 + N_CELLS * 2
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == N_CELLS * 2
    row = data["rows"][0]
    assert {row["method"] for row in data["rows"]} == {"csgm", "ilo"}
    for k in ("psnr", "ssim", "mse", "meas_err", "time_s", "peak_mb"):
        assert math.isfinite(row[k]), k
    # one summary entry per (task, level, method), averaged over the 4 images
    assert len(data["summary"]) == 4 and all(s["n"] == 4 for s in data["summary"])
    assert len(list((out / "cells").glob("*.json"))) == N_CELLS


def test_rows_keep_their_reconstructions_and_the_gallery_draws_them(workdir, reference):
    from genprior import metrics
    from genprior.bench.gallery import gallery_image
    from genprior.io import from_png_b64

    cfg = bench.load_config(workdir / "grid.toml")
    G = bench.get_generator(cfg)
    x_all, _, _ = bench.get_images(cfg, G)
    for row in reference.rows:  # the stored picture is that row's reconstruction (8-bit)
        rec = from_png_b64(row["recon_png"])
        assert rec.shape == x_all[row["image"]].shape
        rmse = float(metrics.mse(rec[None], x_all[row["image"]][None])[0]) ** 0.5
        assert abs(rmse - row["mse"] ** 0.5) <= 1 / 510 + 1e-6  # rounding moves each pixel by <= 1/510
    assert (workdir / "ref" / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    arr = gallery_image(cfg, reference.rows, images=[3], methods=["ilo"], side=32)
    k, line, gap, pad = 4, 16, 6, 4  # 8x8 images scaled 4x; the layout of bench.gallery
    height, width = 2 * (3 * line + 32 + pad), 2 * pad + 3 * 32 + 2 * gap  # 2 levels x (truth, y, ilo)
    assert arr.shape == (height, width, 3)
    row = next(r for r in reference.rows if r["image"] == 3 and r["method"] == "ilo" and r["level"] == 10)
    want = (from_png_b64(row["recon_png"])[0] * 255).round().repeat_interleave(k, 0).repeat_interleave(k, 1)
    x0 = pad + 2 * (32 + gap)  # the third panel of the first block (level 10)
    got = torch.from_numpy(arr[3 * line : 3 * line + 32, x0 : x0 + 32, 0].copy()).float()
    assert torch.equal(got, want)

    with pytest.raises(UserError, match="no method 'dps'"):
        gallery_image(cfg, reference.rows, methods=["dps"])
    with pytest.raises(UserError, match="image 4 is not in the run"):
        gallery_image(cfg, reference.rows, images=[4])
    old = [{k: v for k, v in r.items() if k != "recon_png"} for r in reference.rows]
    with pytest.raises(UserError, match="keep no reconstructions"):
        gallery_image(cfg, old)


def test_rows_keep_large_reconstructions_as_thumbnails():
    """A row keeps a picture, not the data: a 1024-pixel image would take megabytes a row."""
    from genprior.io import from_png_b64, png_b64, thumbnail

    big = torch.rand(3, 1024, 768)
    small = from_png_b64(png_b64(big))
    assert small.shape == (3, 128, 96)  # shrunk 8x: area averages
    want = big.view(3, 128, 8, 96, 8).mean((2, 4))
    assert (small - want).abs().max() <= 0.5 / 255 + 1e-6
    assert thumbnail(torch.rand(1, 129, 40)).shape == (1, 64, 20)  # the least whole factor, 2
    x = torch.rand(1, 128, 64)
    assert thumbnail(x) is x and from_png_b64(png_b64(x)).shape == x.shape


def test_gallery_script_draws_a_finished_run_and_refuses_another_config(workdir, reference, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gallery.py"
    spec = importlib.util.spec_from_file_location("gallery_script", path)
    gs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gs)
    out = tmp_path / "g.png"
    run = [str(workdir / "grid.toml"), str(workdir / "ref")]
    assert gs.main([*run, "--images", "1", "2", "--method", "csgm", "--side", "16", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (workdir / "other.toml").write_text(GRID.replace("levels = [10, 20]", "levels = [10]"))
    assert gs.main([str(workdir / "other.toml"), run[1], "--out", str(tmp_path / "x.png")]) == 2
    assert "another config" in capsys.readouterr().err
    assert gs.main([*run, "--task", "inpaint", "--out", str(tmp_path / "x.png")]) == 2
    assert "no task 'inpaint'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_same_rows_script_finds_a_repeated_run(workdir, reference, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "same_rows.py"
    spec = importlib.util.spec_from_file_location("same_rows", path)
    sr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sr)
    bench.run_bench(workdir / "grid.toml", tmp_path / "again", progress=False)
    assert sr.main([str(workdir / "ref"), str(tmp_path / "again")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(
        "largest PSNR difference 0 dB, the same pictures on 4 of 4" in x for x in lines
    )
    data = json.loads((tmp_path / "again" / "results.json").read_text())
    data["rows"][0]["psnr"] += 0.5  # one row that differs is reported
    (tmp_path / "again" / "results.json").write_text(json.dumps(data))
    assert sr.main([str(workdir / "ref"), str(tmp_path / "again")]) == 0
    assert "largest PSNR difference 0.5 dB" in capsys.readouterr().out
    assert sr.main([str(workdir / "ref"), str(tmp_path / "none")]) == 2
    # posterior samplers' rows: the paired difference of their calibrations, this run minus the other
    row = {"task": "box", "level": [1, 1, 3, 3], "method": "dps", "seed": 0, "psnr": 20.0}
    # and on how many rows their mean std differs, by what factor (this run's over the other's)
    for name, cals, stds in (("one", (0.9, 0.8), (0.05, 0.1)), ("two", (0.7, 0.8), (0.5, 0.1))):
        rows = [
            {**row, "image": i, "calibration": c, "std_mean": s} for i, (c, s) in enumerate(zip(cals, stds))
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": rows}))
    assert sr.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            "calibration difference +0.100 ± 0.100, mean std per pixel different on 1 of 2 (0.1-0.1 times the other's)"
        )
    )


def test_posterior_report_script_summarises_the_samplers(workdir, reference, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "posterior_report.py"
    spec = importlib.util.spec_from_file_location("posterior_report", path)
    pr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pr)
    assert pr.main([str(workdir / "ref")]) == 2  # csgm and ilo: no posterior samples
    assert "chains >= 2" in capsys.readouterr().err
    row = {"task": "box", "level": [1, 1, 3, 3], "method": "dps"}
    rows = [
        {**row, "calibration": 0.5, "psnr": 21.0, "psnr_sample": 20.0},
        {**row, "calibration": 0.9, "psnr": 23.0, "psnr_sample": 20.0},
    ]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({"rows": rows}))
    assert pr.main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    assert out == "| box | [1, 1, 3, 3] | dps | 0.700 ± 0.200 | 0.50-0.90 | +2.00 ± 1.00 |"
    rows = [{**r, "std_mean": s} for r, s in zip(rows, (0.05, 0.45))]  # one image's map too wide
    (tmp_path / "run" / "results.json").write_text(json.dumps({"rows": rows}))
    assert pr.main([str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "| box | [1, 1, 3, 3] | dps | 0.050-0.450 | 1 of 2 |"


def test_the_hash_follows_the_classifiers_weights_not_where_they_lie(workdir):
    """A run made in one checkout resumes (and is drawn) from another: the bundled classifier's
    absolute path is not part of the config's identity, its sha256 is."""
    import dataclasses

    cfg = bench.load_config(workdir / "grid.toml")
    here = dataclasses.replace(
        cfg, classifier_path="/one/checkout/fmnist-classifier.pt", classifier_sha256="ab"
    )
    there = dataclasses.replace(here, classifier_path="/another/checkout/fmnist-classifier.pt")
    assert here.hash() == there.hash()
    assert dataclasses.replace(there, classifier_sha256="cd").hash() != here.hash()
    assert here.hash_before_2026_12_06() != there.hash_before_2026_12_06()  # as it was


def test_a_folder_written_before_the_hash_changed_is_taken_as_this_configs(workdir, reference, tmp_path):
    cfg = bench.load_config(workdir / "grid.toml")
    out = tmp_path / "old"
    shutil.copytree(workdir / "ref", out)
    meta = json.loads((out / "config.json").read_text())
    meta["hash"] = cfg.hash_before_2026_12_06()  # as a run of 2026-12-05 wrote it
    (out / "config.json").write_text(json.dumps(meta))
    res = bench.run_bench(workdir / "grid.toml", out, progress=False)
    assert res.skipped == N_CELLS and json.loads((out / "config.json").read_text())["hash"] == cfg.hash()
    meta["hash"] = "0" * 64  # another config's folder is still refused
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="different bench config"):
        bench.run_bench(workdir / "grid.toml", out, progress=False)


def test_peak_memory_sees_what_a_block_allocates_above_its_start():
    from genprior.bench.cell import PeakMemory

    keep = torch.zeros(16 * 2**20 // 4)  # in use before: not counted
    with PeakMemory("cpu") as mem:
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, freed before the block ends
        time.sleep(0.05)
        del big
    assert 48 <= mem.peak_mb <= 96, mem.peak_mb
    del keep
    # many small blocks, freed before: memory the heap keeps must not hide the block's own use
    for _ in range(2):
        with PeakMemory("cpu") as mem:
            small = [torch.ones(1000) for _ in range(16000)]  # about 61 MiB in 4 KB tensors
            time.sleep(0.05)
            del small
        assert mem.peak_mb >= 40, mem.peak_mb


def test_every_method_sees_the_same_measurements(workdir):
    cfg = bench.load_config(workdir / "grid.toml")
    task = cfg.tasks[0]
    seed = bench.derive_seed("operator", 0, task.label, 10, 0)
    p1 = bench.build_physics(task, 10, (1, 8, 8), seed, "cpu")
    p2 = bench.build_physics(task, 10, (1, 8, 8), seed, "cpu")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(p1(x), p2(x))


def test_unscaled_cs_has_standard_normal_entries(workdir):
    cfg = bench.load_config(workdir / "grid.toml")
    task = cfg.tasks[0]
    scaled = bench.TaskSpec("cs", "cs", "measurements", [40], {"cs_scale": "deepinv"})
    a = bench.build_physics(task, 40, (1, 8, 8), 3, "cpu")
    b = bench.build_physics(scaled, 40, (1, 8, 8), 3, "cpu")
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(a.A(x), b.A(x) * math.sqrt(40), rtol=1e-5, atol=1e-5)
    assert abs(float(a._A.std()) - 1.0) < 0.05
    y = torch.rand(1, 40)
    assert torch.allclose(a.A_adjoint(y), b.A_adjoint(y) * math.sqrt(40), rtol=1e-5, atol=1e-5)


def test_killed_run_resumes_without_redoing_cells(workdir, reference, monkeypatch):
    out = workdir / "killed"
    calls = []
    real = bench.run_cell
    monkeypatch.setattr(bench.run, "run_cell", lambda cfg, cell: calls.append(cell) or real(cfg, cell))

    class Killed(Exception):
        pass

    def kill_after_3(cell, n):
        if n == 3:
            raise Killed

    with pytest.raises(Killed):
        bench.run_bench(workdir / "grid.toml", out, progress=False, on_cell_done=kill_after_3)
    assert len(calls) == 3
    first = set(calls)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert len(stamps) == 3

    calls.clear()
    res = bench.run_bench(workdir / "grid.toml", out, progress=False)
    assert res.executed == N_CELLS - 3 and res.skipped == 3
    assert len(calls) == N_CELLS - 3 and not first & set(calls)
    for name, t in stamps.items():  # finished cells are not rewritten
        assert (out / "cells" / name).stat().st_mtime_ns == t
    assert bench.comparable_rows(res.rows) == bench.comparable_rows(reference.rows)

    # a third run finds everything done
    calls.clear()
    res = bench.run_bench(workdir / "grid.toml", out, progress=False)
    assert res.executed == 0 and not calls

    # a damaged cell file (say, a disk filled up) is run again, nothing else
    victim = sorted((out / "cells").glob("*.json"))[0]
    victim.write_text('{"config_hash": "')
    res = bench.run_bench(workdir / "grid.toml", out, progress=False)
    assert res.executed == 1 and len(calls) == 1
    assert bench.comparable_rows(res.rows) == bench.comparable_rows(reference.rows)

    # cells stored by other solver code are stale: only that method's cells run again
    real_fp = bench.code_fingerprint
    monkeypatch.setattr(
        bench.run, "code_fingerprint", lambda cfg, label: "edited" if label == "ilo" else real_fp(cfg, label)
    )
    calls.clear()
    res = bench.run_bench(workdir / "grid.toml", out, progress=False)
    assert res.stale == N_CELLS // 2 and res.executed == N_CELLS // 2
    assert {c.method for c in calls} == {"ilo"}


def test_two_workers_give_the_same_rows(workdir, reference):
    res = bench.run_bench(workdir / "grid.toml", workdir / "par", workers=2, progress=False)
    assert res.executed == N_CELLS
    assert bench.comparable_rows(res.rows) == bench.comparable_rows(reference.rows)


def test_ray_engine_gives_the_same_rows_and_resumes(workdir, reference, ray_session):
    out = workdir / "ray"

    def stop_after_3(cell, n):
        if n == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(workdir / "grid.toml", out, engine="ray", progress=False, on_cell_done=stop_after_3)
    res = bench.run_bench(workdir / "grid.toml", out, engine="ray", progress=False)
    assert (res.executed, res.skipped) == (N_CELLS - 3, 3)
    assert bench.comparable_rows(res.rows) == bench.comparable_rows(reference.rows)
    assert (
        main(["bench", str(workdir / "grid.toml"), "--out", str(out), "--engine", "ray", "--workers", "2"])
        == 2
    )


def test_cli_runs_and_refuses_another_config_in_the_same_dir(workdir, capsys):
    out = workdir / "cli"
    assert main(["bench", str(workdir / "grid.toml"), "--out", str(out), "--quiet"]) == 0
    assert "8 cell(s) run" in capsys.readouterr().out
    assert main(["bench", str(workdir / "grid.toml"), "--out", str(out), "--quiet"]) == 0
    assert "0 cell(s) run, 8 resumed" in capsys.readouterr().out
    other = workdir / "other.toml"
    other.write_text(GRID.replace("levels = [10, 20]", "levels = [10, 30]"))
    assert main(["bench", str(other), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different bench config" in err


BAD = {
    "unknown method": (
        ('name = "ilo"', 'name = "magic"'),
        "unknown method 'magic': choose one of ilo, csgm, csgm-deepinv, pulse",
    ),
    "toml syntax": (("[images]", "[images"), "not valid TOML"),
    "unknown task": (('type = "cs"', 'type = "deblur"'), "unknown task type 'deblur'"),
    "no generator file": (('generator = "tiny.pt"', 'generator = "nope.pt"'), "neither a zoo model"),
    "empty levels": (("levels = [10, 20]", "levels = []"), "levels must be a non-empty list"),
    "bad setting": (("restarts = 2", "restart = 2"), "method 'csgm' has no setting 'restart'"),
    "bad level": (("levels = [10, 20]", "levels = [10, 100]"), "100 measurements is out of range"),
    "astronaut on a grey generator": (
        ('source = "samples"\ncount = 4\nseed = 1', 'source = "astronaut"'),
        "square RGB image",
    ),
    "astronaut with a count": (
        ('source = "samples"\ncount = 4\nseed = 1', 'source = "astronaut"\ncount = 4'),
        "remove 'count'",
    ),
    "lfw with a seed": (
        ('source = "samples"\ncount = 4\nseed = 1', 'source = "lfw"\ncount = 4\nseed = 1'),
        "takes only count",
    ),
    "lfw beyond its faces": (
        ('source = "samples"\ncount = 4\nseed = 1', 'source = "lfw"\ncount = 101'),
        "give 1..100",
    ),
    "unscaled circulant": (
        ('cs_scale = "unscaled"', 'cs_scale = "unscaled"\ncs_operator = "circulant"'),
        "cs_scale = 'unscaled'",
    ),
    "top-level typo": (("seeds = [0]", "seed = [0]"), "unknown setting 'seed'"),
    "skip on samples": (
        ('source = "samples"\ncount = 4\nseed = 1', 'source = "samples"\ncount = 4\nskip = 2'),
        "skip is for the held-out sets only",
    ),
    "skip past the held-out set": (
        (
            'source = "samples"\ncount = 4\nseed = 1',
            'source = "heldout"\ndataset = "mnist"\nskip = 290\ncount = 20',
        ),
        "after skip = 290 give 1..10",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configs_exit_2_with_one_line(workdir, capsys, case):
    (old, new), expected = BAD[case]
    assert old in GRID
    path = workdir / f"bad-{case.replace(' ', '-')}.toml"
    path.write_text(GRID.replace(old, new, 1))
    assert (
        main(["bench", str(path), "--out", str(workdir / f"out-bad-{case.replace(' ', '-')}"), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("genprior bench: error:") and expected in err, err


def test_skip_takes_the_held_out_images_after_the_first_ones(workdir):
    from types import SimpleNamespace

    import tomllib

    from genprior.data import heldout

    raw = tomllib.loads(GRID)
    raw["images"] = {"source": "heldout", "dataset": "mnist", "count": 3}
    plain = bench.parse_config(raw, base_dir=workdir, source="grid.toml")
    assert "skip" not in plain.identity()["images"]  # the hashes of runs before `skip` stand
    raw["images"]["skip"] = 5
    cfg = bench.parse_config(raw, base_dir=workdir, source="grid.toml")
    assert cfg.hash() != plain.hash()
    x, ids, labels = bench.get_images(cfg, SimpleNamespace(image_shape=(1, 28, 28)))
    want, want_labels = heldout("mnist", n=8)
    assert torch.equal(x, want[5:8]) and torch.equal(labels, want_labels[5:8])
    assert ids == ["mnist:5", "mnist:6", "mnist:7"]


def test_json_config_and_missing_file(workdir, capsys):
    import tomllib

    raw = tomllib.loads(GRID)
    cfg = bench.parse_config(raw, base_dir=workdir, source="grid.json")
    assert [m.label for m in cfg.methods] == ["csgm", "ilo"]
    assert len(bench.cells_of(cfg)) == N_CELLS
    (workdir / "grid.json").write_text(json.dumps(raw))
    assert bench.load_config(workdir / "grid.json").hash() == bench.load_config(workdir / "grid.toml").hash()
    assert main(["bench", str(workdir / "missing.toml"), "--out", str(workdir / "x"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_method_restricted_to_tasks_and_labels(workdir):
    raw = textwrap.dedent(GRID) + textwrap.dedent(
        """
        [[tasks]]
        type = "inpaint"
        name = "holes"
        levels = [0.5]

        [[methods]]
        name = "csgm"
        label = "csgm-long"
        steps = 30
        tasks = ["holes"]
        """
    )
    import tomllib

    cfg = bench.parse_config(tomllib.loads(raw), base_dir=workdir, source="x.toml")
    cells = bench.cells_of(cfg)
    assert {c.method for c in cells if c.task == "cs"} == {"csgm", "ilo"}
    assert {c.method for c in cells if c.task == "holes"} == {"csgm", "ilo", "csgm-long"}
    with pytest.raises(UserError, match="labelled 'csgm'"):
        bench.parse_config(
            tomllib.loads(GRID + '\n[[methods]]\nname = "csgm"\n'), base_dir=workdir, source="x.toml"
        )


def test_rows_sharing_a_seed_label_see_the_same_draws(workdir):
    """An ablation row with ``seed_label`` solves with another row's seeds, so the two differ only
    by their settings: identical settings give identical results, a row without it does not."""
    import tomllib

    extra = '\n[[methods]]\nname = "csgm"\nlabel = "{}"\nsteps = 8\nrestarts = 2\n'
    raw = tomllib.loads(GRID + extra.format("twin") + 'seed_label = "csgm"\n' + extra.format("other"))
    cfg = bench.parse_config(raw, base_dir=workdir, source="x.toml")
    assert (
        cfg.identity()["methods"][2]["seed_label"] == "csgm"
        and "seed_label" not in cfg.identity()["methods"][0]
    )
    (workdir / "twins.toml").write_text(
        GRID + extra.format("twin") + 'seed_label = "csgm"\n' + extra.format("other")
    )
    res = bench.run_bench(workdir / "twins.toml", workdir / "twins", progress=False)
    by = {m: [r["psnr"] for r in res.rows if r["method"] == m] for m in ("csgm", "twin", "other")}
    assert by["csgm"] == by["twin"] and by["csgm"] != by["other"]
    raw["methods"][2]["seed_label"] = "nope"
    with pytest.raises(UserError, match="seed_label = 'nope', which labels no method row"):
        bench.parse_config(raw, base_dir=workdir, source="x.toml")


def test_shipped_configs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    files = sorted(folder.glob("*.toml")) + sorted(folder.glob("*.json"))
    assert files
    for f in files:
        try:
            cfg = bench.load_config(f)
        except UserError as e:
            if "missing" in str(e) or "not bundled" in str(e) or "neither a zoo model" in str(e):
                continue  # weights not installed here
            raise
        assert bench.cells_of(cfg)


def test_every_method_runs_through_the_bench(workdir):
    from conftest import train_tiny_score

    from genprior.diffusion.pixel import PixelDiffusion, UNetConfig
    from genprior.zoo import load_generator

    score = train_tiny_score(load_generator(workdir / "tiny.pt"), workdir / "score.pt")
    torch.manual_seed(0)  # an untrained pixel diffusion model of the grid's 1x8x8 images
    ddpm = PixelDiffusion(UNetConfig(size=8, channels=1, widths=(8, 16), attention=(False, False)))
    torch.save(ddpm.to_dict(), workdir / "ddpm.pt")
    from genprior.diffusion.latent import AEConfig, Autoencoder, LatentDiffusion

    ae = Autoencoder(AEConfig(size=8, channels=1, widths=(8, 8), latent_channels=2))
    ldm = LatentDiffusion(ae, UNetConfig(size=4, channels=2, widths=(8, 16), attention=(False, False)))
    torch.save(ldm.to_dict(), workdir / "ldm.pt")
    grid = (
        textwrap.dedent(
            """
        generator = "tiny.pt"
        batch_size = 2
        [images]
        source = "samples"
        count = 2
        [[tasks]]
        type = "inpaint"
        levels = [0.5]
        [[methods]]
        name = "pulse"
        steps = 4
        [[methods]]
        name = "projector"
        steps = 3
        distance = "mse"
        w_avg_samples = 10
        [[methods]]
        name = "dip"
        steps = 4
        channels = 8
        layers = 3
        [[methods]]
        name = "lasso-pixel"
        alpha = 0.001
        [[methods]]
        name = "lasso-dct"
        alpha = 0.001
        [[methods]]
        name = "lasso-wavelet"
        alpha = 0.001
        wavelet = "haar"
        [[methods]]
        name = "csgm-deepinv"
        steps = 3
        [[methods]]
        name = "sgilo"
        warm_steps = 3
        chains = 2
        levels = 2
        steps_per_level = 2
        final_steps = 2
        refine_steps = 2
        score = "SCORE"
        [[methods]]
        name = "dps"
        model = "DDPM"
        steps = 3
        [[methods]]
        name = "diffpir"
        model = "DDPM"
        steps = 3
        [[methods]]
        name = "resample"
        model = "LDM"
        steps = 6
        every = 2
        pixel_iters = 2
        latent_iters = 2
        final_iters = 2
        [[methods]]
        name = "latent-dps"
        model = "LDM"
        steps = 3
        [[methods]]
        name = "psld"
        model = "LDM"
        steps = 3
        """
        )
        .replace("SCORE", str(score))
        .replace("DDPM", str(workdir / "ddpm.pt"))
        .replace("LDM", str(workdir / "ldm.pt"))
    )
    (workdir / "all.toml").write_text(grid)
    res = bench.run_bench(workdir / "all.toml", workdir / "all", progress=False)
    assert {r["method"] for r in res.rows} | {"ilo", "csgm"} == set(METHODS)
    assert all(math.isfinite(r["mse"]) and math.isfinite(r["meas_err"]) for r in res.rows)
    # SGILO scales its std map on held-out measurements (its default with chains >= 2): the row
    # keeps the calibration before the factor too, which can only be lower (the factor is >= 1)
    sg = [r for r in res.rows if r["method"] == "sgilo"]
    assert sg and all(0 <= r["calibration_raw"] <= r["calibration"] <= 1 for r in sg)
    assert all("calibration_raw" not in r for r in res.rows if r["method"] != "sgilo")
    # the score model's weights are part of the config's identity: retrained weights rerun the grid
    cfg = bench.load_config(workdir / "all.toml")
    (m,) = [m for m in cfg.methods if m.name == "sgilo"]
    assert m.score_sha256 is not None and "score_sha256" not in cfg.identity()["methods"][0]
    other = workdir / "score-other.pt"
    shutil.copyfile(score, other)
    (workdir / "all2.toml").write_text(grid.replace(str(score), str(other)))
    before = bench.load_config(workdir / "all2.toml").hash()
    train_tiny_score(load_generator(workdir / "tiny.pt"), other, steps=11)  # same path, new weights
    assert bench.load_config(workdir / "all2.toml").hash() != before


def test_lfw_faces_and_deepinvs_csgm_in_a_grid(tmp_path, tiny_stylegan2_path):
    """The lfw source is the first faces of lfw_subset() at the generator's size; deepinv's CSGM
    is a row like any other, on the same measurements."""
    from genprior.data import lfw_faces

    (tmp_path / "lfw.toml").write_text(
        textwrap.dedent(
            f"""
            generator = "{tiny_stylegan2_path}"
            batch_size = 2
            [images]
            source = "lfw"
            count = 3
            [[tasks]]
            type = "inpaint"
            levels = [0.5]
            [[methods]]
            name = "csgm"
            steps = 4
            lr = 0.01
            init = "uniform"
            [[methods]]
            name = "csgm-deepinv"
            steps = 4
            """
        )
    )
    res = bench.run_bench(tmp_path / "lfw.toml", tmp_path / "out", progress=False)
    assert sorted({r["method"] for r in res.rows}) == ["csgm", "csgm-deepinv"]
    assert sorted({r["image_id"] for r in res.rows}) == ["lfw:0", "lfw:1", "lfw:2"]
    cfg = bench.load_config(tmp_path / "lfw.toml")
    x, _, _ = bench.get_images(cfg, bench.get_generator(cfg))
    assert torch.equal(x, lfw_faces(3, 32, 3))
    assert all(math.isfinite(r["psnr"]) and r["time_s"] > 0 for r in res.rows)


def test_astronaut_images_on_an_rgb_generator(tmp_path, tiny_stylegan2_path):
    """The astronaut source is one real RGB photo at the generator's size; every method sees it."""
    from genprior.data import astronaut_face

    (tmp_path / "astro.toml").write_text(
        textwrap.dedent(
            f"""
            generator = "{tiny_stylegan2_path}"
            [images]
            source = "astronaut"
            [[tasks]]
            type = "denoise"
            levels = [0.1]
            [[methods]]
            name = "lasso-dct"
            alpha = 0.00005
            [[methods]]
            name = "csgm"
            steps = 3
            """
        )
    )
    res = bench.run_bench(tmp_path / "astro.toml", tmp_path / "out", progress=False)
    assert sorted(r["method"] for r in res.rows) == ["csgm", "lasso-dct"]
    assert {r["image_id"] for r in res.rows} == {"astronaut"}
    G = bench.get_generator(bench.load_config(tmp_path / "astro.toml"))
    x, ids, _ = bench.get_images(bench.load_config(tmp_path / "astro.toml"), G)
    assert ids == ["astronaut"] and torch.equal(x, astronaut_face(32))
    lasso = next(r for r in res.rows if r["method"] == "lasso-dct")
    assert lasso["psnr"] > 21  # DCT soft-thresholding denoises the photo (the noisy input: 20 dB)


def test_best_of_keeps_each_familys_best_member_per_point(tmp_path):
    def s(task, level, method, psnr, mse):
        return {"task": task, "level_param": "box" if task == "box" else "scale", "level": level, "method": method,
                "n": 3, "psnr_mean": psnr, "psnr_se": 0.1, "mse_mean": mse, "mse_se": 0.001}  # fmt: skip

    summary = [
        s("superres", 4, "ilo", 20.0, 0.01),
        s("superres", 4, "Lasso (a 1)", 15.0, 0.03),
        s("superres", 4, "Lasso (a 2)", 17.0, 0.02),
        s("superres", 8, "ilo", 16.0, 0.02),
        s("superres", 8, "Lasso (a 1)", 14.0, 0.05),
        s("superres", 8, "Lasso (a 2)", 12.0, 0.04),
        s("box", [1, 1, 3, 3], "ilo", 18.0, 0.02), s("box", [1, 1, 3, 3], "Lasso (a 1)", 11.0, 0.09),
    ]  # fmt: skip
    fam = {"Lasso (best)": "Lasso ("}
    got = {(r["task"], str(r["level"]), r["method"]): r for r in bench.best_of_summary(summary, "psnr", fam)}
    assert got[("superres", "4", "Lasso (best)")]["best_method"] == "Lasso (a 2)"
    assert got[("superres", "8", "Lasso (best)")]["best_method"] == "Lasso (a 1)"
    assert len(got) == 6 and not any(k[2].startswith("Lasso (a") for k in got)
    # lower is better for the MSE: at x4 the member with the smaller mse wins
    by_mse = {
        (r["task"], str(r["level"]), r["method"]): r for r in bench.best_of_summary(summary, "mse", fam)
    }
    assert by_mse[("superres", "8", "Lasso (best)")]["best_method"] == "Lasso (a 2)"
    # a box level (not a number) still gets a panel
    assert bench.plot_summary(summary, "psnr", tmp_path / "p.png", best_of=fam)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_plot_best_of_is_presentation_only(workdir):
    base = bench.parse_config(__import__("tomllib").loads(GRID), base_dir=workdir)
    with_fam = bench.parse_config(
        __import__("tomllib").loads('plot_best_of = {"CSGM" = "csgm"}\n' + GRID), base_dir=workdir
    )
    assert with_fam.plot_best_of == {"CSGM": "csgm"} and with_fam.hash() == base.hash()
    with pytest.raises(UserError, match="plot_best_of"):
        bench.parse_config(
            __import__("tomllib").loads('plot_best_of = {"CSGM" = 3}\n' + GRID), base_dir=workdir
        )


def test_a_method_can_run_on_its_own_model(workdir):
    """Same images and measurements, another generator for one method; its shape must match."""
    other = MNISTVAE(image_size=8, hidden_dim=16, latent_dim=4)
    other.reset_parameters(torch.Generator().manual_seed(5))
    torch.save(vae_checkpoint(other), workdir / "other.pt")
    grid = (
        GRID
        + '\n[[methods]]\nname = "csgm"\nlabel = "csgm-other"\nmodel = "other.pt"\nsteps = 8\nrestarts = 2\n'
    )
    (workdir / "own.toml").write_text(grid)
    res = bench.run_bench(workdir / "own.toml", workdir / "own", progress=False)
    rows = {(r["method"], r["level"], r["image"]): r for r in res.rows}
    same = [k for k in rows if k[0] == "csgm"]
    assert same and all(rows[k]["mse"] != rows[("csgm-other", k[1], k[2])]["mse"] for k in same)
    # the rows of the grid's own methods are those of the grid without the extra method
    ref = bench.run_bench(workdir / "grid.toml", workdir / "own-ref", progress=False)
    kept = [r for r in bench.comparable_rows(res.rows) if r["method"] != "csgm-other"]
    assert kept == bench.comparable_rows(ref.rows)

    wide = MNISTVAE(image_size=10, hidden_dim=16, latent_dim=4)
    torch.save(vae_checkpoint(wide), workdir / "wide.pt")
    (workdir / "wide.toml").write_text(grid.replace('model = "other.pt"', 'model = "wide.pt"'))
    with pytest.raises(UserError, match="give a model of the same image shape"):
        bench.run_bench(workdir / "wide.toml", workdir / "wide", progress=False)
    (workdir / "lasso.toml").write_text(GRID + '\n[[methods]]\nname = "lasso-dct"\nmodel = "other.pt"\n')
    with pytest.raises(UserError, match="uses no model"):
        bench.load_config(workdir / "lasso.toml")
    # a zoo model of the wrong kind for its row is refused when the config loads, not when it runs
    from genprior.diffusion.pixel import FORMAT

    torch.save({"format": FORMAT}, workdir / "pix.pt")
    for row, want in (
        (
            'name = "dps"\nmodel = "fmnist-ldm-32"',
            "method 'dps' runs on a pixel diffusion model, and fmnist-ldm-32",
        ),
        (
            'name = "psld"\nmodel = "fmnist-ddpm-32"',
            "runs on a latent diffusion model, and fmnist-ddpm-32 is a pixel",
        ),
        ('name = "resample"\nmodel = "fmnist-stylegan2-32"', "and fmnist-stylegan2-32 is a generator"),
        (
            'name = "csgm"\nmodel = "fmnist-ddpm-32"',
            "fmnist-ddpm-32 is a pixel diffusion model, and method 'csgm'",
        ),
        # and so is a file of the wrong kind, read by its format alone
        (
            'name = "psld"\nmodel = "pix.pt"',
            "runs on a latent diffusion model, and .*pix.pt is a pixel diffusion",
        ),
        (
            'name = "dps"\nmodel = "other.pt"',
            "runs on a pixel diffusion model, and .*other.pt is not a diffusion",
        ),
        ('name = "csgm"\nmodel = "pix.pt"', "pix.pt is a pixel diffusion model, and method 'csgm'"),
    ):
        (workdir / "kind.toml").write_text(GRID + f'\n[[methods]]\nlabel = "x"\n{row}\n')
        with pytest.raises(UserError, match=want):
            bench.load_config(workdir / "kind.toml")


def test_code_fingerprint_follows_the_imports_and_skips_the_reports():
    """A cell's fingerprint covers every genprior module its computation imports (the projector's
    LPIPS included), and no module that only writes reports."""
    from genprior.resume import module_closure

    mods = module_closure(["genprior.bench.cell", "genprior.solvers.projector"])
    assert {
        "genprior.losses.lpips",
        "genprior.solvers.projector",
        "genprior.metrics",
        "genprior.physics.tasks",
    } <= set(mods)
    assert "genprior.bench.report" not in mods and "genprior.bench.run" not in mods
    ilo = module_closure(["genprior.bench.cell", "genprior.solvers.ilo"])
    assert "genprior.solvers.projections" in ilo and "genprior.solvers.sparse" not in ilo


def test_code_fingerprint_changes_with_the_source(tmp_path, monkeypatch):
    import sys

    from genprior import resume

    pkg = tmp_path / "genprior_fp_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(resume, "PACKAGE", "genprior_fp_probe")
    resume._module_file.cache_clear()
    try:
        before = resume.code_fingerprint(["genprior_fp_probe.a"])
        (pkg / "c.py").write_text("Y = 2\n")  # not imported by a: same fingerprint
        assert resume.code_fingerprint(["genprior_fp_probe.a"]) == before
        (pkg / "b.py").write_text("X = 2\n")  # imported by a: another fingerprint
        assert resume.code_fingerprint(["genprior_fp_probe.a"]) != before
    finally:
        resume._module_file.cache_clear()
        sys.modules.pop("genprior_fp_probe", None)


def test_prior_report_reads_runs_of_one_grid(workdir, reference, tmp_path):
    """benchmarks/prior_report.py: tables with paired per-image differences, from one run or from
    runs of one grid split into configs of methods (a label in two runs: the later one's rows
    named after its folder); runs of other measurements are refused."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_report.py"
    spec = importlib.util.spec_from_file_location("prior_report", path)
    pr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pr)
    (workdir / "ilo_only.toml").write_text(
        GRID.split("[[methods]]")[0] + '[[methods]]\nname = "ilo"\nsteps = [6, 4]\nstages = [1]\n'
    )
    (workdir / "csgm_only.toml").write_text(GRID.split('[[methods]]\nname = "ilo"')[0])
    bench.run_bench(workdir / "ilo_only.toml", workdir / "ilo_only", progress=False)
    bench.run_bench(workdir / "csgm_only.toml", workdir / "csgm_only", progress=False)
    args = ["--metrics", "psnr", "--paired", "ilo", "--out", str(tmp_path / "p")]
    assert pr.main([str(workdir / "ref"), *args, "--md", str(tmp_path / "one.md")]) == 0
    assert (
        pr.main(
            [str(workdir / "csgm_only"), str(workdir / "ilo_only"), *args, "--md", str(tmp_path / "two.md")]
        )
        == 0
    )
    one, two = (tmp_path / "one.md").read_text(), (tmp_path / "two.md").read_text()
    assert "| ilo - csgm |" in one and one == two  # the same rows: the same tables
    # ilo in both: the second run's rows are its own method, named after its folder
    assert (
        pr.main([str(workdir / "ilo_only"), str(workdir / "ref"), *args, "--md", str(tmp_path / "rerun.md")])
        == 0
    )
    rerun = (tmp_path / "rerun.md").read_text()
    paired = rerun[rerun.index("| task | level | ilo - ") :].splitlines()
    head, first = (line.split("|") for line in (paired[0], paired[2]))
    assert "ilo - csgm" in " ".join(head)
    assert first[[c.strip() for c in head].index("ilo - ilo [ref]")].strip().startswith("+0.00 ± 0.00"), rerun
    (workdir / "other.toml").write_text(
        GRID.replace("noise_std = 0.05", "noise_std = 0.1").split('[[methods]]\nname = "ilo"')[0]
    )
    bench.run_bench(workdir / "other.toml", workdir / "other", progress=False)
    assert pr.main([str(workdir / "ilo_only"), str(workdir / "other"), *args]) == 2  # other measurements


def test_paired_differences_pair_rows_of_the_same_image_and_measurements():
    from genprior.bench import paired_differences

    def row(method, task, level, image, psnr, mse):
        return {
            "method": method,
            "task": task,
            "level": level,
            "seed": 0,
            "image_id": image,
            "psnr": psnr,
            "mse": mse,
        }

    rows = [
        row("a", "cs", 25, 0, 20.0, 0.01),
        row("b", "cs", 25, 0, 18.0, 0.02),
        row("a", "cs", 25, 1, 15.0, 0.03),
        row("b", "cs", 25, 1, 16.0, 0.01),
        row("a", "cs", 50, 0, 30.0, 0.001),  # no partner: not paired
        row("b", "denoise", 0.2, 0, 10.0, 0.5),
    ]
    d = paired_differences(rows, "psnr", "a", "b")
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.5) and d["se"] == pytest.approx(1.5)
    assert d["wins"] == 0.5
    # lower is better for mse: a wins where its mse is smaller
    assert paired_differences(rows, "mse", "a", "b")["wins"] == 0.5
    assert paired_differences(rows, "mse", "a", "b", "cs", 25)["mean"] == pytest.approx(0.005)
    assert paired_differences(rows, "psnr", "a", "b", "cs", 50)["n"] == 0
