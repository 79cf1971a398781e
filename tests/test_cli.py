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
    assert cmp_.shape[0] == 32 and cmp_.shape[1] == 3 * 32 + 2 * 2
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
