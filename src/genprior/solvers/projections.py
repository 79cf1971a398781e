"""Exact Euclidean projection onto l1 balls, batched.

For ``v`` with ``||v||_1 > r`` the projection onto ``{p : ||p||_1 <= r}`` is the soft threshold
``p = sign(v) * max(|v| - theta, 0)`` whose level ``theta > 0`` makes ``||p||_1 = r``. With
``u`` the sorted magnitudes ``u_1 >= u_2 >= ... >= u_n`` and ``S_j = u_1 + ... + u_j``,
``theta = (S_rho - r) / rho`` where ``rho = max{j : u_j > (S_j - r) / j}`` (Duchi, Shalev-Shwartz,
Singer & Chandra 2008; Condat 2016).

The module has two parts:

* **The definition**: :func:`project_l1_ball_sort` computes exactly that formula, in float64
  (:func:`sort_threshold`). It is the readable reference, O(n log n), and allocates freely.
* **The fast path**: :func:`project_l1_ball`, :func:`project_l1_ball_around` and
  :func:`project_state` (ILO's projection of its state, on every step) find ``theta`` with
  Michelot's fixed point (a handful of O(n) passes: compare, count, sum), falling back to the sort
  for any row that has not settled after 60 passes. Every batch element is handled at once, no
  Python loop over the batch. The data stay in their own dtype (float32 for float16/bfloat16),
  never copied whole to float64; the sums of the final support and ``theta`` are float64, and the
  comparisons with ``theta`` are exact, so the result is accurate for float32 inputs with millions
  of entries. The passes are plain vectorised arithmetic in two reused buffers (see ``_shrink``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "project_l1_ball",
    "project_l1_ball_around",
    "project_l1_ball_sort",
    "project_state",
    "sort_threshold",
]


# ==============================================================================================
# The definition: the sort-based projection
# ==============================================================================================


def project_l1_ball_sort(x: Tensor, radius: float | Tensor) -> Tensor:
    """Project each batch element of ``x`` onto the l1 ball ``{v : ||v||_1 <= radius}`` by the
    sort-based formula of the module docstring, in float64: the reference definition.

    Same arguments and result as :func:`project_l1_ball` (which agrees with it up to round-off in
    the sums that give ``theta``): ``x`` is ``(B, ...)``, each ``x[b]`` flattened; ``radius`` a
    number or a ``(B,)`` tensor of radii ``>= 0`` (``inf``: unchanged, ``0``: zeros).
    """
    if x.dim() == 0:
        raise ValueError("project_l1_ball_sort needs a batched tensor (B, ...)")
    b = x.shape[0]
    r = _radius_tensor(radius, b, x.device)
    if b == 0 or x[0].numel() == 0:
        return x.clone()
    v = x.reshape(b, -1).to(torch.float64)
    theta = sort_threshold(v.abs(), r)
    p = (v.abs() - theta.unsqueeze(1)).clamp_min(0.0).copysign(v)
    return p.to(x.dtype).reshape(x.shape)


def sort_threshold(mag: Tensor, r: Tensor) -> Tensor:
    """The soft-threshold level of each row of ``mag = |v|`` (``(B, n)`` float64) for the (B,)
    float64 radii ``r``, by sorting (Duchi et al. 2008): ``theta = (S_rho - r) / rho``, clamped at 0.

    The level is 0 for a row inside its ball (and for ``r = inf``), ``max |v|`` for ``r = 0``.
    O(n log n); the fast path uses it as its last resort.
    """
    b, n = mag.shape
    u = torch.sort(mag, dim=1, descending=True).values
    csum = torch.cumsum(u, dim=1)
    j = torch.arange(1, n + 1, device=mag.device, dtype=torch.float64)
    cond = u * j > csum - r.unsqueeze(1)
    # cond holds on a prefix 1..rho; take the largest true index, robust to round-off.
    # For r = 0 nothing holds and rho falls to 1, theta = u_1: the result is all zeros.
    rho = torch.where(cond, j.to(torch.long).expand(b, n), torch.ones_like(j, dtype=torch.long)).amax(dim=1)
    s_rho = csum.gather(1, (rho - 1).unsqueeze(1)).squeeze(1)
    return ((s_rho - r) / rho.to(torch.float64)).clamp_min(0.0)


def _radius_tensor(radius: float | Tensor, batch: int, device: torch.device) -> Tensor:
    r = torch.as_tensor(radius, dtype=torch.float64).to(device)
    if r.dim() == 0:
        r = r.expand(batch)
    elif r.dim() == 1 and r.shape[0] in (1, batch):
        r = r.expand(batch)
    else:
        raise UserError(
            f"l1 radius of shape {tuple(r.shape)} does not match a batch of {batch}: give a number or a ({batch},) tensor"
        )
    if bool(torch.isnan(r).any()) or bool((r < 0).any()):
        raise UserError("l1 radius is negative or NaN: give a radius >= 0 (inf disables the projection)")
    return r


# ==============================================================================================
# The fast path: Michelot passes in two reused buffers, the exact level from the final support
# ==============================================================================================


def project_l1_ball(x: Tensor, radius: float | Tensor) -> Tensor:
    """Project each batch element of ``x`` onto the l1 ball ``{v : ||v||_1 <= radius}``.

    Args:
        x: ``(B, ...)`` tensor; each ``x[b]`` is flattened over all its dimensions.
        radius: a number, or a ``(B,)`` tensor of per-element radii, each ``>= 0``;
            ``inf`` leaves the element unchanged, ``0`` maps it to zeros.

    Returns a new tensor of ``x``'s shape, dtype and device: elements already inside their ball
    are returned exactly as they are, the others land on the sphere ``||p||_1 = radius`` (up to
    round-off).
    """
    return _project(x, radius)[0]


def project_l1_ball_around(x: Tensor, center: Tensor, radius: float | Tensor) -> Tensor:
    """Project onto the l1 ball of ``radius`` centred at ``center``: ``center + P(x - center)``.

    ``center`` must broadcast to ``x``'s shape (e.g. one ``(1, ...)`` centre for the whole batch).
    Elements already inside the ball are returned exactly as they are.
    """
    center = center.to(device=x.device, dtype=x.dtype)
    d = x - center
    p, outside = _project(d, radius)
    out = center + p
    return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), out, x)


def project_state(state: Sequence[Tensor], center: Sequence[Tensor], radius: Tensor | float) -> None:
    """In place: project ``state - center`` (all tensors of the state, flattened together per
    sample) onto the l1 ball of the given radius (a number or one per sample).

    The radius is not checked (it must be >= 0, or inf): ILO builds a valid one per round and
    projects on every step.

    Runs after every step of an ILO round, so it allocates and writes as little as it can: the
    deviations of all the tensors go straight into one ``(B, n)`` buffer (no concatenation of
    temporaries), which becomes their magnitudes in place; the signs are recomputed at the end
    into the one other buffer the projection needs, rather than kept in a third (on CPU, fresh
    large buffers cost page faults). While every sample is inside its ball nothing is written;
    otherwise ``center + projection`` goes straight into the state, and the samples inside their
    ball keep their state bit for bit.
    """
    with torch.no_grad():
        b = state[0].shape[0]
        sizes = [s[0].numel() for s in state]
        dtype = state[0].dtype
        if dtype in (torch.float32, torch.float64) and b > 0 and min(sizes) > 0:

            def deviation(out: Tensor) -> Tensor:  # state - center, flattened per sample, into out
                i = 0
                for s, c, n in zip(state, center, sizes):
                    torch.sub(s, c, out=out[:, i : i + n].view(s.shape))
                    i += n
                return out

            # the two buffers of the projection, in one allocation (the allocator keeps it better)
            mag, work = torch.empty(2, b, sum(sizes), dtype=dtype, device=state[0].device)
            r = torch.as_tensor(radius, dtype=torch.float64, device=mag.device).expand(b)
            shrunk = _shrink(deviation(mag).abs_(), r, work)
            if shrunk is None:  # every sample inside its ball
                return
            p, spare, outside = shrunk
            p.copysign_(deviation(spare))
        else:  # other dtypes, empty states: the general path
            dev = torch.cat([(s - c).reshape(b, -1) for s, c in zip(state, center)], dim=1)
            p, outside = _project(dev, radius, validate=False, clone=False)
            if p is dev:
                return
        everyone = bool(outside.all())
        i = 0
        for s, c, n in zip(state, center, sizes):
            pv = p[:, i : i + n].view(s.shape)
            if everyone:
                torch.add(c, pv, out=s)
            else:  # a sample inside its ball keeps its state exactly (c + (s - c) may round)
                s.copy_(torch.where(outside.view(-1, *([1] * (s.dim() - 1))), pv.add_(c), s))
            i += n


def _project(
    x: Tensor, radius: float | Tensor, validate: bool = True, clone: bool = True
) -> tuple[Tensor, Tensor]:
    """The projection and the (B,) mask of the elements that were outside their ball.

    ``validate=False`` skips the radius checks (and their host synchronisations) for callers that
    build a valid per-sample radius once and project on every optimisation step. ``clone=False``
    returns ``x`` itself (not a copy) when every element is inside its ball, so that such a caller
    can tell with ``out is x`` that there is nothing to write back.
    """
    if x.dim() == 0:
        raise ValueError("project_l1_ball needs a batched tensor (B, ...)")
    b = x.shape[0]
    r = _radius_tensor(radius, b, x.device) if validate else _radius_unchecked(radius, b, x.device)
    none_outside = torch.zeros(b, dtype=torch.bool, device=x.device)
    if b == 0 or x[0].numel() == 0:
        return (x.clone() if clone else x), none_outside
    flat = x.reshape(b, -1)
    if flat.dtype not in (torch.float32, torch.float64):  # half precision: work in float32
        flat = flat.float()
    shrunk = _shrink(flat.abs(), r)
    if shrunk is None:
        return (x.clone() if clone else x), none_outside
    p, _, outside = shrunk
    return p.copysign_(flat).to(x.dtype).reshape(x.shape), outside


def _radius_unchecked(radius: float | Tensor, batch: int, device: torch.device) -> Tensor:
    return torch.as_tensor(radius, dtype=torch.float64, device=device).expand(batch)


def _shrink(mag: Tensor, r: Tensor, work: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor] | None:
    """The soft threshold ``max(|v| - theta, 0)`` of the rows of ``mag = |v|`` (``(B, n)``, float32
    or float64, a scratch tensor that is overwritten) onto the balls of the (B,) float64 radii
    ``r``; ``None``, with ``mag`` untouched, when every row is inside its ball.

    Returns ``(p, spare, outside)``: ``p`` the result, ``spare`` a second ``(B, n)`` scratch
    tensor the caller may reuse (``mag`` is one of the two), ``outside`` the (B,) mask. Rows
    inside their ball come back bit for bit (theta = 0). The caller restores the signs with
    ``copysign``. All the work happens in these two buffers: on CPU, fresh large allocations cost
    page faults, which matter as much as the arithmetic here. ``work``, if given, is the second
    one (a caller can allocate both at once, which glibc's allocator then tends to keep).
    """
    l1, outside = _l1_outside(mag, r)
    if outside is None:
        return None
    if work is None:
        work = torch.empty_like(mag)
    theta = _michelot_theta(mag, l1, r, outside, work)
    p = _soft_threshold(mag, theta, work)
    return p, (mag if p is work else work), outside


def _soft_threshold(mag: Tensor, theta: Tensor, work: Tensor) -> Tensor:
    """``max(mag - theta, 0)`` rounded once to ``mag``'s dtype, ``theta`` (B,) float64; in
    ``mag`` or ``work`` (both overwritten), whichever is returned.

    For float32 data, ``theta = hi + lo`` (``hi`` its nearest float32, ``lo`` the rest) and
    ``|v| - hi = s + e`` exactly with ``s = fl(|v| - hi)`` and ``e = -(fl(s - |v|) + hi)`` (Dekker's
    Fast2Sum, exact wherever ``|v| >= hi``, which is where it matters), so ``s - fl(lo - e)`` is
    ``|v| - theta`` rounded once, as a float64 computation would give it, without a float64 copy
    of the data (a plain float32 ``|v| - hi - lo`` would round twice and miss the last bit of a
    few percent of the entries). Rows with theta = inf (radius 0) come out as exact zeros.
    """
    gone = torch.isinf(theta)
    any_gone = bool(gone.any())  # one host synchronisation, used twice
    if any_gone:
        theta = torch.where(gone, 0.0, theta)
    theta = theta.unsqueeze(1)
    if mag.dtype == torch.float64:
        p = mag.sub_(theta)
    else:
        hi = theta.to(mag.dtype)
        lo = (theta - hi.to(torch.float64)).to(mag.dtype)
        s = torch.sub(mag, hi, out=work)
        minus_e = torch.sub(s, mag, out=mag).add_(hi)  # exact
        p = s.sub_(minus_e.add_(lo))
    p.clamp_min_(0)
    if any_gone:
        p.masked_fill_(gone.unsqueeze(1), 0)
    return p


def _l1_outside(mag: Tensor, r: Tensor) -> tuple[Tensor, Tensor | None]:
    """Row sums of ``mag = |v|`` (float64) and the mask ``||v||_1 > r``, ``None`` if all false.

    The decision must be exact, since an element inside its ball is returned untouched. A float64
    sum of float32 data makes torch copy the data to float64 first (several times the cost of a
    float32 sum), so large float32 data is summed in float32 first: its cascade summation is accurate
    to far better than 1e-5 relative, which settles every row whose norm is not within 1e-5 of its
    radius; the float64 sum is only computed when some row is that close (or the float32 sum is
    not finite). The sums only start the threshold search, which does not need them exact.
    """
    if mag.dtype == torch.float64 or mag.numel() <= 2**16:  # small: the float64 sum costs little
        l1 = mag.sum(dim=1, dtype=torch.float64)
    else:
        l1 = mag.sum(dim=1).to(torch.float64)
        sure = torch.isfinite(l1) & ((l1 < r * (1 - 1e-5)) | (l1 > r * (1 + 1e-5)))
        if not bool(sure.all()):
            l1 = _sum64(mag)
    outside = l1 > r  # inf radius and points inside (including all-zero x) stay as they are
    return l1, (outside if bool(outside.any()) else None)


def _sum64(x: Tensor, block: int = 2**16) -> Tensor:
    """Row sums of the ``(B, n)`` tensor ``x`` accumulated in float64, a block of rows at a time.

    torch sums float32 data in float64 by copying it to float64 first; one ``(B, n)`` float64
    temporary is a large fresh allocation, and on CPU its page faults can cost ten times the sum
    itself. Blocks of about ``block`` values keep the temporary small (it is reused by the
    allocator); each row is still summed whole, so the result is the same as in one go.
    """
    if x.dtype == torch.float64:
        return x.sum(dim=1)
    rows = max(1, block // x.shape[1])
    if rows >= x.shape[0]:
        return x.sum(dim=1, dtype=torch.float64)
    return torch.cat([part.sum(dim=1, dtype=torch.float64) for part in x.split(rows)])


def _round_down(theta: Tensor, dtype: torch.dtype) -> Tensor:
    """The largest value of ``dtype`` that is ``<= theta`` (float64, any shape).

    For ``u`` of that dtype, ``u > theta`` exactly when ``u > _round_down(theta)``: comparing with
    it in the data's own dtype decides the support exactly, without promoting the data.
    """
    if dtype == torch.float64:
        return theta
    t = theta.to(dtype)
    return torch.where(t.to(torch.float64) > theta, torch.nextafter(t, torch.full_like(t, -math.inf)), t)


def _michelot_theta(
    mag: Tensor,
    l1: Tensor,
    r: Tensor,
    outside: Tensor,
    work: Tensor,
    max_approx: int = 20,
    max_iter: int = 60,
) -> Tensor:
    """Soft-threshold level of each row of ``mag`` (float64; 0 for rows not ``outside``).

    Michelot's fixed point: start with every entry in the support S and ``theta = (sum_S |v| - r)
    / |S|``; drop the entries with ``|v| <= theta`` and recompute. ``theta`` only grows, and when
    no entry is dropped it is exactly the level the sort-based formula gives (Condat 2016). (It
    is Newton's method on ``sum max(|v| - theta, 0) = r``; from a start above the level, one step
    brings it below.) Upper level sets are nested, so an equal count means an equal support.

    Each pass is vectorised arithmetic over ``(B, n)`` in ``mag``'s dtype into the scratch
    buffer ``work`` (the comparison and ``where`` kernels are several times slower on CPU):
    ``max(|v| - t, 0)``, whose sum is the excess over ``t``, and whose sign is the exact 0/1
    indicator of the support ``|v| > t``, whose sum is the count. Memory traffic is the cost, so
    the passes are approximate: float32 sums and levels, no per-row bookkeeping, every row until
    no support changes any more (at most ``max_approx`` passes). Then each row's level is computed
    exactly from its support, with a float64 sum (``_sum64``), and checked to keep that support:
    at once when it rounds down to the threshold of the last pass, else with one more count. A
    row that fails the check (round-off in the approximate passes, a near tie) goes on with exact
    passes (``_michelot_exact``). Either way a row's level is computed from its final support by
    the same float64 sum whatever the path there, so it does not depend on the start (an
    approximate ``l1``) or on the other rows of the batch.
    """
    b, n = mag.shape
    f64, dtype = torch.float64, mag.dtype
    r = torch.where(outside, r, 0.0)  # keeps inf out of the arithmetic
    zero_r = outside & (r == 0)
    frozen = ~outside | zero_r  # no level to find: held at inf (an empty support) meanwhile
    # the approximate passes, on (B, 1) columns in the data's dtype (few small operations)
    t = torch.where(frozen, math.inf, ((l1 - r) / n).clamp_min(0.0)).to(dtype).unsqueeze(1)
    r_col = r.to(dtype).unsqueeze(1)
    count_dtype = _count_dtype(mag)
    count = None
    for _ in range(max_approx):
        t_pass = t
        torch.sub(mag, t, out=work).clamp_min_(0)
        excess = work.sum(dim=1, keepdim=True)
        new_count = work.sign_().sum(dim=1, keepdim=True, dtype=count_dtype)
        if count is not None and torch.equal(new_count, count):
            break
        count = new_count
        t = (t + (excess - r_col) / new_count.to(dtype).clamp_min(1.0)).clamp_min_(0.0)  # Newton
    # the exact level of the support of the last pass (its indicator is still in ``work``)
    count = new_count.squeeze(1).to(f64)
    theta = ((_sum64(work.mul_(mag)) - r) / count.clamp_min(1.0)).clamp_min(0.0)
    done = frozen | (_round_down(theta, dtype) == t_pass.squeeze(1))
    if not bool(done.all()):
        theta = _michelot_exact(mag, r, theta, count, done, work, max_iter)
    return torch.where(zero_r, math.inf, torch.where(outside, theta, 0.0))


def _count_dtype(mag: Tensor) -> torch.dtype:
    """dtype to count entries of a ``(B, n)`` tensor of 0/1 in: float32 sums of 0/1 are exact
    below 2**24, and a float64 sum would copy the whole tensor to float64 first."""
    return mag.dtype if mag.dtype == torch.float64 or mag.shape[1] < 2**24 else torch.float64


def _michelot_exact(
    mag: Tensor, r: Tensor, theta: Tensor, count: Tensor, done: Tensor, work: Tensor, max_iter: int
) -> Tensor:
    """Michelot passes with float64 sums for the rows not ``done``, from levels ``theta`` computed
    exactly from supports of ``count`` entries; rows that do not settle fall back to the sort (:func:`sort_threshold`)."""
    f64 = torch.float64
    for _ in range(max_iter):
        if bool(done.all()):
            break
        torch.sub(mag, _round_down(theta, mag.dtype).unsqueeze(1), out=work).clamp_min_(0)
        support = work.sign_()  # 1 where |v| > theta, else 0
        new_count = support.sum(dim=1, dtype=_count_dtype(mag)).to(f64)
        settled = new_count == count
        if bool((done | settled).all()):  # the usual case: only the count was needed
            break
        new_sum = _sum64(support.mul_(mag))
        theta = torch.where(done | settled, theta, ((new_sum - r) / new_count.clamp_min(1.0)).clamp_min(0.0))
        done = done | settled
        count = new_count
    else:
        if not bool(done.all()):  # rare: the sort for the rows that did not settle
            theta = torch.where(done, theta, sort_threshold(mag.to(f64), r))
    return theta
