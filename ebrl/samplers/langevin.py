"""Unadjusted Langevin dynamics on a box (ULA; as an action optimiser, Implicit BC's Langevin)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl._validation import check_choice, check_fraction, check_positive_float
from ebrl.samplers.base import (
    EnergyFn,
    NonFiniteTracker,
    Sampler,
    SampleResult,
    energy_and_grad,
    reflect,
    step_schedule,
)


class Langevin(Sampler):
    """Unadjusted Langevin algorithm for p(x) ∝ exp(-E(x)/T) on a box.

    Each step, with U = E/T:  x <- box(x - eta_k ∇U(x) + noise_scale * sqrt(2 eta_k) * xi),
    xi ~ N(0, I). With ``noise_scale=1`` and small steps this samples p (Roberts & Tweedie 1996);
    with ``noise_scale=0`` it is gradient descent. Implicit BC (Florence et al. 2021) runs the
    same loop as an action optimiser with a polynomial step decay from 0.1 to 1e-5, a clipped
    move and uniform initialisation.

    Args:
        n_steps: number of Langevin steps K.
        step_size: eta_0, the first step size (> 0).
        step_size_final: eta_{K-1} for the ``polynomial`` and ``exponential`` schedules.
        schedule: ``"constant"``, ``"polynomial"`` (Implicit BC, power 2) or ``"exponential"``.
        noise_scale: multiplies the injected noise; 1 is exact Langevin, < 1 a cooled chain.
        grad_clip: if set, the drift gradient ∇U of each chain is rescaled to at most this norm.
        move_clip: if set, each coordinate of a step's move is clipped to this fraction of the
            box width (Implicit BC's delta-action clip).
        boundary: ``"reflect"`` (targets the truncated density) or ``"clip"`` (projection; what an
            optimiser wants). Deterministic searches always clip, so an optimum on a face is
            reached rather than bounced off.
        bounds: the box [low, high].
    """

    def __init__(
        self,
        n_steps: int = 20,
        step_size: float = 1e-2,
        step_size_final: float | None = None,
        schedule: str = "constant",
        noise_scale: float = 1.0,
        grad_clip: float | None = None,
        move_clip: float | None = None,
        boundary: str = "reflect",
        bounds: Sequence[float] = (-1.0, 1.0),
    ) -> None:
        super().__init__(n_steps, bounds)
        self.step_size = check_positive_float("step_size", step_size)
        self.schedule = check_choice("schedule", schedule, ["constant", "polynomial", "exponential"])
        if schedule != "constant":
            if step_size_final is None:
                raise ValueError(f"step_size_final is required with schedule={schedule!r}")
            step_size_final = check_positive_float("step_size_final", step_size_final)
        self.step_size_final = step_size_final
        self.noise_scale = check_positive_float("noise_scale", noise_scale, allow_zero=True)
        self.grad_clip = None if grad_clip is None else check_positive_float("grad_clip", grad_clip)
        self.move_clip = check_fraction("move_clip", move_clip)
        self.boundary = check_choice("boundary", boundary, ["reflect", "clip"])
        self.step_sizes = step_schedule(schedule, self.n_steps, self.step_size, step_size_final)

    def run_chains(
        self,
        energy_fn: EnergyFn,
        x0: Tensor,
        temperature: float,
        generator: torch.Generator | None,
        deterministic: bool,
    ) -> SampleResult:
        x = x0
        tracker = NonFiniteTracker()
        grad_norm_sums = []
        max_move = None if self.move_clip is None else self.move_clip * (self.high - self.low)
        noise_scale = 0.0 if deterministic else self.noise_scale
        reflecting = self.boundary == "reflect" and not deterministic
        e0 = None
        # Few, mostly in-place ops per step: at small batch sizes the loop's per-op overhead, not
        # the network, is what separates a sampler from its limit (K forward+gradient passes).
        for k, eta in enumerate(self.step_sizes):
            e, g = energy_and_grad(energy_fn, x)
            if e0 is None:
                e0 = e
            with torch.no_grad():
                gnorm = g.norm(dim=-1, keepdim=True)
                gnorm_sum = gnorm.sum()
                grad_norm_sums.append(gnorm_sum)
                tracker.update(k, energy=e.sum(), gradient=gnorm_sum)
                if self.grad_clip is not None:
                    # Rescale the drift ∇U = ∇E/T of each chain to norm <= grad_clip.
                    g = g * (self.grad_clip / (gnorm / temperature).clamp_min(self.grad_clip))
                if noise_scale > 0:
                    move = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
                    move.mul_(noise_scale * math.sqrt(2 * eta)).add_(g, alpha=-eta / temperature)
                else:
                    move = g.mul(-eta / temperature)
                if max_move is not None:
                    move.clamp_(-max_move, max_move)
                x = x + move
                x = reflect(x, self.low, self.high) if reflecting else x.clamp_(self.low, self.high)
        with torch.no_grad():
            e_final = energy_fn(x)
        tracker.update(self.n_steps, energy=e_final.sum())
        tracker.check(type(self).__name__, self.n_steps)
        n_grads = self.n_steps * e_final.numel()
        return SampleResult(
            samples=x,
            energy=e_final,
            energy_drop=(e0 - e_final).mean(),
            grad_norm=torch.stack(grad_norm_sums).sum() / n_grads,
        )
