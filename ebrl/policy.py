"""The Boltzmann policy pi(a|s) ∝ exp(-E(s, a)/alpha) on the action box, by MCMC action search."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebrl._validation import check_finite, check_int, check_positive_float, check_tensor
from ebrl.energies import Energy, StateActionEnergy
from ebrl.samplers import Langevin, Sampler, SampleResult


def default_sampler() -> Langevin:
    """Langevin action search as in the reference soft Q-learning loop of ARCHITECTURE.md:
    K = 20 steps with a polynomial step decay, moves clipped to a tenth of the box."""
    return Langevin(n_steps=20, step_size=0.1, step_size_final=1e-3, schedule="polynomial", move_clip=0.1)


class BoltzmannPolicy:
    """pi(a|s) ∝ exp(-E(s, a)/alpha) = exp(Q(s, a)/alpha) over actions in [-1, 1]^d.

    Args:
        energy: the state-action energy E(s, a) = -Q(s, a): a :class:`StateActionEnergy`, or any
            conditional :class:`Energy` whose x is the action and whose context is the state.
        sampler: the MCMC action search (default: :func:`default_sampler`).
        temperature: alpha, the entropy temperature of maximum-entropy RL (Haarnoja et al. 2017).
        n_chains: chains per state used by :meth:`mode` (the search keeps the best of them).
        warm_start: keep each state's chains between :meth:`sample` calls, so that the search for
            s_{t+1} starts where the one for s_t ended (rows restart with :meth:`reset_chains`).
    """

    def __init__(
        self,
        energy: StateActionEnergy | Energy,
        sampler: Sampler | None = None,
        temperature: float = 1.0,
        n_chains: int = 16,
        warm_start: bool = False,
    ) -> None:
        if not isinstance(energy, Energy) or energy.context_dim < 1:
            raise TypeError(
                "energy must be a StateActionEnergy (or a conditional ebrl Energy with context_dim >= 1), "
                f"got {type(energy).__name__}"
            )
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be an ebrl Sampler, got {type(sampler).__name__}")
        self.energy = energy
        self.sampler = sampler if sampler is not None else default_sampler()
        self.temperature = check_positive_float("temperature", temperature)
        self.n_chains = check_int("n_chains", n_chains, minimum=1)
        self.warm_start = bool(warm_start)
        self.last_result: SampleResult | None = None

    @property
    def act_dim(self) -> int:
        return self.energy.x_dim

    @property
    def obs_dim(self) -> int:
        return self.energy.context_dim

    def _states(self, states: Tensor) -> tuple[Tensor, bool]:
        check_tensor("states", states, last_dim=self.obs_dim)
        # One host sync per call, at the boundary: a NaN state would otherwise surface later as a
        # non-finite energy inside the sampler, far from its cause.
        check_finite("states", states)
        if states.dim() == 1:
            return states[None], True
        if states.dim() != 2:
            raise ValueError(
                f"states must have shape (batch, {self.obs_dim}) or ({self.obs_dim},), "
                f"got {tuple(states.shape)}"
            )
        return states, False

    def sample(self, states: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """n actions per state drawn by the sampler: ``(batch, n, act_dim)`` (``(n, act_dim)`` for
        a single state of shape ``(obs_dim,)``). Diagnostics land in :attr:`last_result`."""
        n = check_int("n", n, minimum=1)
        states, single = self._states(states)
        result = self.sampler.sample(
            self.energy,
            "persistent" if self.warm_start else "uniform",
            shape=(states.shape[0], n, self.act_dim),
            context=states,
            temperature=self.temperature,
            generator=generator,
        )
        self.last_result = result
        return result.samples[0] if single else result.samples

    def mode(self, states: Tensor) -> Tensor:
        """Noise-free search from a fixed initialisation; the lowest-energy chain per state:
        ``(batch, act_dim)`` (``(act_dim,)`` for a single state)."""
        states, single = self._states(states)
        result = self.sampler.sample(
            self.energy,
            "uniform",
            shape=(states.shape[0], self.n_chains, self.act_dim),
            context=states,
            temperature=self.temperature,
            deterministic=True,
        )
        self.last_result = result
        best = result.best()
        return best[0] if single else best

    def log_partition(
        self, states: Tensor, n: int = 1024, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """log Z(s) = log ∫_box exp(-E(s, a)/alpha) da by importance sampling with a uniform proposal.

        With a_i ~ U([-1, 1]^d): Z = 2^d E_U[exp(-E/alpha)], estimated by the sample mean (the
        soft value estimator of Haarnoja et al. 2017, eq. 10, with a uniform q). Returns
        ``(log_z, stderr)``, both ``(batch,)``; the standard error of log Z is the delta-method
        std(w)/(sqrt(n) mean(w)) of the importance weights w.
        """
        n = check_int("n", n, minimum=2)
        states, single = self._states(states)
        dim = self.act_dim
        a = torch.rand(
            (states.shape[0], n, dim), device=states.device, dtype=states.dtype, generator=generator
        )
        a = self.sampler.low + (self.sampler.high - self.sampler.low) * a
        log_w = -self.energy.energy(a, states) / self.temperature
        log_vol = dim * math.log(self.sampler.high - self.sampler.low)
        log_z = torch.logsumexp(log_w, dim=1) - math.log(n) + log_vol
        w = torch.exp(log_w - log_w.max(dim=1, keepdim=True).values)
        stderr = w.std(dim=1) / (math.sqrt(n) * w.mean(dim=1))
        return (log_z[0], stderr[0]) if single else (log_z, stderr)

    def soft_value(self, states: Tensor, n: int = 1024, generator: torch.Generator | None = None) -> Tensor:
        """V(s) = alpha log Z(s) = alpha log ∫ exp(Q(s, a)/alpha) da (the soft state value)."""
        log_z, _ = self.log_partition(states, n, generator)
        return self.temperature * log_z

    def reset_chains(self, mask: Tensor | None = None) -> None:
        """Restart the warm-started chains of all states, or of the rows where ``mask`` is True."""
        self.sampler.reset_chains(mask)
