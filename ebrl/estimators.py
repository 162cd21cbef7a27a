"""Importance-sampling estimates of log-partition functions, soft values and entropies: the one
place where log Z = log mean(w) is computed, for the Boltzmann policy
(:meth:`ebrl.BoltzmannPolicy.log_partition`), SQL's target (:func:`soft_value` and the particle
estimators below) and AIS (:func:`ebrl.partition.ais_log_z`, through :func:`log_mean_bounds`).

The soft state value V(s) = alpha log ∫_box exp(Q(s, a)/alpha) da (Haarnoja et al. 2017,
arXiv 1702.08165, eq. 10) with a uniform proposal on [-1, 1]^d is
V(s) ≈ alpha [logsumexp_i Q(s, a_i)/alpha - log M + d log 2],  a_i ~ U([-1, 1]^d).
Every particle estimator here evaluates Q once on a ``(batch, M, d)`` particle tensor (one forward
pass per critic; the mixture estimator in two stages of M/2) and returns Z's importance weights
exactly, so log Z is the log of an unbiased estimate of Z.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

ESTIMATORS = ("proposal", "uniform", "stratified", "mixture")

QFn = Callable[[Tensor], Tensor]


def uniform_particles(
    batch: int,
    n_particles: int,
    act_dim: int,
    *,
    stratified: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """M particles per state on [-1, 1]^d, ``(batch, M, d)``.

    ``stratified=True`` draws a Latin hypercube per state: every coordinate of the M particles
    has one point in each of M equal strata, in an independent random order. Each particle is
    still marginally uniform, so the proposal density is exactly 2^-d and the estimate of
    Z = 2^d E_U[exp(Q/alpha)] stays unbiased, while the even coverage lowers its variance
    (McKay, Beckman & Conover 1979): the same cost as the paper's estimator, fewer missed modes.
    """
    shape = (batch, n_particles, act_dim)
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    if stratified and n_particles > 1:
        keys = torch.rand(shape, device=device, dtype=dtype, generator=generator)
        strata = keys.argsort(dim=1).to(u.dtype)
        u = (strata + u) / n_particles
    return 2.0 * u - 1.0


def log_mean_exp(log_w: Tensor, dim: int = -1) -> Tensor:
    """log mean_i exp(log_w_i) along ``dim``, computed stably: the log of the importance-sampling
    estimate of Z from log-weights log w_i = log f(x_i) - log q(x_i)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def importance_log_z(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """``(log Z, stderr)`` per row of the log-weights ``(batch, n)``: log Z = log mean(w), and the
    delta-method standard error of log Z, std(w) / (sqrt(n) mean(w))."""
    w = torch.exp(log_w - log_w.max(dim=-1, keepdim=True).values)
    stderr = w.std(dim=-1) / (math.sqrt(log_w.shape[-1]) * w.mean(dim=-1))
    return log_mean_exp(log_w), stderr


def log_mean_bounds(log_w: Tensor, n_std: float) -> tuple[float, float, float]:
    """For a 1-D tensor of log-weights: ``log mean(w)`` and ``log(mean(w) -/+ n_std * se)``, computed
    stably (the lower bound is -inf when mean - n_std * se <= 0)."""
    m = log_w.max()
    w = torch.exp(log_w - m)
    mean = w.mean()
    se = w.std(unbiased=True) / math.sqrt(len(w)) if len(w) > 1 else torch.zeros_like(mean)
    low = mean - n_std * se
    log_low = float(m + torch.log(low)) if low > 0 else -math.inf
    return float(m + torch.log(mean)), log_low, float(m + torch.log(mean + n_std * se))


def soft_value(q: Tensor, alpha: Tensor | float, log_proposal: Tensor | float) -> tuple[Tensor, Tensor]:
    """Soft value and Boltzmann-policy entropy from Q at M particles ``q`` ``(batch, M)`` drawn
    from proposals of log-density ``log_proposal`` (a float, e.g. -d log 2, or ``(batch, M)``).

    Returns ``(V, H)``, both ``(batch,)``: log Z = logsumexp(Q/alpha - log q) - log M,
    V = alpha log Z, and H = log Z - E_pi[Q]/alpha = (V - E_pi[Q]) / alpha, with E_pi[Q] from the
    self-normalised importance weights of the same particles (no extra network evaluation).
    Particles with Q = -inf (outside the box) get zero weight.
    """
    logits = q / alpha - log_proposal
    log_z = log_mean_exp(logits)
    weights = torch.softmax(logits, dim=-1)
    e_q = (weights * torch.where(torch.isfinite(q), q, 0.0)).sum(-1)
    return alpha * log_z, log_z - e_q / alpha


def uniform_soft_value(
    q_fn: QFn,
    batch: int,
    n_particles: int,
    act_dim: int,
    alpha: Tensor | float,
    *,
    stratified: bool,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """The paper's estimator (i.i.d. or Latin-hypercube uniform particles)."""
    particles = uniform_particles(batch, n_particles, act_dim, stratified=stratified, device=device)
    return soft_value(q_fn(particles), alpha, -act_dim * math.log(2.0))


def mixture_soft_value(
    q_fn: QFn,
    batch: int,
    n_particles: int,
    act_dim: int,
    alpha: Tensor | float,
    *,
    bandwidth: float | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Two-stage estimator whose second stage proposes where the Boltzmann policy puts its mass.

    Stage 1: M1 = M/2 stratified uniform particles. Stage 2: one step of the derivative-free
    sampler (Implicit BC's resampling): centres resampled from stage 1 with weights
    softmax(Q/alpha), perturbed by N(0, sigma^2); each stage-2 particle is instead uniform with
    probability 1/2, so the stage-2 proposal is the *defensive mixture* (Hesterberg 1995)
    q2(a) = 1/2 2^-d + 1/2 sum_j w_j N(a; a_j, sigma^2 I), whose density is known exactly given
    stage 1, and whose weights exp(Q/alpha)/q2 stay bounded by 2^(d+1) exp(Q/alpha).
    Both stages give unbiased estimates of Z (stage 2 conditionally on stage 1), so their
    pooled importance-weighted mean is unbiased too; particles leaving the box have weight 0.
    ``bandwidth`` sigma defaults to the width of a stratum, 2 / M1^(1/d) / 2.
    """
    m1 = max(n_particles // 2, 1)
    m2 = n_particles - m1
    uniform_log_q = -act_dim * math.log(2.0)
    a1 = uniform_particles(batch, m1, act_dim, stratified=True, device=device)
    q1 = q_fn(a1)
    if m2 == 0:
        return soft_value(q1, alpha, uniform_log_q)
    sigma = bandwidth if bandwidth is not None else 1.0 / m1 ** (1.0 / act_dim)
    w = torch.softmax(q1 / alpha, dim=-1)
    idx = torch.multinomial(w, m2, replacement=True)
    centres = torch.gather(a1, 1, idx[..., None].expand(batch, m2, act_dim))
    a2 = centres + sigma * torch.randn_like(centres)
    use_uniform = torch.rand(batch, m2, 1, device=a2.device, dtype=a2.dtype) < 0.5
    a2 = torch.where(use_uniform, uniform_particles(batch, m2, act_dim, device=device), a2)
    # log of sum_j w_j N(a2_i; a1_j, sigma^2 I): (batch, m2, m1) kernel matrix, then logsumexp over j.
    sq = ((a2[:, :, None, :] - a1[:, None, :, :]) ** 2).sum(-1)
    log_kernel = -0.5 * sq / sigma**2 - act_dim * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    log_gauss = torch.logsumexp(log_kernel + w.clamp_min(1e-30).log()[:, None, :], dim=-1)
    log_q2 = torch.logaddexp(torch.full_like(log_gauss, uniform_log_q), log_gauss) - math.log(2.0)
    inside = (a2.abs() <= 1.0).all(-1)
    q2 = torch.where(inside, q_fn(a2.clamp(-1.0, 1.0)), -math.inf)
    q = torch.cat([q1, q2], dim=1)
    log_q = torch.cat([torch.full_like(q1, uniform_log_q), log_q2], dim=1)
    return soft_value(q, alpha, log_q)
