"""ReSample (Song et al., ICLR 2024): latent diffusion with hard data consistency, written against
three callables so that any autoencoder and latent noise predictor fit:

* ``eps_model(z, t)``: the latent noise predictor at integer steps ``t`` of ``alphas_cumprod``;
* ``decode(z)``: latents to images in ``[0, 1]``; ``encode(x)``: images to latents.

The loop (DDIM, eta 0, ``steps`` uniform steps), as the paper describes it, with the reference
code's slips done right (docs/diffusion.md lists them):

1. ``z0_hat = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``: Tweedie's mean, with ``sqrt(1 - a_t)``
   (the reference code's "pseudo x0" uses ``1 - a_t``).
2. ``z'_{t-1}``: the unconditional DDIM step.
3. Every ``every`` steps in the last two thirds of the schedule, and at the last step (whose
   answer is then the data-consistent latent itself, at any number of steps), hard data
   consistency from ``z0_hat``: in the middle third in pixel space (``x`` from
   ``decode(z0_hat)`` fitted to ``y``, then ``encode``), in the last third and at the last step
   in latent space (``z`` fitted so that ``A(decode(z))`` explains ``y``). Each image's fit
   stops where its residual per measurement entry comes down to what the noise leaves (its
   variance on the observed entries: an inpainting's masked entries are 0 in ``y``) plus the
   residual the autoencoder's own error leaves (``model_error``; the
   ReSample solver takes it from the model,
   :meth:`~genprior.diffusion.latent.LatentDiffusion.recon_floor`: fitting below it bends the
   latent to explain the autoencoder's error rather than the image; the reference code's fixed
   1e-6 ignores both): on that floor, back along the Adam step that crossed it (until
   2026-12-06 the fit kept the step's end, as much as 35 % below the floor), with no weight decay
   (AdamW's default decay shrinks the unobserved pixels). ``floor_share`` below 1 keeps only
   that share of the autoencoder's floor (the noise variance stays whole), so the fits end
   closer to ``y`` at a cost in PSNR (on the 8x8x8 model's box, held-out images: 0.9 takes the
   residual from 9.3x to 10.2x below Latent-DPS's and costs 0.08 dB; docs/diffusion.md). The
   last step's fit may take ``final_iters`` steps.
4. Stochastic resampling (:func:`stochastic_resample`): ``z_{t-1}`` drawn around the blend of
   ``sqrt(a) z0(y)`` and ``z'_{t-1}``, ``a = alpha_bar_{t-1}``, with ``s^2 = gamma`` times the
   DDPM posterior variance of the step.

As in the reference code, every step also moves ``z_{t-1}`` by a
Latent-DPS gradient step, ``dps_weight`` times the gradient in ``z_t`` of ``||y - A(D(z0_hat))||``
(0 turns it off); ``gluing > 0`` adds PSLD's gluing term to that step (:func:`gluing_term`; the
paper's step has none; 0.1 by default since 2026-12-05, when the term's projection became the
pseudo-inverse's: on 16 held-out images it is at or above the plain step on all eight benchmark
tasks, by up to 1.06 dB at super-resolution x8; docs/diffusion.md). ``travel = n`` adds the
reference code's "time travel": at a consistency step, ``z0_hat`` comes from ``n`` further
unconditional DDIM steps from ``z'_{t-1}``, each with its own timestep and ``alpha_bar``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from ..metrics import measurement_error, observed_share
from ..physics.project import adjoint_glue_point, project_onto_measurements
from .pixel import ddim_times

#: the gluing term's point of ``{x : A x = y}`` nearest ``x``, by name (:func:`gluing_term`)
GLUING_PROJECTIONS: dict[str, Callable[..., Tensor]] = {
    "pinv": project_onto_measurements,
    "adjoint": adjoint_glue_point,
}


def stochastic_resample(z0_y: Tensor, z_prime: Tensor, a_prev: Tensor, s2: Tensor, noise: Tensor) -> Tensor:
    """ReSample's resampling step (its eq. 9): a draw from
    ``N((s2 sqrt(a) z0_y + (1 - a) z_prime) / (s2 + 1 - a), s2 (1 - a) / (s2 + 1 - a))`` with
    ``a = a_prev``, using the standard normal ``noise``."""
    denom = s2 + 1 - a_prev
    mean = (s2 * a_prev.sqrt() * z0_y + (1 - a_prev) * z_prime) / denom
    return mean + (s2 * (1 - a_prev) / denom).sqrt() * noise


@dataclass
class ReSampleConfig:
    """Settings of :func:`resample` (one comment per field)."""

    steps: int = 250  # DDIM steps, as Latent-DPS and PSLD (reference: 500 at 256 px; 100 until 2026-12-06)
    every: int = 12  # hard data consistency every this many steps, last two thirds (5 until 2026-12-06)
    gamma: float = 40.0  # s^2 = gamma x the DDPM posterior variance of the step (the reference: 40)
    pixel_iters: int = 200  # at most this many Adam steps of pixel-space consistency
    pixel_lr: float = 1e-2  # their learning rate
    latent_iters: int = 100  # at most this many Adam steps of latent-space consistency
    final_iters: int = 500  # ... at the last step, whose fit is the answer (the reference's 500)
    latent_lr: float = 5e-3  # their learning rate
    travel: int = 0  # time travel: z0_hat from this many further DDIM steps at a consistency step (0: none)
    dps_weight: float = 1.0  # Latent-DPS step on ||y - A(D(z0_hat))|| at every step (0: none)
    gluing: float = 0.1  # PSLD's gluing term added to that step, this weight (0: the paper's plain step)
    gluing_projection: str = "pinv"  # its projection onto A x = y: "pinv", or PSLD's "adjoint" formula
    noise_sigma: float = 0.0  # the noise std where the physics states none (0: fit for all iterations)
    model_error: float | None = None  # the autoencoder's floor, added to the noise's (None: the model's)
    floor_share: float = 1.0  # the fits stop at this share of model_error (below 1: closer to y, lower PSNR)
    chains: int = 1  # posterior samples per image (one batch; `solve --samples K`); the output is their mean
    holdout: float | None = None  # share held out to calibrate the std map (None: 0.1 with chains >= 2)
    seed: int = 0  # seeds the start and the resampling draws

    def __post_init__(self) -> None:
        from ..solvers.common import check_choice, check_holdout, check_int, check_number

        for name in ("steps", "every", "pixel_iters", "latent_iters", "final_iters", "chains"):
            check_int(self, name, 1)
        check_int(self, "seed", 0)
        check_int(self, "travel", 0)
        for name in ("gamma", "pixel_lr", "latent_lr"):
            check_number(self, name, 0.0, above=True)
        for name in ("noise_sigma", "dps_weight", "gluing", "floor_share"):
            check_number(self, name, 0.0)
        if self.model_error is not None:
            check_number(self, "model_error", 0.0)
        check_choice(self, "gluing_projection", GLUING_PROJECTIONS)
        if self.gluing > 0 and self.dps_weight == 0:
            raise UserError(
                f"ReSampleConfig: gluing = {self.gluing} is added to the Latent-DPS step, which "
                "dps_weight = 0 turns off: give gluing = 0 as well, or dps_weight > 0"
            )
        check_holdout(self)


def dps_gradient(
    z: Tensor,
    t: Tensor,
    a: Tensor,
    y: Tensor,
    physics,
    eps_model: Callable[[Tensor, Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    extra: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Tweedie's ``z0_hat`` of ``z`` at step ``t`` (``alpha_bar = a``), the predicted noise, and
    the gradient in ``z`` of each image's ``||y - A(D(z0_hat))||`` (plus ``extra(z0_hat, x0_hat)``
    per image, when given): the Latent-DPS step (Chung et al. 2023 on a latent model)."""
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        e = eps_model(zg, t)
        z0 = (zg - (1 - a).sqrt() * e) / a.sqrt()
        x0 = decode(z0)
        loss = (physics.A(x0) - y).flatten(1).norm(dim=1)
        if extra is not None:
            loss = loss + extra(z0, x0)
        (grad,) = torch.autograd.grad(loss.sum(), zg)
    return z0.detach(), e.detach(), grad


def gluing_term(
    y: Tensor, physics, encode: Callable[[Tensor], Tensor], weight: float, projection: str = "pinv"
):
    """PSLD's gluing term (Rout et al. 2023) as ``extra`` for :func:`dps_gradient`: per image,
    ``weight * ||z0_hat - E(P(D(z0_hat)))||``, which pulls ``z0_hat`` towards a fixed point of the
    autoencoder on images that agree with ``y``. ``P`` is the projection onto ``{x : A x = y}``,
    ``x + A^+ (y - A x)`` (``projection = "pinv"``); the paper writes it ``A^T y + (I - A^T A) x``
    (``"adjoint"``), which is that projection only where ``A A^T = I`` (inpainting): at
    super-resolution and compressed sensing it moves the image far short of the set or far past it
    (:mod:`genprior.physics.project`)."""
    point = GLUING_PROJECTIONS[projection]

    def glue(z0: Tensor, x0: Tensor) -> Tensor:
        return weight * (z0 - encode(point(physics, x0, y))).flatten(1).norm(dim=1)

    return glue


@torch.no_grad()
def _look_ahead(z: Tensor, ts: list[int], j: int, n: int, ac: Tensor, eps_model) -> Tensor:
    """Tweedie's ``z0_hat`` after ``n`` unconditional DDIM steps (eta 0) from ``z`` at ``ts[j]``
    along the sampler's own grid, each step with its own timestep and ``alpha_bar`` (the reference
    code mixes one step's timestep with another's ``alpha_bar``)."""
    k = min(j + n, len(ts) - 1)
    for m in range(j, k + 1):
        a = ac[ts[m]]
        e = eps_model(z, torch.full((z.shape[0],), ts[m], device=z.device, dtype=torch.long))
        z0 = (z - (1 - a).sqrt() * e) / a.sqrt()
        if m < k:
            a_next = ac[ts[m + 1]]
            z = a_next.sqrt() * z0 + (1 - a_next).sqrt() * e
    return z0


@torch.no_grad()
def _land(
    before: Tensor,
    loss_before: Tensor,
    after: Tensor,
    loss_after: Tensor,
    loss_of: Callable[[Tensor], Tensor],
    floor: float,
    rounds: int = 6,
) -> Tensor:
    """The point of each segment ``before -> after`` (one optimiser step that took the image's
    loss from above ``floor`` to at or below it) where the loss comes down to ``floor``: false
    position on the step's fraction ``s``, keeping the end at or below the floor, so that the
    answer is at most ``floor`` and, for a loss convex along the step, converges to it (a loss
    decreasing along a short step leaves the secant above it). Stops once every image is within
    0.5 % of the floor."""
    lo, hi = torch.zeros_like(loss_before), torch.ones_like(loss_after)
    f_lo, f_hi = loss_before - floor, loss_after - floor
    shape = (-1,) + (1,) * (before.dim() - 1)
    for _ in range(rounds):
        if bool((f_hi >= -0.005 * floor).all()):
            break
        s = hi - f_hi * (hi - lo) / (f_hi - f_lo)  # where the secant crosses the floor
        f = loss_of(before + s.view(shape) * (after - before)) - floor
        below = f <= 0
        hi, f_hi = torch.where(below, s, hi), torch.where(below, f, f_hi)
        lo, f_lo = torch.where(below, lo, s), torch.where(below, f_lo, f)
    return before + hi.view(shape) * (after - before)


def _rows(loss_of: Callable[[Tensor], Tensor], full: Tensor, rows: Tensor) -> Callable[[Tensor], Tensor]:
    """``loss_of`` for some of the batch's images (a loss that pairs each image with its own
    measurements takes the whole batch): the other images held at ``full``'s values."""

    def loss(part: Tensor) -> Tensor:
        whole = full.detach().clone()
        whole[rows] = part
        return loss_of(whole)[rows]

    return loss


def _fit(start: Tensor, loss_of: Callable[[Tensor], Tensor], floor: float, iters: int, lr: float) -> Tensor:
    """Adam (no weight decay) on ``start``, at most ``iters`` steps; each image stops when its
    loss first reaches ``floor`` (the others go on), at the point of that last step where the loss
    comes down to the floor (:func:`_land`; an image that starts at or below it is kept as it is),
    so that none is fitted below the noise, and none far above it."""
    v = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    out = v.detach().clone()
    done = torch.zeros(len(v), dtype=torch.bool, device=v.device)
    before = loss_before = None
    for it in range(iters + 1):
        loss = loss_of(v)
        new = (loss.detach() <= floor) & ~done
        if bool(new.any()):
            now = v.detach()[new]  # kept as it is where the fit starts at or below the floor
            if before is not None:  # else back along the step that crossed the floor, to the floor
                now = _land(
                    before[new], loss_before[new], now, loss.detach()[new], _rows(loss_of, v, new), floor
                )
            out[new] = now
        done |= new
        if bool(done.all()) or it == iters:
            break
        before, loss_before = v.detach().clone(), loss.detach()
        opt.zero_grad(set_to_none=True)
        (loss * ~done).sum().backward()
        opt.step()
    out[~done] = v.detach()[~done]
    return out


def resample(
    y: Tensor,
    physics,
    eps_model: Callable[[Tensor, Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    encode: Callable[[Tensor], Tensor],
    latent_shape: tuple[int, ...],
    alphas_cumprod: Tensor,
    config: ReSampleConfig | None = None,
) -> Tensor:
    """Images ``(B, C, H, W)`` in ``[0, 1]`` explaining ``y``; see the module docstring."""
    cfg = config or ReSampleConfig()
    B, dev = y.shape[0], y.device
    sigma = float(getattr(getattr(physics, "noise_model", None), "sigma", 0.0) or cfg.noise_sigma)
    # the noise, per entry of the mean over all entries: an inpainting's masked entries are 0 in
    # y, noise included (deepinv's), so the truth leaves sigma^2 times the observed share there;
    # and (a share of) what the autoencoder cannot represent, already counted over all entries
    floor = sigma**2 * float(observed_share(y).mean()) + cfg.floor_share * (cfg.model_error or 0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    ac = alphas_cumprod.to(dev, torch.float32)
    ts = ddim_times(cfg.steps, len(ac))
    glue = gluing_term(y, physics, encode, cfg.gluing, cfg.gluing_projection) if cfg.gluing > 0 else None
    z = torch.randn((B, *latent_shape), generator=g).to(dev)
    for i, t in enumerate(ts):
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=dev)
        tt = torch.full((B,), t, device=dev, dtype=torch.long)
        if cfg.dps_weight > 0:
            z0, e, grad = dps_gradient(z, tt, a, y, physics, eps_model, decode, glue)
        else:
            with torch.no_grad():
                e = eps_model(z, tt)
                z0 = (z - (1 - a).sqrt() * e) / a.sqrt()  # Tweedie's mean: sqrt(1 - a), not 1 - a
        z_prime = a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * e  # DDIM, eta 0
        if cfg.dps_weight > 0:
            z_prime = z_prime - cfg.dps_weight * grad
        third, last = len(ts) / 3, i + 1 == len(ts)
        if last or (i >= third and i % cfg.every == 0):  # the last step at any step count
            if cfg.travel > 0 and not last:  # time travel: z0_hat from a few further DDIM steps
                z0 = _look_ahead(z_prime, ts, i + 1, cfg.travel, ac, eps_model)
            if i < 2 * third and not last:  # pixel space, then back to a latent
                x = _fit(
                    decode(z0).detach(),
                    lambda v: measurement_error(v, y, physics),
                    floor,
                    cfg.pixel_iters,
                    cfg.pixel_lr,
                )
                with torch.no_grad():
                    z0_y = encode(x.clamp(0, 1))
            else:  # latent space
                z0_y = _fit(
                    z0,
                    lambda v: measurement_error(decode(v).clamp(0, 1), y, physics),
                    floor,
                    cfg.final_iters if last else cfg.latent_iters,
                    cfg.latent_lr,
                )
            if last:  # the answer itself explains y down to the noise
                z = z0_y
                continue
            s2 = cfg.gamma * (1 - a_prev) / (1 - a) * (1 - a / a_prev)  # gamma x DDPM posterior variance
            noise = torch.randn(z.shape, generator=g).to(dev)
            z = stochastic_resample(z0_y, z_prime, a_prev, s2, noise)
        else:
            z = z_prime
    with torch.no_grad():
        return decode(z).clamp(0, 1)
