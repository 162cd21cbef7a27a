"""Derivative-free action search: iterative importance resampling (Implicit BC's optimiser)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.samplers.base import ChainState, Draws, EnergyFn, Sampler, StepInfo, check_energy_shape
from ebrl.validation import check_fraction, check_positive_float


class DerivativeFree(Sampler):
    """Iterative sampling-importance-resampling with shrinking Gaussian noise.

    Florence et al. 2021 (Implicit BC, Alg. 1 "derivative-free optimizer"): evaluate E on all
    chains, resample chains in proportion to softmax(-E/T), perturb them with N(0, sigma^2),
    clip to the box, and shrink sigma; repeat. No gradients are taken, so any energy works,
    including non-differentiable ones.

    This is a *search*, not an exact sampler: the first resampling from the uniform start is
    sampling-importance-resampling (Rubin 1987), but every further round multiplies in the
    weights again, so the chains concentrate on the lowest-energy basin (useful for action
    selection; use :class:`~ebrl.samplers.MALA` for exact draws). A last resampling without noise
    ends each call; the best chain is the search's answer.

    Deterministic mode is the T -> 0 limit of the search: each round keeps the lowest-energy
    eighth of the chains (replicated to fill the population, as the cross-entropy method does)
    instead of drawing by weight, and its perturbations come from an internally seeded generator
    (one draw shared by all rows), so a state always gets the same answer, in any batch.

    Args:
        n_steps: number of resample-and-perturb iterations (Implicit BC: 3).
        noise_scale: initial perturbation std sigma_0, in box units (Implicit BC: 0.33).
        noise_shrink: factor applied to sigma after each iteration, in (0, 1] (Implicit BC: 0.5).
        bounds: the box [low, high].
        compile: run each step through :func:`torch.compile` (see :class:`Sampler`).
    """

    def __init__(
        self,
        n_steps: int = 3,
        noise_scale: float = 0.33,
        noise_shrink: float = 0.5,
        bounds: Sequence[float] = (-1.0, 1.0),
        compile: bool | str = False,
    ) -> None:
        super().__init__(n_steps, bounds, compile)
        self.noise_scale = check_positive_float("noise_scale", noise_scale)
        self.noise_shrink = check_fraction("noise_shrink", noise_shrink, allow_none=False)

    @staticmethod
    def _resample_index(e: Tensor, temperature: Tensor, uniform: Tensor) -> Tensor:
        """Indices (batch, chains) of chains drawn with probability softmax(-E/T) per batch row,
        by inverting each row's cumulative weights at the given uniforms (multinomial resampling
        with its random numbers drawn outside, as every kernel's are)."""
        # Non-finite energies get (almost) no weight instead of poisoning the whole row; the
        # non-finite check reports them when the loop ends.
        log_w = torch.nan_to_num(-e / temperature, nan=-1e30, posinf=1e30, neginf=-1e30)
        cdf = torch.softmax(log_w, dim=1).cumsum(dim=1)
        idx = torch.searchsorted(cdf, uniform * cdf[:, -1:])
        return idx.clamp_(max=e.shape[1] - 1)

    @staticmethod
    def _elite_index(e: Tensor) -> Tensor:
        """Indices (batch, chains) that repeat the lowest-energy eighth of each row's chains."""
        chains = e.shape[1]
        n_elite = max(1, chains // 8)
        elite = torch.nan_to_num(e, nan=torch.inf).topk(n_elite, dim=1, largest=False).indices
        return elite.repeat(1, -(-chains // n_elite))[:, :chains]

    @staticmethod
    def _gather(x: Tensor, idx: Tensor) -> Tensor:
        return torch.gather(x, 1, idx[..., None].expand(*idx.shape, x.shape[-1]))

    def init(
        self, energy_fn: EnergyFn, x0: Tensor, step_size: Tensor | None, deterministic: bool
    ) -> ChainState:
        with torch.no_grad():
            e = energy_fn(x0)
        check_energy_shape(e, x0)
        return ChainState(x0, e)

    def draw(
        self, state: ChainState, k: int, generator: torch.Generator | None, deterministic: bool
    ) -> Draws:
        x = state.position
        # Deterministic mode shares one noise draw across rows, so that a state's answer does not
        # depend on its row in the batch.
        noise_shape = (1, *x.shape[1:]) if deterministic else x.shape
        sigma = self.noise_scale * self.noise_shrink**k
        out = {"noise": sigma * torch.randn(noise_shape, device=x.device, dtype=x.dtype, generator=generator)}
        if not deterministic:
            out["uniform"] = torch.rand(x.shape[:-1], device=x.device, dtype=x.dtype, generator=generator)
        return out

    def _perturb(
        self, energy_fn: EnergyFn, state: ChainState, idx: Tensor, noise: Tensor
    ) -> tuple[ChainState, StepInfo]:
        x = (self._gather(state.position, idx) + noise).clamp(self.low, self.high)
        e = energy_fn(x)
        return ChainState(x, e), StepInfo(None, None, {"energy": e.sum()})

    def step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        idx = self._resample_index(state.energy, temperature, draws["uniform"])
        return self._perturb(energy_fn, state, idx, draws["noise"])

    def search_step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        # The T -> 0 limit of the search: keep the elite instead of drawing by weight.
        return self._perturb(energy_fn, state, self._elite_index(state.energy), draws["noise"])

    def finish(
        self, energy_fn: EnergyFn, state: ChainState, temperature: Tensor, generator: torch.Generator | None,
        deterministic: bool,
    ) -> ChainState:
        if deterministic:
            return state
        # Final resampling without noise, so that sampled chains favour low energy.
        e = state.energy
        uniform = torch.rand(e.shape, device=e.device, dtype=e.dtype, generator=generator)
        idx = self._resample_index(e, temperature, uniform)
        return ChainState(self._gather(state.position, idx), torch.gather(e, 1, idx))
