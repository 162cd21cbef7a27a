"""Unadjusted Langevin dynamics on a box (ULA; as an action optimiser, Implicit BC's Langevin)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.samplers.base import (
    ChainState,
    Draws,
    EnergyFn,
    Sampler,
    StepInfo,
    energy_and_grad,
    reflect,
    step_schedule,
)
from ebrl.validation import check_choice, check_fraction, check_positive_float


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
        compile: run each step through :func:`torch.compile` (see :class:`Sampler`).
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
        compile: bool | str = False,
    ) -> None:
        super().__init__(n_steps, bounds, compile)
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
        self._etas = torch.tensor(self.step_sizes, dtype=torch.float64)
        self._etas_on: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}
        self.max_move = None if self.move_clip is None else self.move_clip * (self.high - self.low)

    def init(
        self, energy_fn: EnergyFn, x0: Tensor, step_size: Tensor | None, deterministic: bool
    ) -> ChainState:
        e, g = energy_and_grad(energy_fn, x0)
        return ChainState(x0, e, g)

    def draw(
        self, state: ChainState, k: int, generator: torch.Generator | None, deterministic: bool
    ) -> Draws:
        x = state.position
        # The step size is a tensor so that one compiled step serves every eta_k of the schedule;
        # the schedule is moved to the chains' device and dtype once, not every step.
        key = (x.device, x.dtype)
        if key not in self._etas_on:
            self._etas_on[key] = self._etas.to(device=x.device, dtype=x.dtype).unbind()
        out = {"eta": self._etas_on[key][k]}
        if not deterministic and self.noise_scale > 0:
            out["noise"] = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return out

    def _move(self, state: ChainState, draws: Draws, temperature: Tensor, reflecting: bool) -> Tensor:
        x, g, eta = state.position, state.grad, draws["eta"]
        assert g is not None
        if self.grad_clip is not None:
            # Rescale the drift ∇U = ∇E/T of each chain to norm <= grad_clip.
            gnorm = g.norm(dim=-1, keepdim=True)
            g = g * (self.grad_clip / (gnorm / temperature).clamp_min(self.grad_clip))
        move = g * (-eta / temperature)
        if "noise" in draws:
            move = move + draws["noise"] * (self.noise_scale * (2 * eta).sqrt())
        if self.max_move is not None:
            move = move.clamp(-self.max_move, self.max_move)
        x = x + move
        return reflect(x, self.low, self.high) if reflecting else x.clamp(self.low, self.high)

    def _evaluate(self, energy_fn: EnergyFn, x: Tensor, last: bool) -> tuple[ChainState, StepInfo]:
        # The last move needs E only: its gradient would drive no further step.
        if last:
            e = energy_fn(x)
            return ChainState(x, e), StepInfo(None, None, {"energy": e.sum()})
        e, g = energy_and_grad(energy_fn, x)
        gnorm_sum = g.norm(dim=-1).sum()
        return ChainState(x, e, g), StepInfo(None, gnorm_sum, {"energy": e.sum(), "gradient": gnorm_sum})

    def step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        x = self._move(state, draws, temperature, reflecting=self.boundary == "reflect")
        return self._evaluate(energy_fn, x, last)

    def search_step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        # Noise-free gradient descent that clips, so an optimum on a face is reached, not bounced off.
        x = self._move(state, draws, temperature, reflecting=False)
        return self._evaluate(energy_fn, x, last)
