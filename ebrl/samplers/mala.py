"""Metropolis-adjusted Langevin algorithm on a box: exact for the truncated density."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl._validation import check_fraction, check_int, check_positive_float
from ebrl.samplers.base import EnergyFn, NonFiniteTracker, Sampler, SampleResult, energy_and_grad


class MALA(Sampler):
    """MALA (Roberts & Tweedie 1996) targeting p(x) ∝ exp(-E(x)/T) restricted to the box.

    Proposal y = x - eps ∇U(x) + sqrt(2 eps) xi with U = E/T, accepted with probability
    min(1, p(y) q(x|y) / (p(x) q(y|x))). A proposal outside the box has p(y) = 0 and is rejected,
    so every kernel leaves the truncated target exactly invariant.

    The step size eps is kept per batch element (each state's landscape has its own scale). During
    the first ``adapt_steps`` steps it is tuned toward ``target_accept`` by a Robbins-Monro update
    of log eps; after warm-up it is frozen, so the remaining steps are an exact, time-homogeneous
    chain. 0.574 is the optimal acceptance for MALA in high dimension (Roberts & Rosenthal 1998).

    In deterministic mode the proposal noise is dropped and a move is taken only when it lowers
    the energy: a monotone, noise-free descent whose per-chain step grows by 1.5 after a success
    and halves after a failure.

    ``sample(..., step_size=t)`` replaces the initial eps by a per-state tensor ``t`` of shape
    ``(batch,)`` (the Boltzmann policy sets it from its proposal's scale).

    Args:
        n_steps: total number of MH steps K (warm-up included).
        step_size: initial eps (> 0).
        adapt_steps: number of warm-up steps during which eps adapts (0 = fixed eps).
        target_accept: acceptance rate aimed for during warm-up, in (0, 1).
        bounds: the box [low, high].
    """

    supports_step_size = True

    def __init__(
        self,
        n_steps: int = 50,
        step_size: float = 1e-2,
        adapt_steps: int = 0,
        target_accept: float = 0.574,
        bounds: Sequence[float] = (-1.0, 1.0),
    ) -> None:
        super().__init__(n_steps, bounds)
        self.step_size = check_positive_float("step_size", step_size)
        self.adapt_steps = check_int("adapt_steps", adapt_steps, minimum=0)
        if self.adapt_steps >= self.n_steps:
            raise ValueError(
                f"adapt_steps must be < n_steps ({self.n_steps}) so that some steps are exact, "
                f"got {adapt_steps}"
            )
        self.target_accept = check_fraction("target_accept", target_accept, allow_none=False)
        if self.target_accept >= 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")

    def run_chains(
        self,
        energy_fn: EnergyFn,
        x0: Tensor,
        temperature: float,
        generator: torch.Generator | None,
        deterministic: bool,
        step_size: Tensor | None = None,
    ) -> SampleResult:
        batch = x0.shape[0]
        x = x0
        e, g = energy_and_grad(energy_fn, x)
        e0 = e
        tracker = NonFiniteTracker()
        tracker.update(0, energy=e.sum(), gradient=g.sum())
        # Deterministic search keeps one step size per chain and adapts it every step (grow on
        # success, shrink on failure): a noise-free descent with a crude line search.
        eps_shape = (batch, x.shape[1], 1) if deterministic else (batch, 1, 1)
        if step_size is None:
            log_eps = torch.full(eps_shape, math.log(self.step_size), device=x.device, dtype=x.dtype)
        else:
            # A per-state first step, e.g. from a learned proposal's scale (ebrl.policy).
            log_eps = step_size.to(x.dtype).log().reshape(batch, 1, 1).expand(eps_shape).clone()
        accepted = torch.zeros((), device=x.device, dtype=x.dtype)
        grad_norm_sum = g.norm(dim=-1).mean()
        n_counted = 0
        for k in range(self.n_steps):
            with torch.no_grad():
                eps = log_eps.exp()
                mean_x = x - eps * g / temperature
                if deterministic:
                    y = mean_x.clamp(self.low, self.high)
                else:
                    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
                    y = mean_x + (2 * eps).sqrt() * noise
            e_y, g_y = energy_and_grad(energy_fn, y)
            with torch.no_grad():
                inside = ((y >= self.low) & (y <= self.high)).all(dim=-1)
                # Only proposals inside the box are part of the target; outside it E may be anything.
                tracker.update(
                    k + 1,
                    energy=torch.where(inside, e_y, 0.0).sum(),
                    gradient=torch.where(inside[..., None], g_y, 0.0).sum(),
                )
                if deterministic:
                    accept = inside & (e_y < e)
                else:
                    # log q(a|b) = -|a - b + eps ∇U(b)|^2 / (4 eps) up to a constant.
                    mean_y = y - eps * g_y / temperature
                    log_q_fwd = -((y - mean_x) ** 2).sum(-1) / (4 * eps[..., 0])
                    log_q_bwd = -((x - mean_y) ** 2).sum(-1) / (4 * eps[..., 0])
                    log_alpha = (e - e_y) / temperature + log_q_bwd - log_q_fwd
                    u = torch.rand(log_alpha.shape, device=x.device, dtype=x.dtype, generator=generator)
                    # nan_to_num: a non-finite proposal is rejected here and reported by the tracker.
                    accept = inside & (u.log() < torch.nan_to_num(log_alpha, nan=-math.inf))
                x = torch.where(accept[..., None], y, x)
                e = torch.where(accept, e_y, e)
                g = torch.where(accept[..., None], g_y, g)
                acc = accept.to(x.dtype)
                if deterministic:
                    log_eps = log_eps + torch.where(accept[..., None], math.log(1.5), math.log(0.5))
                elif k < self.adapt_steps:
                    # Robbins-Monro on log eps with a decaying gain: adaptation fades out.
                    gain = 1.0 / math.sqrt(k + 1)
                    log_eps = log_eps + gain * (acc.mean(dim=1) - self.target_accept)[:, None, None]
                else:
                    accepted += acc.mean()
                    n_counted += 1
                grad_norm_sum += g.norm(dim=-1).mean()
        tracker.check(type(self).__name__, self.n_steps)
        self.last_step_size = log_eps.exp().reshape(batch, -1).mean(1)
        return SampleResult(
            samples=x,
            energy=e,
            energy_drop=(e0 - e).mean(),
            grad_norm=grad_norm_sum / (self.n_steps + 1),
            acceptance=accepted / max(n_counted, 1),
        )
