"""Exact l1-ball projection: against an independent bisection solver, and by optimality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from genprior.errors import UserError
from genprior.solvers.projections import (
    project_l1_ball,
    project_l1_ball_around,
    project_l1_ball_sort,
    project_state,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_projection(v: np.ndarray, r: float) -> np.ndarray:
    """Independent solver: bisection on the soft-threshold level theta, in float64.

    The projection is sign(v) * max(|v| - theta, 0) with theta >= 0 the smallest level giving
    l1 norm <= r; f(theta) = sum(max(|v| - theta, 0)) is continuous and decreasing.
    """
    v = np.asarray(v, dtype=np.float64)
    a = np.abs(v)
    if math.isinf(r) or a.sum() <= r:
        return v.copy()
    if r == 0:
        return np.zeros_like(v)
    lo, hi = 0.0, float(a.max())
    for _ in range(200):  # the bracket shrinks to adjacent float64 numbers (far below 1e-12)
        mid = 0.5 * (lo + hi)
        if np.maximum(a - mid, 0).sum() > r:
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return np.sign(v) * np.maximum(a - theta, 0)


# values: mixes of ordinary floats, exact ties, zeros and huge magnitudes
_values = st.one_of(
    st.floats(-10, 10, allow_nan=False, width=64),
    st.sampled_from([0.0, 1.0, -1.0, 2.0, -2.0, 0.5]),
    st.floats(-1e12, 1e12, allow_nan=False),
)


@st.composite
def batched_cases(draw, max_b=4, max_n=40):
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    x = draw(arrays(np.float64, (b, n), elements=_values))
    radii = draw(
        st.lists(
            st.one_of(
                st.floats(0, 50, allow_nan=False),
                st.sampled_from([0.0, 1.0, math.inf]),
                st.floats(1e-6, 1e13, allow_nan=False),
            ),
            min_size=b,
            max_size=b,
        )
    )
    return x, np.array(radii, dtype=np.float64)


def _scale(x: np.ndarray) -> float:
    return max(1.0, float(np.abs(x).max(initial=0.0)))


@SETTINGS
@given(batched_cases())
def test_matches_bisection_reference_float64(case):
    x, r = case
    p = project_l1_ball(torch.from_numpy(x), torch.from_numpy(r)).numpy()
    for i in range(x.shape[0]):
        ref = reference_projection(x[i], r[i])
        tol = 1e-9 * _scale(x[i]) * max(1, x.shape[1])
        np.testing.assert_allclose(p[i], ref, rtol=0, atol=tol)


@SETTINGS
@given(batched_cases(max_n=30))
def test_matches_reference_float32(case):
    x, r = case
    xt = torch.from_numpy(x).float()
    p = project_l1_ball(xt, torch.from_numpy(r).float())
    assert p.dtype == torch.float32
    x32 = xt.double().numpy()
    for i in range(x.shape[0]):
        ref = reference_projection(x32[i], float(np.float32(r[i])))
        tol = 1e-5 * _scale(x32[i]) * max(1, x.shape[1])
        np.testing.assert_allclose(p[i].double().numpy(), ref, rtol=0, atol=tol)


@SETTINGS
@given(batched_cases(), st.integers(0, 2**32 - 1))
def test_optimality_conditions(case, seed):
    x, r = case
    xt = torch.from_numpy(x)
    p = project_l1_ball(xt, torch.from_numpy(r))
    rng = np.random.default_rng(seed)
    for i in range(x.shape[0]):
        xi, pi, ri = x[i], p[i].numpy(), r[i]
        s = _scale(xi)
        tol = 1e-9 * s * max(1, xi.size)
        l1 = np.abs(pi).sum()
        assert l1 <= ri + tol  # feasible
        if np.abs(xi).sum() > ri:
            assert abs(l1 - ri) <= tol  # on the boundary
        else:
            assert np.array_equal(pi, xi)  # inside: untouched
        assert np.all(pi * xi >= 0)  # sign consistency
        assert np.all(np.abs(pi) <= np.abs(xi) + tol)  # shrinks every entry
        # argmin: no random feasible point is closer to x
        d_p = np.linalg.norm(xi - pi)
        for _ in range(20):
            z = rng.standard_normal(xi.size) * s
            z1 = np.abs(z).sum()
            if math.isfinite(ri) and z1 > ri:
                z = z * (ri / z1) * rng.uniform(0, 1)
            assert d_p <= np.linalg.norm(xi - z) + tol
        # local perturbations of p inside the ball don't get closer either
        for _ in range(10):
            z = pi + rng.standard_normal(xi.size) * 1e-3 * s
            z1 = np.abs(z).sum()
            if math.isfinite(ri) and z1 > ri:
                z = z * (ri / z1) if z1 > 0 else z
            assert d_p <= np.linalg.norm(xi - z) + tol


@SETTINGS
@given(batched_cases(max_b=5, max_n=20))
def test_batch_is_elementwise(case):
    x, r = case
    xt = torch.from_numpy(x)
    p = project_l1_ball(xt, torch.from_numpy(r))
    for i in range(x.shape[0]):
        torch.testing.assert_close(p[i : i + 1], project_l1_ball(xt[i : i + 1], float(r[i])), rtol=0, atol=0)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))
@settings(max_examples=30, deadline=None)
def test_flattens_non_batch_dims(b, h, w):
    x = torch.randn(b, 2, h, w, dtype=torch.float64)
    p = project_l1_ball(x, 0.7)
    assert p.shape == x.shape
    torch.testing.assert_close(p.reshape(b, -1), project_l1_ball(x.reshape(b, -1), 0.7))


@SETTINGS
@given(batched_cases())
def test_sort_definition_matches_bisection_reference(case):
    x, r = case
    p = project_l1_ball_sort(torch.from_numpy(x), torch.from_numpy(r)).numpy()
    for i in range(x.shape[0]):
        tol = 1e-9 * _scale(x[i]) * max(1, x.shape[1])
        np.testing.assert_allclose(p[i], reference_projection(x[i], r[i]), rtol=0, atol=tol)


@SETTINGS
@given(batched_cases())
def test_fast_path_matches_the_sort_definition(case):
    x, r = case
    xt, rt = torch.from_numpy(x), torch.from_numpy(r)
    fast, ref = project_l1_ball(xt, rt), project_l1_ball_sort(xt, rt)
    for i in range(x.shape[0]):
        tol = 1e-12 * _scale(x[i]) * max(1, x.shape[1])
        torch.testing.assert_close(fast[i], ref[i], rtol=0, atol=tol)
        if math.isinf(r[i]) or np.abs(x[i]).sum() < r[i] * (1 - 1e-9):  # inside: both the identity
            assert torch.equal(fast[i], xt[i]) and torch.equal(ref[i], xt[i])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_the_sort_definition_on_large_rows(dtype):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 20_000, generator=g, dtype=dtype)
    r = _mixed_radii(x)
    fast, ref = project_l1_ball(x, r), project_l1_ball_sort(x, r)
    assert fast.dtype == ref.dtype == dtype
    # float64: the two levels differ by round-off in their sums; float32: at most one rounding step
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(fast, ref, rtol=0, atol=tol)
    assert torch.equal(ref[5], torch.zeros_like(ref[5]))  # radius 0
    assert torch.equal(ref[4], x[4])  # inside its ball
    assert project_l1_ball_sort(x, math.inf).equal(x)


def test_sort_definition_simple_known_values():
    x = torch.tensor([[3.0, -1.0, 0.5], [0.2, 0.2, 0.2], [1.0, -1.0, 0.0]])
    p = project_l1_ball_sort(x, torch.tensor([2.0, 2.0, 1.0]))
    torch.testing.assert_close(p, torch.tensor([[2.0, 0.0, 0.0], [0.2, 0.2, 0.2], [0.5, -0.5, 0.0]]))
    with pytest.raises(UserError, match="radius"):
        project_l1_ball_sort(x, -1.0)


def test_simple_known_values():
    x = torch.tensor([[3.0, -1.0, 0.5], [0.2, 0.2, 0.2]])
    p = project_l1_ball(x, 2.0)
    torch.testing.assert_close(p, torch.tensor([[2.0, 0.0, 0.0], [0.2, 0.2, 0.2]]))
    # ties: equal magnitudes shrink equally
    p = project_l1_ball(torch.tensor([[1.0, -1.0, 1.0, -1.0]]), 2.0)
    torch.testing.assert_close(p, torch.tensor([[0.5, -0.5, 0.5, -0.5]]))
    # a single element
    torch.testing.assert_close(project_l1_ball(torch.tensor([[-5.0]]), 2.0), torch.tensor([[-2.0]]))


def test_inf_radius_and_inside_are_exact_identity():
    x = torch.randn(3, 4, 5)
    assert torch.equal(project_l1_ball(x, math.inf), x)
    assert torch.equal(project_l1_ball(x, float(x.abs().sum((1, 2)).max()) + 1), x)
    out = project_l1_ball(x, torch.tensor([math.inf, 0.1, math.inf]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert abs(out[1].abs().sum().item() - 0.1) < 1e-6
    assert project_l1_ball(x, math.inf) is not x  # a new tensor


def test_radius_zero_and_zero_input():
    x = torch.randn(2, 10)
    assert torch.equal(project_l1_ball(x, 0.0), torch.zeros_like(x))
    z = torch.zeros(3, 7)
    assert torch.equal(project_l1_ball(z, 0.0), z)
    assert torch.equal(project_l1_ball(z, 1.0), z)
    # all-equal entries with radius 0 (a round-off trap for the threshold)
    assert torch.equal(project_l1_ball(torch.full((1, 1000), 0.1), 0.0), torch.zeros(1, 1000))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_dtype_and_device(dtype):
    x = torch.randn(2, 3, 4, dtype=dtype)
    p = project_l1_ball(x, torch.tensor([1.0, 2.0]))
    assert p.dtype == dtype and p.device == x.device and p.shape == x.shape


def test_bad_radius():
    x = torch.randn(2, 3)
    with pytest.raises(UserError, match="radius"):
        project_l1_ball(x, -1.0)
    with pytest.raises(UserError, match="radius"):
        project_l1_ball(x, float("nan"))
    with pytest.raises(UserError, match="radius"):
        project_l1_ball(x, torch.ones(3))


def test_large_float32_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1_000_000, generator=g)
    r = torch.tensor([1000.0, 50_000.0])
    p32 = project_l1_ball(x, r)
    p64 = project_l1_ball(x.double(), r.double())
    assert torch.allclose(p32.double().abs().sum(1), r.double(), rtol=1e-5)
    assert (p32.double() - p64).abs().max().item() < 1e-5


def test_no_python_loop_over_batch():
    # 256 elements of 4096 entries project in one vectorised pass (a loop would be far slower)
    x = torch.randn(256, 4096)
    r = torch.linspace(0, 4000, 256)  # l1 norms are about 3270: some elements stay inside
    p = project_l1_ball(x, r)
    expected = torch.minimum(r, x.abs().sum(1))
    assert torch.allclose(p.abs().sum(1), expected, rtol=1e-4, atol=1e-3)
    inside = x.abs().sum(1) <= r
    assert inside.any() and torch.equal(p[inside], x[inside])


@SETTINGS
@given(batched_cases(max_n=20), st.floats(-100, 100))
def test_around_center(case, shift):
    x, r = case
    xt = torch.from_numpy(x)
    c = torch.full((1, x.shape[1]), shift, dtype=torch.float64)
    p = project_l1_ball_around(xt, c, torch.from_numpy(r))
    expected = c + project_l1_ball(xt - c, torch.from_numpy(r))
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-9 * (_scale(x) + abs(shift)))
    inside = (xt - c).abs().sum(1) <= torch.from_numpy(r)
    assert torch.equal(p[inside], xt[inside])


def test_around_center_simple():
    x = torch.tensor([[5.0, 5.0]])
    c = torch.tensor([[4.0, 1.0]])
    torch.testing.assert_close(project_l1_ball_around(x, c, 2.0), torch.tensor([[4.0, 3.0]]))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    x = torch.randn(8, 3, 16, 16, dtype=dtype)
    r = torch.rand(8, dtype=dtype) * 50
    r[0], r[1] = 0.0, math.inf
    pc = project_l1_ball(x, r)
    pg = project_l1_ball(x.cuda(), r.cuda())
    assert pg.is_cuda and pg.dtype == dtype
    torch.testing.assert_close(pg.cpu(), pc, rtol=1e-5, atol=1e-5)
    pg2 = project_l1_ball_around(x.cuda(), x[:1].cuda() * 0.5, 3.0)
    torch.testing.assert_close(pg2.cpu(), project_l1_ball_around(x, x[:1] * 0.5, 3.0), rtol=1e-5, atol=1e-5)


# ---- the fast float32 path (ILO projects its state with it on every step) ----------------------
def _mixed_radii(x: torch.Tensor) -> torch.Tensor:
    """Per-row radii: most rows outside their ball at various depths, one inside, one of radius 0."""
    b = x.shape[0]
    l1 = x.reshape(b, -1).double().abs().sum(1)
    frac = torch.tensor([0.4, 0.05, 0.9, 0.999, 1.5, 0.0, 0.2, 0.6], dtype=torch.float64)[:b]
    return (l1 * frac).float().double()  # exactly representable in float32 too


@pytest.mark.parametrize("shape", [(8, 16384), (3, 256, 8, 8), (5, 7), (2, 1_000)])
def test_float32_is_the_float64_projection_rounded(shape):
    # same threshold (exact float64 support sums) and one rounding of |v| - theta: bit for bit
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g) * torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g).add(
        0.1
    )
    r = _mixed_radii(x)
    p32 = project_l1_ball(x, r)
    p64 = project_l1_ball(x.double(), r)
    assert p32.dtype == torch.float32
    assert torch.equal(p32, p64.float())


def test_float32_rows_do_not_depend_on_the_batch():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 4096, generator=g)
    r = _mixed_radii(x)
    p = project_l1_ball(x, r)
    for i in range(x.shape[0]):
        assert torch.equal(p[i : i + 1], project_l1_ball(x[i : i + 1], r[i : i + 1]))


def test_float32_ties_and_repeated_values():
    # many equal magnitudes around the threshold: the support must still be exact
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-4, 5, (6, 3000), generator=g).float() * 0.25
    for r in (1.0, 37.5, 100.0, 400.0, 1000.0):
        p = project_l1_ball(x, r).double().numpy()
        for i in range(x.shape[0]):
            ref = reference_projection(x[i].double().numpy(), r)
            np.testing.assert_allclose(p[i], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_passes_alone_give_the_same_threshold(dtype):
    # with a single approximate pass, the exact Michelot passes find the level on their own
    from genprior.solvers import projections as P

    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 5000, generator=g, dtype=dtype)
    r = _mixed_radii(x)
    mag = x.abs()
    l1 = mag.sum(1, dtype=torch.float64)
    outside = l1 > r
    thetas = [P._michelot_theta(mag, l1, r, outside, torch.empty_like(mag), max_approx=k) for k in (1, 2, 20)]
    assert torch.equal(thetas[0], thetas[2]) and torch.equal(thetas[1], thetas[2])


def test_half_precision_goes_through_float32():
    x = torch.randn(3, 50).to(torch.bfloat16)
    p = project_l1_ball(x, 2.0)
    assert p.dtype == torch.bfloat16
    torch.testing.assert_close(p.float().abs().sum(1), torch.full((3,), 2.0), rtol=2e-2, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_state_matches_the_projection_of_the_concatenation(dtype):
    g = torch.Generator().manual_seed(5)
    center = (
        torch.randn(4, 8, 6, 6, generator=g, dtype=dtype),
        torch.randn(4, 1, 6, 6, generator=g, dtype=dtype),
    )
    state = tuple(c + torch.randn(c.shape, generator=g, dtype=dtype) for c in center)
    dev = torch.cat([(s - c).flatten(1) for s, c in zip(state, center)], 1)
    l1 = dev.double().abs().sum(1)
    radius = l1 * torch.tensor([0.3, 1.2, 0.0, 0.9], dtype=torch.float64)  # sample 1 is inside
    before = tuple(s.clone() for s in state)
    project_state(state, center, radius)
    p = project_l1_ball(dev, radius)
    i = 0
    for s, c, s0 in zip(state, center, before):
        n = s[0].numel()
        expected = c + p[:, i : i + n].view_as(s)
        for b in (0, 2, 3):
            assert torch.equal(s[b], expected[b])
        assert torch.equal(s[1], s0[1])  # inside: untouched, bit for bit
        i += n
    after = torch.cat([(s - c).flatten(1) for s, c in zip(state, center)], 1).double().abs().sum(1)
    assert torch.allclose(after[[0, 3]], radius[[0, 3]], rtol=1e-5)
    assert torch.equal(state[0][2], center[0][2]) and torch.equal(state[1][2], center[1][2])


def test_project_state_inside_writes_nothing():
    center = (torch.randn(3, 5, 4),)
    state = (center[0] + 1e-3 * torch.randn(3, 5, 4),)
    before = state[0].clone()
    project_state(state, center, 10.0)
    assert torch.equal(state[0], before)  # c + (s - c) would round: nothing is written back
