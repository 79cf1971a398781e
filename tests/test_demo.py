"""`genprior demo` on a tiny setting: every task, both methods, gallery and tables written."""

import importlib.util
import json

import pytest
from PIL import Image

from genprior.cli import main


@pytest.mark.skipif(
    importlib.util.find_spec("gan_face_generate") is None, reason="gan-face-generate not installed"
)
def test_demo_tiny_writes_gallery_and_tables(tmp_path, capsys):
    out = tmp_path / "demo-out"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--models",
            "dcgan-faces-64,mnist-vae-20",
            "--images",
            "2",
            "--ilo-steps",
            "3,2,2",
            "--quiet",
        ]
    )
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    faces = [r for r in rows if r["model"] == "dcgan-faces-64"]
    digits = [r for r in rows if r["model"] == "mnist-vae-20"]
    assert {r["task"] for r in faces} == {"inpaint", "superres x4", "denoise", "cs", "colorize"}
    assert {r["task"] for r in digits} == {"inpaint", "superres x4", "denoise", "cs"}  # no colour
    assert {r["method"] for r in rows} == {"ILO", "CSGM"}
    assert len(rows) == 2 * (5 + 4)
    assert all(len(r["psnr_per_image"]) == 2 and r["psnr"] > 0 for r in rows)
    md = (out / "results.md").read_text()
    assert md.count("| dcgan-faces-64 |") == 5
    assert "| CSGM s | ILO s |" in md  # the compute each side had, beside the difference
    face_cs = next(line for line in md.splitlines() if line.startswith("| dcgan-faces-64 | cs |"))
    ilo_cs = next(r for r in faces if r["task"] == "cs" and r["method"] == "ILO")
    assert face_cs.rstrip(" |").endswith(f"{ilo_cs['time_s']:.1f}")
    for name in ("dcgan-faces-64", "mnist-vae-20"):
        with Image.open(out / f"{name}-gallery.png") as im:
            assert im.width > im.height > 100
    printed = capsys.readouterr().out
    assert "results.md" in printed and "ILO - CSGM" in printed


def test_demo_with_no_available_model_is_a_user_error(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "o"), "--models", "no-such-model", "--quiet"])
    assert rc == 2
    assert "no demo model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_table_does_not_depend_on_the_number_of_workers(tmp_path):
    """The solves run in a pool and finish in any order; each draws its measurements from the same
    seeds, so one process and two give the same rows, in the table's order."""
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        argv = ["demo", "--out", str(out), "--models", "mnist-vae-20", "--images", "2"]
        argv += ["--ilo-steps", "3,2", "--workers", str(workers), "--quiet"]
        assert main(argv) == 0
        data = json.loads((out / "results.json").read_text())
        rows[workers] = [(r["task"], r["method"], r["psnr_per_image"], r["meas_err"]) for r in data["rows"]]
        assert (out / "mnist-vae-20-gallery.png").exists()
    assert [r[:2] for r in rows[1]] == [
        (t, m) for t in ("inpaint", "superres x4", "denoise", "cs") for m in ("CSGM", "ILO")
    ]
    assert rows[1] == rows[2]
