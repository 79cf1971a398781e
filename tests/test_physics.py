"""Forward operators: the partial circulant CS operator and make_physics / load_mask / previews."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from deepinv.physics import (
    CompressedSensing,
    Decolorize,
    Denoising,
    Downsampling,
    GaussianNoise,
    Inpainting,
    LinearPhysics,
)
from PIL import Image

from genprior.errors import UserError
from genprior.physics import TASKS, GaussianCS, PartialCirculant, load_mask, make_physics, measurement_preview

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def dense_circulant(op: PartialCirculant) -> torch.Tensor:
    """The explicit m x n float64 matrix of ``op``, built independently with torch.roll."""
    n = op.n
    g = torch.fft.irfft(op.filter_fft.to(torch.complex128).cpu(), n=n)  # the filter's taps
    # column j of the circulant matrix is g cyclically shifted down by j: C[i, j] = g[(i - j) mod n]
    circ = torch.stack([torch.roll(g, j) for j in range(n)], dim=1)
    return circ[op.indices.cpu()] * op.signs.cpu().to(torch.float64)[None, :] / math.sqrt(op.m)


# --------------------------------------------------------------------------- PartialCirculant


class TestPartialCirculant:
    @pytest.mark.parametrize("shape,m", [((1, 4, 5), 7), ((3, 8, 8), 50), ((1, 7, 7), 49), ((2, 3, 3), 1)])
    def test_equals_explicit_matrix(self, shape, m):
        op = PartialCirculant(m, shape, seed=3)
        mat = dense_circulant(op)
        assert mat.shape == (m, math.prod(shape))
        x = torch.randn(4, *shape, dtype=torch.float64)
        y = op.A(x)
        assert y.shape == (4, m)
        torch.testing.assert_close(y, x.reshape(4, -1) @ mat.T, rtol=1e-10, atol=1e-10)
        v = torch.randn(4, m, dtype=torch.float64)
        torch.testing.assert_close(op.A_adjoint(v), (v @ mat).reshape(4, *shape), rtol=1e-10, atol=1e-10)
        # float32 agrees too, to float32 precision
        torch.testing.assert_close(op.A(x.float()), y.float(), rtol=1e-4, atol=1e-4)

    def test_is_a_deepinv_linear_physics_and_indices_sorted(self):
        op = PartialCirculant(30, (1, 8, 8), seed=0)
        assert isinstance(op, LinearPhysics)
        idx = op.indices
        assert idx.numel() == 30 and bool((idx[1:] > idx[:-1]).all())
        assert set(op.signs.unique().tolist()) <= {-1.0, 1.0}
        assert op.img_size == (1, 8, 8)
        y = op(torch.rand(2, 1, 8, 8))  # forward with the default zero noise
        assert y.shape == (2, 30)

    @pytest.mark.parametrize("shape,m", [((1, 28, 28), 200), ((3, 32, 32), 1000), ((3, 17, 13), 99)])
    def test_adjointness_deepinv(self, shape, m):
        op = PartialCirculant(m, shape, seed=1)
        assert op.adjointness_test(img_size=shape, num_samples=4).item() < 1e-5
        assert op.adjointness_test(img_size=shape, dtype=torch.float64, num_samples=4).item() < 1e-12

    def test_scaling_frobenius_and_energy(self):
        shape, m = (1, 6, 6), 20
        op = PartialCirculant(m, shape, seed=5)
        n = 36
        mat = dense_circulant(op)
        # ||A||_F^2 = n, i.e. E_x ||Ax||^2 = ||x||^2 for isotropic x
        assert abs(mat.pow(2).sum().item() - n) < 1e-5 * n  # spectrum stored in complex64
        # over operator draws, ||Ax||^2 / ||x||^2 averages to 1 for a fixed x
        x = torch.rand(1, *shape, dtype=torch.float64)
        ratios = [
            PartialCirculant(m, shape, seed=s).A(x).pow(2).sum().item() / x.pow(2).sum().item()
            for s in range(300)
        ]
        assert abs(np.mean(ratios) - 1.0) < 0.1

    def test_batched_equals_one_by_one(self):
        op = PartialCirculant(40, (3, 8, 8), seed=2)
        x = torch.randn(5, 3, 8, 8)
        y = op.A(x)
        for i in range(5):
            torch.testing.assert_close(y[i : i + 1], op.A(x[i : i + 1]))
        v = torch.randn(5, 40)
        at = op.A_adjoint(v)
        for i in range(5):
            torch.testing.assert_close(at[i : i + 1], op.A_adjoint(v[i : i + 1]))

    def test_seed_and_rng(self):
        shape = (1, 8, 8)
        a, b, c = (PartialCirculant(20, shape, seed=s) for s in (7, 7, 8))
        x = torch.randn(2, *shape)
        torch.testing.assert_close(a.A(x), b.A(x))
        assert not torch.allclose(a.A(x), c.A(x))
        g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        torch.testing.assert_close(
            PartialCirculant(20, shape, rng=g1).A(x), PartialCirculant(20, shape, rng=g2).A(x)
        )
        torch.manual_seed(0)
        d = PartialCirculant(20, shape)
        torch.manual_seed(0)
        e = PartialCirculant(20, shape)
        torch.testing.assert_close(d.A(x), e.A(x))

    def test_gradients_flow(self):
        op = PartialCirculant(30, (1, 8, 8), seed=0)
        x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        y = torch.randn(2, 30, dtype=torch.float64)
        (0.5 * (op.A(x) - y).pow(2).sum()).backward()
        torch.testing.assert_close(x.grad, op.A_adjoint(op.A(x.detach()) - y))

    @pytest.mark.parametrize("m", [0, -1, 65, 2.5, True])
    def test_bad_measurements(self, m):
        with pytest.raises(UserError, match="measurements"):
            PartialCirculant(m, (1, 8, 8))

    def test_wrong_input_shape(self):
        op = PartialCirculant(10, (1, 8, 8), seed=0)
        with pytest.raises(ValueError):
            op.A(torch.rand(1, 1, 8, 9))
        with pytest.raises(ValueError):
            op.A_adjoint(torch.rand(1, 11))

    def test_megapixel_colour(self):
        shape = (3, 1024, 1024)
        n = math.prod(shape)
        t0 = time.perf_counter()
        op = PartialCirculant(n // 20, shape, seed=0)
        x = torch.rand(1, *shape)
        y = op.A(x)
        xt = op.A_adjoint(y)
        elapsed = time.perf_counter() - t0
        assert y.shape == (1, n // 20) and xt.shape == (1, *shape)
        assert torch.isfinite(y).all() and torch.isfinite(xt).all()
        # O(n) storage: signs, half spectrum and indices, no matrix
        stored = sum(b.numel() for b in op.buffers())
        assert stored < 3 * n
        assert elapsed < 10.0, f"megapixel build + A + A^T took {elapsed:.1f}s"
        # energy is roughly preserved
        assert 0.5 < y.pow(2).sum().item() / x.pow(2).sum().item() < 2.0

    @needs_cuda
    def test_cuda_matches_cpu(self):
        cpu = PartialCirculant(100, (3, 16, 16), seed=4)
        gpu = PartialCirculant(100, (3, 16, 16), seed=4, device="cuda")
        assert gpu.filter_fft.is_cuda and gpu.indices.is_cuda
        x = torch.randn(2, 3, 16, 16)
        torch.testing.assert_close(gpu.A(x.cuda()).cpu(), cpu.A(x), rtol=1e-4, atol=1e-4)
        assert gpu.adjointness_test(img_size=(3, 16, 16), device="cuda").item() < 1e-5


# --------------------------------------------------------------------------- make_physics


SHAPE = (3, 32, 32)


def _x(shape=SHAPE, b=2, seed=0):
    return torch.rand(b, *shape, generator=torch.Generator().manual_seed(seed))


class TestGaussianCS:
    """genprior's Gaussian CS is deepinv's CompressedSensing with the pseudo-inverse made late."""

    def test_same_operator_as_deepinv_bit_for_bit(self):
        shape, m = (3, 8, 8), 50
        ours = GaussianCS(m, shape, rng=torch.Generator().manual_seed(7))
        theirs = CompressedSensing(m=m, img_size=shape, rng=torch.Generator().manual_seed(7))
        assert isinstance(ours, CompressedSensing)
        assert ours._A_dagger is None  # nothing computed yet
        x = _x(shape, b=3)
        y = theirs.A(x)
        assert torch.equal(ours.A(x), y)
        assert torch.equal(ours.A_adjoint(y), theirs.A_adjoint(y))
        assert torch.equal(ours.A_dagger(y), theirs.A_dagger(y))
        assert ours.A_dagger(y).shape == (3, *shape)

    def test_rescale_scales_every_product(self):
        shape, c = (1, 6, 6), 4.0
        p = GaussianCS(20, shape, rng=torch.Generator().manual_seed(1))
        x = _x(shape, b=2)
        y, at, ad = p.A(x), p.A_adjoint(p.A(x)), p.A_dagger(p.A(x))
        p.rescale(c)
        assert torch.allclose(p.A(x), c * y)
        assert torch.allclose(p.A_adjoint(p.A(x)), c * c * at, rtol=1e-5)
        assert torch.allclose(p.A_dagger(p.A(x)), ad, atol=1e-5)  # A^+ A is unchanged by the scale
        assert p.adjointness_test(u=x).item() < 1e-4

    def test_make_physics_uses_it_with_the_old_matrix(self):
        p = make_physics("cs", SHAPE, seed=3, measurements=40)
        assert isinstance(p, GaussianCS) and p._A_dagger is None
        old = CompressedSensing(m=40, img_size=SHAPE, rng=torch.Generator().manual_seed(3))
        assert torch.equal(p._A, old._A)  # the matrix deepinv's class draws from the same seed


class TestMakePhysics:
    def test_tasks_tuple(self):
        assert TASKS == ("inpaint", "superres", "denoise", "cs", "colorize")

    @pytest.mark.parametrize(
        "task,kw,cls,yshape",
        [
            ("inpaint", dict(mask_ratio=0.5), Inpainting, (2, 3, 32, 32)),
            ("superres", dict(scale=4), Downsampling, (2, 3, 8, 8)),
            ("denoise", dict(noise_std=0.1), Denoising, (2, 3, 32, 32)),
            ("cs", dict(measurements=100), CompressedSensing, (2, 100)),
            ("cs", dict(measurements=100, cs_operator="circulant"), PartialCirculant, (2, 100)),
            ("colorize", {}, Decolorize, (2, 1, 32, 32)),
        ],
    )
    def test_each_task(self, task, kw, cls, yshape):
        p = make_physics(task, SHAPE, **kw)
        assert isinstance(p, cls) and p.genprior_task == task
        x = _x()
        y = p(x)
        assert y.shape == yshape
        assert p.adjointness_test(u=x).item() < 1e-5
        prev = measurement_preview(y, p, SHAPE)
        assert prev.shape == (2, 3, 32, 32)
        assert prev.min() >= 0 and prev.max() <= 1

    def test_grey_images(self):
        for task, kw in [
            ("inpaint", dict(mask_ratio=0.3)),
            ("superres", dict(scale=4)),
            ("cs", dict(measurements=50)),
        ]:
            p = make_physics(task, (1, 28, 28), **kw)
            y = p(_x((1, 28, 28)))
            assert measurement_preview(y, p, (1, 28, 28)).shape == (2, 1, 28, 28)

    def test_unknown_task(self):
        with pytest.raises(UserError, match="unknown task.*inpaint"):
            make_physics("deblur", SHAPE)

    def test_bad_image_shape(self):
        with pytest.raises(UserError, match="image shape"):
            make_physics("denoise", (0, 4, 4), noise_std=0.1)

    # ---- inpaint
    def test_mask_ratio_is_fraction_missing_and_shared(self):
        p = make_physics("inpaint", SHAPE, mask_ratio=0.25, seed=3)
        mask = p.mask
        assert mask.shape[-2:] == (32, 32) and mask.numel() == 32 * 32  # one mask for all channels
        assert int((mask == 0).sum()) == round(0.25 * 32 * 32)
        x = _x()
        y = p(x)
        torch.testing.assert_close(y, x * mask.reshape(1, 1, 32, 32))

    def test_mask_seed_repeats(self):
        a = make_physics("inpaint", SHAPE, mask_ratio=0.5, seed=1).mask
        b = make_physics("inpaint", SHAPE, mask_ratio=0.5, seed=1).mask
        c = make_physics("inpaint", SHAPE, mask_ratio=0.5, seed=2).mask
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_mask_ratio_zero_observes_all(self):
        p = make_physics("inpaint", SHAPE, mask_ratio=0.0)
        assert bool((p.mask == 1).all())

    @pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan"), "half"])
    def test_bad_mask_ratio(self, ratio):
        with pytest.raises(UserError, match="mask_ratio"):
            make_physics("inpaint", SHAPE, mask_ratio=ratio)

    @pytest.mark.parametrize("mshape", [(32, 32), (1, 32, 32), (1, 1, 32, 32)])
    def test_explicit_mask(self, mshape):
        m = torch.ones(32, 32)
        m[:10] = 0
        p = make_physics("inpaint", SHAPE, mask=m.reshape(mshape))
        x = _x()
        torch.testing.assert_close(p(x), x * m)
        p2 = make_physics("inpaint", SHAPE, mask=m.bool().numpy())
        torch.testing.assert_close(p2(x), x * m)

    def test_full_mask_is_fine_empty_is_not(self):
        make_physics("inpaint", SHAPE, mask=torch.ones(32, 32))
        with pytest.raises(UserError, match="observes no pixel"):
            make_physics("inpaint", SHAPE, mask=torch.zeros(32, 32))

    @pytest.mark.parametrize("mshape", [(16, 16), (32, 31), (3, 32, 32)])
    def test_mask_wrong_size(self, mshape):
        with pytest.raises(UserError, match="mask"):
            make_physics("inpaint", SHAPE, mask=torch.ones(mshape))

    def test_mask_not_binary(self):
        with pytest.raises(UserError, match="0 and 1"):
            make_physics("inpaint", SHAPE, mask=torch.full((32, 32), 0.5))

    def test_box(self):
        p = make_physics("inpaint", SHAPE, box=(4, 8, 20, 12))
        m = p.mask.reshape(32, 32)
        assert int((m == 0).sum()) == 16 * 4
        assert bool((m[8:12, 4:20] == 0).all())  # rows y0..y1-1, columns x0..x1-1
        x = _x()
        prev = measurement_preview(p(x), p, SHAPE)
        assert bool((prev[:, :, 8:12, 4:20] == 0.5).all())
        torch.testing.assert_close(prev[:, :, :8], x[:, :, :8])

    @pytest.mark.parametrize(
        "box,msg",
        [
            ((0, 0, 33, 10), "outside"),
            ((-1, 0, 5, 5), "outside"),
            ((5, 5, 5, 10), "empty"),
            ((6, 5, 4, 10), "empty"),
            ((0, 0, 32, 32), "observes no pixel"),
            ((0, 0, 1), "invalid"),
            ((0.5, 0, 3, 3), "invalid"),
        ],
    )
    def test_bad_box(self, box, msg):
        with pytest.raises(UserError, match=msg):
            make_physics("inpaint", SHAPE, box=box)

    def test_inpaint_needs_exactly_one_spec(self):
        with pytest.raises(UserError, match="mask, a mask_ratio or a box"):
            make_physics("inpaint", SHAPE)
        with pytest.raises(UserError, match="only one"):
            make_physics("inpaint", SHAPE, mask_ratio=0.5, box=(0, 0, 4, 4))

    # ---- superres
    def test_superres_bicubic_and_preview(self):
        p = make_physics("superres", SHAPE, scale=2)
        assert p.factor == 2 and p.filter is not None
        x = _x()
        y = p(x)
        prev = measurement_preview(y, p, SHAPE)
        ref = y.clamp(0, 1).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        torch.testing.assert_close(prev, ref)
        # a constant image stays constant (normalised anti-aliasing filter)
        torch.testing.assert_close(p(torch.full((1, *SHAPE), 0.3)), torch.full((1, 3, 16, 16), 0.3))

    @pytest.mark.parametrize(
        "scale,msg",
        [
            (3, "does not divide"),
            (1, "out of range"),
            (17, "out of range"),
            (64, "out of range"),
            (2.5, "whole number"),
        ],
    )
    def test_bad_scale(self, scale, msg):
        with pytest.raises(UserError, match=msg):
            make_physics("superres", SHAPE, scale=scale)

    def test_scale_must_divide_both_sides(self):
        with pytest.raises(UserError, match="does not divide"):
            make_physics("superres", (1, 32, 24), scale=16)
        assert make_physics("superres", (1, 48, 32), scale=16)(torch.rand(1, 1, 48, 32)).shape == (1, 1, 3, 2)

    # ---- denoise and noise
    def test_denoise_needs_noise(self):
        with pytest.raises(UserError, match="noise_std > 0"):
            make_physics("denoise", SHAPE)

    @pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "loud"])
    def test_bad_noise(self, sigma):
        with pytest.raises(UserError, match="noise_std"):
            make_physics("cs", SHAPE, measurements=10, noise_std=sigma)

    def test_noise_level_and_seed(self):
        x = _x(b=4)
        p = make_physics("denoise", SHAPE, noise_std=0.2, seed=5)
        assert isinstance(p.noise_model, GaussianNoise)
        y = p(x)
        assert abs((y - x).std().item() - 0.2) < 0.01
        y2 = make_physics("denoise", SHAPE, noise_std=0.2, seed=5)(x)
        y3 = make_physics("denoise", SHAPE, noise_std=0.2, seed=6)(x)
        torch.testing.assert_close(y, y2)
        assert not torch.allclose(y, y3)
        torch.testing.assert_close(measurement_preview(y, p, SHAPE), y.clamp(0, 1))

    def test_noise_on_any_task(self):
        x = _x()
        for task, kw in [
            ("inpaint", dict(mask_ratio=0.5)),
            ("superres", {}),
            ("colorize", {}),
            ("cs", dict(measurements=64, cs_operator="circulant")),
        ]:
            p = make_physics(task, SHAPE, noise_std=0.05, **kw)
            assert not torch.allclose(p(x), p.A(x))
            q = make_physics(task, SHAPE, **kw)
            torch.testing.assert_close(q(x), q.A(x))

    # ---- cs
    @pytest.mark.parametrize("m", [0, -3, 3 * 32 * 32 + 1, 1.5])
    @pytest.mark.parametrize("op", ["gaussian", "circulant"])
    def test_bad_measurements(self, m, op):
        with pytest.raises(UserError, match="measurements"):
            make_physics("cs", SHAPE, measurements=m, cs_operator=op)

    def test_cs_needs_measurements_and_known_operator(self):
        with pytest.raises(UserError, match="measurements"):
            make_physics("cs", SHAPE)
        with pytest.raises(UserError, match="cs_operator"):
            make_physics("cs", SHAPE, measurements=10, cs_operator="fourier")

    def test_cs_full_and_single_measurement(self):
        n = 3 * 32 * 32
        for op in ("gaussian", "circulant"):
            assert make_physics("cs", SHAPE, measurements=1, cs_operator=op)(_x()).shape == (2, 1)
        assert make_physics("cs", SHAPE, measurements=n, cs_operator="circulant")(_x()).shape == (2, n)

    def test_dense_cs_too_large(self):
        with pytest.raises(UserError, match="circulant"):
            make_physics("cs", (3, 256, 256), measurements=10_000)
        assert make_physics("cs", (3, 256, 256), measurements=10_000, cs_operator="circulant").m == 10_000

    @pytest.mark.parametrize("op", ["gaussian", "circulant"])
    def test_cs_seed_repeats(self, op):
        x = _x()
        a = make_physics("cs", SHAPE, measurements=64, cs_operator=op, seed=9)
        b = make_physics("cs", SHAPE, measurements=64, cs_operator=op, seed=9)
        c = make_physics("cs", SHAPE, measurements=64, cs_operator=op, seed=10)
        torch.testing.assert_close(a.A(x), b.A(x))
        assert not torch.allclose(a.A(x), c.A(x))

    # ---- colorize
    def test_colorize_needs_colour(self):
        with pytest.raises(UserError, match="colour"):
            make_physics("colorize", (1, 32, 32))

    def test_colorize_preview(self):
        p = make_physics("colorize", SHAPE)
        x = _x()
        y = p(x)
        assert y.shape == (2, 1, 32, 32)
        prev = measurement_preview(y, p, SHAPE)
        torch.testing.assert_close(prev, y.clamp(0, 1).expand(2, 3, 32, 32))
        grey = torch.full((1, *SHAPE), 0.4)
        torch.testing.assert_close(p(grey), torch.full((1, 1, 32, 32), 0.4), rtol=1e-3, atol=1e-3)

    def test_cs_preview_is_normalised_adjoint(self):
        p = make_physics("cs", SHAPE, measurements=200, cs_operator="circulant")
        y = p(_x())
        prev = measurement_preview(y, p, SHAPE)
        at = p.A_adjoint(y)
        assert prev.amin(dim=(1, 2, 3)).allclose(torch.zeros(2)) and prev.amax(dim=(1, 2, 3)).allclose(
            torch.ones(2)
        )
        # an affine image of A^T y: correlation 1
        c = torch.corrcoef(torch.stack([prev[0].flatten(), at[0].flatten()]))[0, 1]
        assert c.item() > 0.9999

    @needs_cuda
    def test_cuda_physics(self):
        x = _x().cuda()
        for task, kw in [
            ("inpaint", dict(mask_ratio=0.5)),
            ("superres", {}),
            ("denoise", dict(noise_std=0.1)),
            ("cs", dict(measurements=50)),
            ("cs", dict(measurements=50, cs_operator="circulant")),
            ("colorize", dict(noise_std=0.1)),
        ]:
            p = make_physics(task, SHAPE, device="cuda", **kw)
            y = p(x)
            assert y.is_cuda
            assert measurement_preview(y, p, SHAPE).is_cuda
        # a seed draws the same operator on every device
        cpu = make_physics("cs", SHAPE, measurements=50, seed=2)
        gpu = make_physics("cs", SHAPE, measurements=50, seed=2, device="cuda")
        torch.testing.assert_close(gpu.A(x).cpu(), cpu.A(x.cpu()), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- load_mask


class TestLoadMask:
    def test_white_is_observed(self, tmp_path):
        arr = np.full((32, 32), 255, np.uint8)
        arr[5:10, 2:30] = 0
        arr[0, 0] = 100  # dark grey -> missing
        Image.fromarray(arr).save(tmp_path / "m.png")
        m = load_mask(tmp_path / "m.png", SHAPE)
        assert m.shape == (1, 32, 32) and m.dtype == torch.float32
        assert int((m == 0).sum()) == 5 * 28 + 1
        p = make_physics("inpaint", SHAPE, mask=str(tmp_path / "m.png"))
        torch.testing.assert_close(p.mask.reshape(1, 32, 32), m)

    def test_rgb_mask(self, tmp_path):
        arr = np.full((32, 32, 3), 255, np.uint8)
        arr[:16] = 0
        Image.fromarray(arr).save(tmp_path / "m.png")
        assert int(load_mask(tmp_path / "m.png", (32, 32)).sum()) == 16 * 32

    def test_wrong_size(self, tmp_path):
        Image.fromarray(np.full((16, 32), 255, np.uint8)).save(tmp_path / "m.png")
        with pytest.raises(UserError, match="32x16 but the image is 32x32"):
            load_mask(tmp_path / "m.png", SHAPE)

    def test_missing_and_unreadable(self, tmp_path):
        with pytest.raises(UserError, match="does not exist"):
            load_mask(tmp_path / "nope.png", SHAPE)
        (tmp_path / "bad.png").write_bytes(b"not a png")
        with pytest.raises(UserError, match="not a readable image"):
            load_mask(tmp_path / "bad.png", SHAPE)

    def test_all_black_mask_rejected_by_make_physics(self, tmp_path):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "m.png")
        with pytest.raises(UserError, match="observes no pixel"):
            make_physics("inpaint", SHAPE, mask=tmp_path / "m.png")


@pytest.mark.parametrize(
    "task, kw",
    [
        ("superres", dict(scale=4)),
        ("superres", dict(scale=8)),
        ("cs", dict(measurements=50)),
        ("inpaint", dict(mask_ratio=0.8)),
    ],
)
def test_projection_onto_measurements_is_the_dense_pseudo_inverse(task, kw):
    """``project_onto_measurements`` gives ``x + A^+ (y - A x)`` of the dense ``A`` (built column by
    column) and its gradient is ``(I - A^+ A)`` applied to the upstream one; PSLD's adjoint formula
    equals it at inpainting (``A A^T = I`` there) and misses the set elsewhere (``A A^T`` is far
    from ``I``)."""
    from genprior.physics import adjoint_glue_point, project_onto_measurements

    g = torch.Generator().manual_seed(123)  # not the operator's seed: draws outside A's row space
    physics = make_physics(task, (1, 16, 16), seed=0, **kw)
    n = 256
    dense = physics.A(torch.eye(n).view(n, 1, 16, 16)).flatten(1).T  # (m, n)
    pinv = torch.linalg.pinv(dense.double())
    x = torch.rand((3, 1, 16, 16), generator=g).requires_grad_(True)
    y = physics.A(torch.rand((3, 1, 16, 16), generator=g))
    w = torch.randn((3, 1, 16, 16), generator=g)
    p = project_onto_measurements(physics, x, y)
    (p * w).sum().backward()
    xd, yd, wd = x.detach().flatten(1).double(), y.flatten(1).double(), w.flatten(1).double()
    want = xd + (yd - xd @ dense.T.double()) @ pinv.T
    assert torch.allclose(p.detach().flatten(1).double(), want, atol=1e-4)
    null = torch.eye(n, dtype=torch.float64) - pinv @ dense.double()
    assert torch.allclose(x.grad.flatten(1).double(), wd @ null, atol=1e-4)
    adj = adjoint_glue_point(physics, x.detach(), y)
    miss = (physics.A(adj) - y).norm() / (physics.A(x.detach()) - y).norm()  # of the start's miss
    if task == "inpaint":
        assert torch.allclose(adj, p.detach(), atol=1e-6)
    else:
        assert miss > 0.5, miss


@pytest.mark.parametrize("task, kw", [("superres", dict(scale=2)), ("cs", dict(measurements=30))])
def test_held_out_physics_is_the_smaller_linear_problem(task, kw):
    """``HeldOut(physics, keep)``: ``A`` is 0 at the held-out entries and ``physics.A`` elsewhere,
    for a batch of any size (a batch-1 ``keep``) or ``K`` copies of the images (a per-image one);
    its adjoint is the adjoint of that; deepinv's ``prox_l2`` on it is the smaller problem's."""
    from genprior.physics.heldout import HeldOut

    physics = make_physics(task, (1, 8, 8), seed=0, **kw)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=g)
    ax = physics.A(x)
    keep = (torch.rand(ax[:1].shape, generator=g) < 0.7).float()
    h = HeldOut(physics, keep)
    torch.testing.assert_close(h.A(x), ax * keep)
    v = torch.randn(ax.shape, generator=g)
    torch.testing.assert_close((h.A(x) * v).sum(), (x * h.A_adjoint(v)).sum())
    per_image = (torch.rand(ax.shape, generator=g) < 0.7).float()
    twice = HeldOut(physics, per_image).A(torch.cat([x, x]))
    torch.testing.assert_close(twice, torch.cat([ax * per_image] * 2))
    with pytest.raises(ValueError, match="not a multiple"):
        HeldOut(physics, per_image).A(x[:2])
    # prox: argmin gamma/2 ||keep (A z - y)||^2 + 1/2 ||z - x||^2, i.e. (I + gamma A^T K A) z = x + gamma A^T K y
    y = ax + 0.1
    z = h.prox_l2(x, y, gamma=2.0, max_iter=500, tol=1e-10)
    torch.testing.assert_close(z + 2.0 * h.A_adjoint(h.A(z)), x + 2.0 * h.A_adjoint(y), atol=1e-4, rtol=0)
    assert h.noise_model is physics.noise_model
