"""`genprior solve` end to end on the third-party tiny StyleGAN2 checkpoint, and its bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genprior.cli import main

STEPS = ["--steps", "4,3,3", "--stages", "1,2"]


@pytest.fixture(scope="module")
def clean_png(tmp_path_factory, tiny_stylegan2_path):
    from genprior.zoo import load_generator

    G = load_generator(str(tiny_stylegan2_path))
    img = G.sample(1, seed=3).clamp(0, 1)[0]
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    p = tmp_path_factory.mktemp("inputs") / "face.png"
    Image.fromarray(arr).save(p)
    return p


def _solve(model, inp, out_dir, *extra):
    out = out_dir / "rec.png"
    js = out_dir / "run.json"
    steps = ["--steps", "5"] if "csgm" in extra else STEPS
    argv = [
        "solve",
        "--model",
        str(model),
        "--input",
        str(inp),
        "--out",
        str(out),
        "--json",
        str(js),
        "--quiet",
        *steps,
        *extra,
    ]
    return main(argv), out, js


@pytest.mark.parametrize(
    "task,extra",
    [
        ("inpaint", ["--mask-ratio", "0.5"]),
        ("inpaint", ["--box", "8,8,20,20"]),
        ("superres", ["--scale", "4"]),
        ("denoise", ["--noise-std", "0.1"]),
        ("cs", ["--measurements", "300"]),
        ("cs", ["--measurements", "300", "--cs-operator", "circulant"]),
        ("colorize", []),
    ],
)
def test_solve_each_task_writes_image_comparison_and_json(
    tmp_path, tiny_stylegan2_path, clean_png, task, extra
):
    rc, out, js = _solve(tiny_stylegan2_path, clean_png, tmp_path, "--task", task, *extra)
    assert rc == 0
    rec = np.asarray(Image.open(out))
    assert rec.shape == (32, 32, 3)
    cmp_ = np.asarray(Image.open(tmp_path / "rec-compare.png"))
    # three 32-px tiles scaled 8x without smoothing (256 px), labelled above, 8-px gaps
    label_h = cmp_.shape[0] - 256
    assert cmp_.shape[1] == 3 * 256 + 2 * 8 and 10 < label_h < 40
    tile = cmp_[label_h:, 2 * (256 + 8) :]
    np.testing.assert_array_equal(tile[::8, ::8], rec)
    assert (cmp_[:label_h, 2 * (256 + 8) :] < 128).any()  # the label is written
    data = json.loads(js.read_text())
    assert data["settings"]["task"] == task
    assert data["psnr"] is not None and data["psnr"] > 5
    assert 0 <= data["ssim"] <= 1
    assert data["measurement_error"] >= 0 and data["time_s"] > 0
    assert [r["stage"] for r in data["record"]["rounds"]] == [0, 1, 2]


def test_solve_csgm_and_measured_input(tmp_path, tiny_stylegan2_path, clean_png):
    rc, out, js = _solve(
        tiny_stylegan2_path, clean_png, tmp_path, "--task", "denoise", "--method", "csgm", "--restarts", "2"
    )
    assert rc == 0 and json.loads(js.read_text())["method"] == "csgm"
    # an already-degraded low-resolution image
    low = tmp_path / "low.png"
    Image.open(clean_png).resize((8, 8)).save(low)
    rc, out, js = _solve(
        tiny_stylegan2_path, low, tmp_path, "--task", "superres", "--scale", "4", "--measured"
    )
    assert rc == 0
    data = json.loads(js.read_text())
    assert "psnr" not in data  # no ground truth
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)


def _assert_failed_cleanly(rc, capsys, tmp_path, needle):
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert needle.lower() in err.lower(), err
    assert not (tmp_path / "rec.png").exists()
    assert not (tmp_path / "run.json").exists()
    assert not (tmp_path / "rec-compare.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rec")]


def test_bad_input_not_an_image(tmp_path, capsys, tiny_stylegan2_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    rc, _, _ = _solve(tiny_stylegan2_path, bad, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "not a readable image")


def test_bad_checkpoint_unreadable_and_unknown_layout(tmp_path, capsys, clean_png):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    rc, _, _ = _solve(junk, clean_png, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "junk.pt")
    odd = tmp_path / "odd.pt"
    torch.save({"weights": torch.zeros(3)}, odd)
    rc, _, _ = _solve(odd, clean_png, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "layout")
    rc, _, _ = _solve("no-such-model", clean_png, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "no-such-model")


def test_bad_masks(tmp_path, capsys, tiny_stylegan2_path, clean_png):
    small = tmp_path / "small_mask.png"
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(small)
    rc, _, _ = _solve(tiny_stylegan2_path, clean_png, tmp_path, "--task", "inpaint", "--mask", str(small))
    _assert_failed_cleanly(rc, capsys, tmp_path, "mask")
    empty = tmp_path / "empty_mask.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(empty)
    rc, _, _ = _solve(tiny_stylegan2_path, clean_png, tmp_path, "--task", "inpaint", "--mask", str(empty))
    _assert_failed_cleanly(rc, capsys, tmp_path, "mask")
    rc, _, _ = _solve(tiny_stylegan2_path, clean_png, tmp_path, "--task", "inpaint")
    _assert_failed_cleanly(rc, capsys, tmp_path, "mask")


def test_too_many_measurements(tmp_path, capsys, tiny_stylegan2_path, clean_png):
    rc, _, _ = _solve(
        tiny_stylegan2_path, clean_png, tmp_path, "--task", "cs", "--measurements", str(3 * 32 * 32 + 1)
    )
    _assert_failed_cleanly(rc, capsys, tmp_path, "measurements")


def test_nan_input(tmp_path, capsys, tiny_stylegan2_path):
    arr = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    arr[3, 4, 1] = np.nan
    p = tmp_path / "nan.npy"
    np.save(p, arr)
    rc, _, _ = _solve(tiny_stylegan2_path, p, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "nan")


def test_wrong_size_needs_resize(tmp_path, capsys, tiny_stylegan2_path, clean_png):
    big = tmp_path / "big.png"
    Image.open(clean_png).resize((48, 40)).save(big)
    rc, _, _ = _solve(tiny_stylegan2_path, big, tmp_path, "--task", "denoise")
    _assert_failed_cleanly(rc, capsys, tmp_path, "--resize")
    rc, out, _ = _solve(tiny_stylegan2_path, big, tmp_path, "--task", "denoise", "--resize")
    assert rc == 0 and out.exists()


def test_solve_help_lists_tasks(capsys):
    with pytest.raises(SystemExit) as e:
        main(["solve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for t in ("inpaint", "superres", "denoise", "cs", "colorize"):
        assert t in out


# ---- every method of the table, from the command line -----------------------------------------
QUICK = {  # a few steps each, so that every method runs in about a second
    "ilo": ["--steps", "3,2,2", "--stages", "1,2"],
    "csgm": ["--set", "steps=4", "--set", "restarts=2"],
    "csgm-deepinv": ["--set", "steps=4"],
    "pulse": ["--set", "steps=3"],
    "projector": ["--set", "steps=3", "--set", "w_avg_samples=64"],
    "lasso-dct": ["--set", "alpha=0.001"],
    "lasso-wavelet": ["--set", "alpha=0.001", "--set", "wavelet=haar"],
    "lasso-pixel": ["--set", "alpha=0.001"],
    "dip": ["--set", "steps=3", "--set", "channels=8", "--set", "layers=2"],
    "sgilo": [
        "--set",
        "warm_steps=3",
        "--samples",
        "3",
        "--set",
        "levels=2",
        "--set",
        "final_steps=2",
        "--set",
        "refine_steps=3",
    ],
    "dps": ["--set", "steps=3", "--samples", "3"],
    "diffpir": ["--set", "steps=3", "--samples", "3"],
    "resample": ["--set", "steps=6", "--set", "every=2", "--set", "pixel_iters=2", "--set", "latent_iters=2"]
    + ["--samples", "3"],
    "latent-dps": ["--set", "steps=3", "--samples", "3"],
    "psld": ["--set", "steps=3", "--samples", "3"],
}


def test_every_method_of_the_table_has_a_quick_setting():
    from genprior.solvers.registry import METHODS

    assert set(QUICK) == set(METHODS)


@pytest.mark.parametrize("method", sorted(QUICK))
def test_solve_runs_every_method_of_the_table(tmp_path, tiny_stylegan2_path, clean_png, method, request):
    from genprior.solvers.registry import METHODS

    model = ["--model", str(tiny_stylegan2_path)] if METHODS[method].needs_model else []
    if METHODS[method].needs == "diffusion":
        latent = METHODS[method].module.endswith(".latent")
        model = ["--model", str(request.getfixturevalue("tiny_ldm_path" if latent else "tiny_ddpm_path"))]
    if METHODS[method].needs == "generator+score":
        model += ["--set", f"score={request.getfixturevalue('tiny_score_path')}"]
    out, js = tmp_path / "rec.png", tmp_path / "run.json"
    argv = ["solve", *model, "--input", str(clean_png), "--task", "inpaint", "--mask-ratio", "0.5"]
    argv += ["--method", method, *QUICK[method], "--out", str(out), "--json", str(js), "--quiet"]
    assert main(argv) == 0
    assert np.asarray(Image.open(out)).shape == (32, 32, 3)  # a model-free method: the input's size
    data = json.loads(js.read_text())
    assert data["method"] == method and data["psnr"] is not None and np.isfinite(data["measurement_error"])
    if "--samples" in QUICK[method]:  # a posterior sampler: the std map, the samples, the calibration
        assert np.asarray(Image.open(tmp_path / "rec-std.png")).shape[:2] == (32, 32)
        assert np.asarray(Image.open(tmp_path / "rec-samples.png")).shape[1] == 3 * 32 + 2 * 2
        post = data["posterior"]
        assert (
            post["samples"] == 3 and 0 <= post["calibration"] <= 1 and post["calibration_pixels"] == 3 * 512
        )  # 50 % of 32x32, 3 channels
        # every sampler's default with two samples or more: the std map calibrated on held-out pixels
        assert post["holdout_scale"] >= 1
    settings = dict(item.split("=") for item in QUICK[method][1::2] if "=" in item)
    for k, v in settings.items():  # the --set values reached the method's config, typed
        assert str(data["config"][k]) == v or data["config"][k] == float(v)


def test_set_is_typed_and_checked_from_the_config(tmp_path, capsys, tiny_stylegan2_path, clean_png):
    base = ["--task", "denoise", "--method", "csgm"]
    for extra, needle in (
        (["--set", "steps=many"], "wants an integer for steps"),
        (["--set", "stepz=3"], "'stepz' is not a setting"),
        (["--set", "steps"], "not NAME=VALUE"),
        (["--radius", "0.2"], "--radius 0.2: 'radius' is not a setting of it for method 'csgm'"),
        (["--steps", "4,3"], "wants an integer for steps"),
    ):
        rc, _, _ = _solve(tiny_stylegan2_path, clean_png, tmp_path, *base, *extra)
        _assert_failed_cleanly(rc, capsys, tmp_path, needle)


def test_unwritable_outputs_and_settings_given_twice_fail_before_any_work(
    tmp_path, capsys, tiny_stylegan2_path, clean_png
):
    """Every output is checked before the solve (a folder where a file goes, a file where a
    folder goes, the input itself), and a setting given twice disagreeing is refused, so that no
    run fails after its work or silently drops a value."""
    base = ["--task", "denoise", "--method", "csgm"]
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    for extra, needle in (
        (["--json", str(tmp_path / "folder")], "--json"),
        (["--side-by-side", str(tmp_path / "file" / "c.png")], "is a file, not a folder"),
        (["--side-by-side", str(clean_png)], "would overwrite --input"),
        (["--seed", "1", "--set", "seed=2"], "--seed 1 and --set seed=2 disagree"),
        (["--set", "steps=4"], "steps is given twice"),  # _solve gives --steps 5
    ):
        rc, _, _ = _solve(tiny_stylegan2_path, clean_png, tmp_path, *base, *extra)
        _assert_failed_cleanly(rc, capsys, tmp_path, needle)
    for out, needle in (
        (tmp_path / "folder", "is a folder: give a file path"),
        (clean_png, "would overwrite"),
    ):
        argv = ["solve", "--model", str(tiny_stylegan2_path), "--input", str(clean_png), "--out", str(out)]
        assert main([*argv, *base]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    # argparse's own errors are one line too
    with pytest.raises(SystemExit) as e:
        main(["solve", "--task", "denoise", "--seed", "abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid int value: 'abc'" in err, err
    # --set seed= alone sets the method's seed: the record says so
    rc, _, js = _solve(tiny_stylegan2_path, clean_png, tmp_path, *base, "--set", "seed=7")
    assert rc == 0 and json.loads(js.read_text())["config"]["seed"] == 7


def test_model_free_method_refuses_a_model_and_a_model_method_needs_one(
    tmp_path, capsys, tiny_stylegan2_path, clean_png
):
    argv = [
        "solve",
        "--input",
        str(clean_png),
        "--task",
        "denoise",
        "--out",
        str(tmp_path / "rec.png"),
        "--quiet",
    ]
    rc = main([*argv, "--model", str(tiny_stylegan2_path), "--method", "lasso-dct"])
    _assert_failed_cleanly(rc, capsys, tmp_path, "uses no model")
    _assert_failed_cleanly(main(argv), capsys, tmp_path, "needs --model")


def test_methods_and_models_commands_list_the_tables(capsys):
    from genprior.solvers.registry import METHODS
    from genprior.zoo import ZOO

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in ZOO:
        (line,) = [ln for ln in out if ln.startswith(name + " ")]
        assert "[installed]" in line or "not installed: " in line


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["solve", "--help"],
        ["solve", "--method", "magic"],
        ["bench", "--help"],
        ["theory", "--help"],
    ],
)
def test_cli_help_and_argument_errors_import_neither_torch_nor_deepinv(argv):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "genprior", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode in (0, 2), r.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
    }
    assert imported and not {m for m in imported if m.split(".")[0] in ("torch", "deepinv")}
