"""Solving a folder of images: killed and resumed, bad files, seeds from names, Ray."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from genprior.cli import main
from genprior.errors import UserError
from genprior.folder import FolderJob, solve_folder


def _write_pngs(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for img, n in zip(images, names):
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / n)


@pytest.fixture(scope="module")
def folder64(tmp_path_factory, tiny_stylegan2_path):
    from genprior.zoo import load_generator

    G = load_generator(tiny_stylegan2_path)
    d = tmp_path_factory.mktemp("in64")
    _write_pngs(d, G.sample(64, seed=11), [f"face{i:03d}.png" for i in range(64)])
    return d


def _records(out):
    return {p.name: json.loads(p.read_text()) for p in out.glob("[!.]*.json") if p.name != "job.json"}


def test_killed_run_resumes_with_every_image_done_once(tmp_path, folder64, tiny_stylegan2_path):
    """A run killed with SIGKILL mid-way, then started again: all 64 images end done, the ones
    finished before the kill are neither redone nor rewritten, nothing half-written is left."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "genprior", "solve", "--model", str(tiny_stylegan2_path)]
    argv += ["--task", "denoise", "--method", "csgm", "--steps", "30", "--input-dir", str(folder64)]
    argv += ["--out-dir", str(out), "--batch-size", "8", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _records(out):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    before = _records(out)
    assert before or proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert 0 < len(before) < 64, "the run was not killed mid-way"
    mtimes = {n: (out / n).stat().st_mtime_ns for n in before}

    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = _records(out)
    assert len(after) == 64 and {r["file"] for r in after.values()} == {f"face{i:03d}.png" for i in range(64)}
    for n, rec in before.items():  # finished before the kill: kept as they were
        assert after[n] == rec and (out / n).stat().st_mtime_ns == mtimes[n]
    pids = {r["written_by"] for r in after.values()}
    assert len(pids) == 2  # the killed run wrote the first ones, the second run only the rest
    assert sum(r["written_by"] == before[next(iter(before))]["written_by"] for r in after.values()) == len(
        before
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64 and all(r["status"] == "done" and float(r["psnr"]) > 5 for r in rows)
    for i in (0, 63):
        assert (out / f"face{i:03d}.png").is_file() and (out / f"face{i:03d}-compare.png").is_file()


def test_an_interrupted_run_resumes_to_the_same_results(tmp_path, folder64, tiny_stylegan2_path):
    """In-process: stop after the second batch, resume; every record equals an uninterrupted run's."""
    job = FolderJob("csgm", "inpaint", str(tiny_stylegan2_path), {"mask_ratio": 0.5}, {"steps": 5}, 3, 16)

    class Stop(Exception):
        pass

    def stop(b, names):
        if b == 1:
            raise Stop

    with pytest.raises(Stop):
        solve_folder(job, folder64, tmp_path / "a", progress=False, on_batch_done=stop)
    assert len(_records(tmp_path / "a")) == 32
    res = solve_folder(job, folder64, tmp_path / "a", progress=False)
    assert len(res.done) == 32 and len(res.skipped) == 32 and not res.failed
    full = solve_folder(job, folder64, tmp_path / "b", progress=False)
    assert len(full.done) == 64
    a, b = _records(tmp_path / "a"), _records(tmp_path / "b")
    for n in a:
        assert a[n]["psnr"] == b[n]["psnr"] and a[n]["measurement_error"] == b[n]["measurement_error"]


def test_an_images_result_follows_its_name_not_its_batch(tmp_path, folder64, tiny_stylegan2_path):
    """Measurement noise and start come from the seed and the file's name: another partition
    (batch size) or another set of neighbours gives the same image the same result."""
    sub = tmp_path / "sub"
    sub.mkdir()
    for n in ("face005.png", "face040.png", "face041.png"):
        (sub / n).write_bytes((folder64 / n).read_bytes())
    runs = []
    for d, bs in ((folder64, 16), (sub, 1), (sub, 3)):
        job = FolderJob("csgm", "denoise", str(tiny_stylegan2_path), {"noise_std": 0.1}, {"steps": 20}, 0, bs)
        solve_folder(job, d, tmp_path / f"o{bs}", progress=False)
        runs.append(_records(tmp_path / f"o{bs}"))
    for n in ("face005.json", "face040.json", "face041.json"):
        assert runs[0][n]["measurement_seed"] == runs[1][n]["measurement_seed"]
        # one Adam per image: the batch changes only the floating-point rounding
        assert abs(runs[0][n]["psnr"] - runs[1][n]["psnr"]) < 0.01
        assert abs(runs[1][n]["psnr"] - runs[2][n]["psnr"]) < 0.01
    assert len({runs[1][n]["psnr"] for n in runs[1]}) == 3  # the seeds differ between names


def test_a_posterior_samplers_std_maps_are_written_per_image(tmp_path, tiny_ddpm_path):
    """With two samples or more a folder job writes each image's std map (``NAME-std.png``) and
    its summary in ``NAME.json``, as ``solve --input`` does for one image."""
    import torch

    g = torch.Generator().manual_seed(0)
    _write_pngs(tmp_path / "in", torch.rand(3, 3, 32, 32, generator=g), ["a.png", "b.png", "c.png"])
    job = FolderJob(
        "dps", "inpaint", str(tiny_ddpm_path), {"mask_ratio": 0.5}, {"steps": 3, "chains": 2}, 0, 3
    )
    solve_folder(job, tmp_path / "in", tmp_path / "out", progress=False)
    recs = _records(tmp_path / "out")
    assert sorted(recs) == ["a.json", "b.json", "c.json"]
    for name, rec in recs.items():
        post = rec["posterior"]
        assert post["samples"] == 2 and 0 <= post["calibration"] <= 1 and post["holdout_scale"] >= 1
        assert 0 < post["std_mean"] <= post["std_max"]
        std = np.asarray(Image.open(tmp_path / "out" / name.replace(".json", "-std.png")), dtype=float)
        assert std.shape[:2] == (32, 32) and std.max() == 255  # white = the image's largest std
    job1 = FolderJob("dps", "inpaint", str(tiny_ddpm_path), {"mask_ratio": 0.5}, {"steps": 3}, 0, 3)
    solve_folder(job1, tmp_path / "in", tmp_path / "one", progress=False)
    assert not list((tmp_path / "one").glob("*-std.png"))
    assert all("posterior" not in r for r in _records(tmp_path / "one").values())


def test_bad_files_are_skipped_with_one_line_each_and_exit_2(tmp_path, folder64, tiny_stylegan2_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for n in ("face000.png", "face001.png", "face002.png"):
        (d / n).write_bytes((folder64 / n).read_bytes())
    (d / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (20, 20)).save(d / "small.png")
    (d / "notes.txt").write_text("not an image: ignored")
    argv = ["solve", "--model", str(tiny_stylegan2_path), "--task", "superres", "--scale", "2"]
    argv += ["--method", "csgm", "--steps", "3", "--input-dir", str(d), "--out-dir", str(tmp_path / "o")]
    assert main(argv + ["--quiet"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and "broken.png" in err[0] and "small.png" in err[1] and "--resize" in err[1]
    recs = _records(tmp_path / "o")
    assert sorted(recs) == ["face000.json", "face001.json", "face002.json"]
    with open(tmp_path / "o" / "summary.csv") as f:
        status = {r["name"]: r["status"] for r in csv.DictReader(f)}
    assert status == {
        "broken.png": "failed",
        "face000.png": "done",
        "face001.png": "done",
        "face002.png": "done",
        "small.png": "failed",
    }
    # the bad files are fixed: the next run solves them and keeps the finished ones
    (d / "broken.png").write_bytes((folder64 / "face003.png").read_bytes())
    Image.open(folder64 / "face004.png").save(d / "small.png")
    mtime = (tmp_path / "o" / "face000.json").stat().st_mtime_ns
    assert main(argv + ["--quiet"]) == 0
    assert (
        len(_records(tmp_path / "o")) == 5 and (tmp_path / "o" / "face000.json").stat().st_mtime_ns == mtime
    )


def test_folder_options_and_another_jobs_folder_are_refused(tmp_path, folder64, tiny_stylegan2_path, capsys):
    base = ["solve", "--model", str(tiny_stylegan2_path), "--task", "denoise", "--method", "csgm"]
    cases = [
        (["--input-dir", str(folder64)], "--input-dir needs --out-dir"),
        (
            ["--input-dir", str(folder64), "--out-dir", str(tmp_path / "x"), "--out", "a.png"],
            "--out is for one",
        ),
        (["--input", "a.png", "--input-dir", str(folder64), "--out-dir", "o"], "not both"),
        (["--input-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o")], "does not exist"),
        (
            ["--input-dir", str(folder64), "--out-dir", str(tmp_path / "o"), "--batch-size", "0"],
            "batch size 0",
        ),
    ]
    for extra, needle in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    job = FolderJob("csgm", "denoise", str(tiny_stylegan2_path), {"noise_std": 0.1}, {"steps": 2}, 0, 64)
    solve_folder(job, folder64, tmp_path / "j", progress=False)
    other = FolderJob("csgm", "denoise", str(tiny_stylegan2_path), {"noise_std": 0.1}, {"steps": 3}, 0, 64)
    with pytest.raises(UserError, match="another folder job"):
        solve_folder(other, folder64, tmp_path / "j", progress=False)


def test_ray_engine_gives_the_local_results(tmp_path, folder64, tiny_stylegan2_path, ray_session):
    job = FolderJob("ilo", "inpaint", str(tiny_stylegan2_path), {"mask_ratio": 0.6}, {"steps": (4, 3)}, 1, 24)
    local = solve_folder(job, folder64, tmp_path / "local", progress=False)
    ray_ = solve_folder(job, folder64, tmp_path / "ray", progress=False, engine="ray")
    assert sorted(local.done) == sorted(ray_.done) and len(local.done) == 64
    a, b = _records(tmp_path / "local"), _records(tmp_path / "ray")
    for n in a:
        assert (a[n]["psnr"], a[n]["ssim"], a[n]["measurement_error"]) == (
            b[n]["psnr"],
            b[n]["ssim"],
            b[n]["measurement_error"],
        )
    for i in (0, 30, 63):
        x = np.asarray(Image.open(tmp_path / "local" / f"face{i:03d}.png"))
        np.testing.assert_array_equal(x, np.asarray(Image.open(tmp_path / "ray" / f"face{i:03d}.png")))
