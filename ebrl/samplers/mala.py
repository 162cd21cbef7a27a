"""Metropolis-adjusted Langevin algorithm on a box: exact for the truncated density."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.samplers.base import ChainState, Draws, EnergyFn, Sampler, StepInfo, energy_and_grad
from ebrl.validation import check_fraction, check_int, check_positive_float

# Deterministic search: per-chain step growth after an improving move, shrink after a failed one.
_GROW, _SHRINK = math.log(1.5), math.log(0.5)


class MALA(Sampler):
    """MALA (Roberts & Tweedie 1996) targeting p(x) ∝ exp(-E(x)/T) restricted to the box.

    Proposal y = x - eps ∇U(x) + sqrt(2 eps) xi with U = E/T, accepted with probability
    min(1, p(y) q(x|y) / (p(x) q(y|x))). A proposal outside the box has p(y) = 0 and is rejected,
    so every kernel leaves the truncated target exactly invariant.

    The step size eps is kept per batch element (each state's landscape has its own scale). During
    the first ``adapt_steps`` steps it is tuned toward ``target_accept`` by a Robbins-Monro update
    of log eps; after warm-up it is frozen, so the remaining steps are an exact, time-homogeneous
    chain. 0.574 is the optimal acceptance for MALA in high dimension (Roberts & Rosenthal 1998).

    In deterministic mode (:meth:`search_step`) the proposal noise is dropped and a move is taken
    only when it lowers the energy: a monotone, noise-free descent whose per-chain step grows by
    1.5 after a success and halves after a failure.

    ``sample(..., step_size=t)`` replaces the initial eps by a per-state tensor ``t`` of shape
    ``(batch,)`` (the Boltzmann policy sets it from its proposal's scale); the final eps comes back
    as ``SampleResult.step_size``.

    Args:
        n_steps: total number of MH steps K (warm-up included).
        step_size: initial eps (> 0).
        adapt_steps: number of warm-up steps during which eps adapts (0 = fixed eps).
        target_accept: acceptance rate aimed for during warm-up, in (0, 1).
        bounds: the box [low, high].
        compile: run each step through :func:`torch.compile` (see :class:`Sampler`).
    """

    supports_step_size = True
    _is_mh = True

    def __init__(
        self,
        n_steps: int = 50,
        step_size: float = 1e-2,
        adapt_steps: int = 0,
        target_accept: float = 0.574,
        bounds: Sequence[float] = (-1.0, 1.0),
        compile: bool | str = False,
    ) -> None:
        super().__init__(n_steps, bounds, compile)
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

    def init(
        self, energy_fn: EnergyFn, x0: Tensor, step_size: Tensor | None, deterministic: bool
    ) -> ChainState:
        batch = x0.shape[0]
        e, g = energy_and_grad(energy_fn, x0)
        # The search keeps one step per chain (its own line search); the chain one per state.
        shape = (batch, x0.shape[1], 1) if deterministic else (batch, 1, 1)
        if step_size is None:
            log_eps = torch.full(shape, math.log(self.step_size), device=x0.device, dtype=x0.dtype)
        else:
            log_eps = step_size.to(x0.dtype).log().reshape(batch, 1, 1).expand(shape).clone()
        return ChainState(x0, e, g, log_eps)

    def draw(
        self, state: ChainState, k: int, generator: torch.Generator | None, deterministic: bool
    ) -> Draws:
        if deterministic:
            return {}
        x = state.position
        return {
            "noise": torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator),
            "uniform": torch.rand(x.shape[:-1], device=x.device, dtype=x.dtype, generator=generator),
        }

    def _propose(
        self, energy_fn: EnergyFn, state: ChainState, noise: Tensor | None, temperature: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(eps, drift mean at x, proposal y, E(y), dE/dy), and the in-box mask of y."""
        x, g, log_eps = state.position, state.grad, state.log_step_size
        assert g is not None and log_eps is not None
        eps = log_eps.exp()
        mean_x = x - eps * g / temperature
        y = mean_x.clamp(self.low, self.high) if noise is None else mean_x + (2 * eps).sqrt() * noise
        e_y, g_y = energy_and_grad(energy_fn, y)
        return eps, mean_x, y, e_y, g_y

    def _moved(
        self, state: ChainState, accept: Tensor, y: Tensor, e_y: Tensor, g_y: Tensor, inside: Tensor,
        log_eps: Tensor,
    ) -> tuple[ChainState, StepInfo]:
        g = torch.where(accept[..., None], g_y, state.grad)
        x = torch.where(accept[..., None], y, state.position)
        new = ChainState(x, torch.where(accept, e_y, state.energy), g, log_eps)
        # Only proposals inside the box are part of the target; outside it E may be anything.
        watch = {
            "energy": torch.where(inside, e_y, 0.0).sum(),
            "gradient": torch.where(inside[..., None], g_y, 0.0).sum(),
        }
        return new, StepInfo(accept.to(y.dtype), g.norm(dim=-1).sum(), watch)

    def step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        eps, mean_x, y, e_y, g_y = self._propose(energy_fn, state, draws["noise"], temperature)
        inside = ((y >= self.low) & (y <= self.high)).all(dim=-1)
        # log q(a|b) = -|a - b + eps ∇U(b)|^2 / (4 eps) up to a constant.
        mean_y = y - eps * g_y / temperature
        fwd, bwd = ((y - mean_x) ** 2).sum(-1), ((state.position - mean_y) ** 2).sum(-1)
        log_q_ratio = (fwd - bwd) / (4 * eps[..., 0])
        log_alpha = (state.energy - e_y) / temperature + log_q_ratio
        # nan_to_num: a non-finite proposal is rejected here and reported by the non-finite check.
        accept = inside & (draws["uniform"].log() < torch.nan_to_num(log_alpha, nan=-math.inf))
        return self._moved(state, accept, y, e_y, g_y, inside, state.log_step_size)

    def search_step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        _, _, y, e_y, g_y = self._propose(energy_fn, state, None, temperature)
        inside = ((y >= self.low) & (y <= self.high)).all(dim=-1)
        accept = inside & (e_y < state.energy)
        log_eps = state.log_step_size + torch.where(accept[..., None], _GROW, _SHRINK)
        return self._moved(state, accept, y, e_y, g_y, inside, log_eps)

    def adapt(self, state: ChainState, info: StepInfo, k: int) -> ChainState | None:
        if k >= self.adapt_steps:
            return None
        assert info.accepted is not None and state.log_step_size is not None
        # Robbins-Monro on log eps with a decaying gain: adaptation fades out.
        change = (info.accepted.mean(dim=1) - self.target_accept)[:, None, None] / math.sqrt(k + 1)
        return state._replace(log_step_size=state.log_step_size + change)
