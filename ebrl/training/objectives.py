"""Training objectives for energies of data x (optionally conditioned on c).

Each objective's :meth:`loss` returns named terms (TorchRL style): ``"loss"`` is what is
minimised, the rest are tensors for logging. :func:`ebrl.training.fit` runs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.errors import NonFiniteError
from ebrl.heads._protocol import EnergyLike, EnergyView, as_energy, check_sigma, input_grad, noise_context
from ebrl.samplers import Langevin, Sampler
from ebrl.validation import check_fraction, check_int, check_positive_float

Terms = dict[str, Tensor]
Generator = torch.Generator | None


class EnergyObjective(ABC):
    """Base of the objectives: :meth:`loss` views any energy-like model (an ``Energy``, a model
    with a free energy, a callable, an ensemble) as an energy and computes the terms on it."""

    diagnostics: dict[str, float]

    def loss(
        self, energy: EnergyLike, x: Tensor, context: Tensor | None = None, generator: Generator = None
    ) -> Terms:
        """Named terms for one batch of data ``x`` ``(batch, dim)`` with optional ``context``
        ``(batch, c)``: ``"loss"`` is minimised, the rest are for logging; ``generator`` drives any
        sampling and noise."""
        return self._terms(as_energy(energy), x, context, generator)

    @abstractmethod
    def _terms(self, view: EnergyView, x: Tensor, context: Tensor | None, generator: Generator) -> Terms:
        """The terms on the energy view (what each objective defines)."""


class ContrastiveDivergence(EnergyObjective):
    """Persistent contrastive divergence for deep energies (Du & Mordatch 2019; Grathwohl 2019).

    The maximum-likelihood gradient of p ∝ exp(-E) is E_data[∇θE] - E_model[∇θE]; the model
    expectation uses negatives drawn by a short MCMC run started from a replay buffer of past
    chains (persistent chains, Tieleman 2008), each restarted from uniform noise with probability
    ``reinit_prob`` (Du & Mordatch: 5 %) so that the buffer keeps exploring.

    loss = mean E(x+) - mean E(x-) + l2_reg * mean(E(x+)^2 + E(x-)^2) + grad_penalty * GP,
    with GP = mean max(0, |∇x E(x-)|_inf - 1)^2 (Implicit BC, Florence et al. 2021, App. B).

    Divergence guard: if any energy is NaN/inf or exceeds ``max_energy`` in magnitude, :meth:`loss`
    raises :class:`~ebrl.errors.NonFiniteError` before anything is updated; :func:`fit` then
    restores the last good parameters and optimiser state and re-raises with the step.

    Args:
        sampler: the core sampler for negatives (default: Langevin, 20 steps, step 1e-2, noise
            scale 0.01 on [-1, 1]: Du & Mordatch's "cooled" short-run chains). Its box is the
            support of the model: choose it to cover the (standardised) data.
        buffer_size: number of persistent chains kept (Du & Mordatch: 10 000).
        reinit_prob: probability that a negative restarts from uniform noise (about 0.05).
        l2_reg: alpha, the weight of the L2 energy regulariser (Du & Mordatch: 0.1-1).
        grad_penalty: weight of the gradient penalty (0 disables it).
        max_energy: the guard's threshold on |E|.
    """

    def __init__(
        self,
        sampler: Sampler | None = None,
        *,
        buffer_size: int = 10_000,
        reinit_prob: float = 0.05,
        l2_reg: float = 0.1,
        grad_penalty: float = 0.0,
        max_energy: float = 1e4,
    ) -> None:
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be an ebrl Sampler or None, got {type(sampler).__name__}")
        if sampler is None:
            sampler = Langevin(n_steps=20, step_size=1e-2, noise_scale=0.01)
        self.sampler = sampler
        self.buffer_size = check_int("buffer_size", buffer_size, minimum=1)
        self.reinit_prob = check_positive_float("reinit_prob", reinit_prob, allow_zero=True)
        if self.reinit_prob > 0:
            check_fraction("reinit_prob", reinit_prob)
        self.l2_reg = check_positive_float("l2_reg", l2_reg, allow_zero=True)
        self.grad_penalty = check_positive_float("grad_penalty", grad_penalty, allow_zero=True)
        self.max_energy = check_positive_float("max_energy", max_energy)
        self.buffer: Tensor | None = None
        self.diagnostics: dict[str, float] = {}

    def _draw_init(self, n: int, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Indices into the buffer and the chains' starting points (n, dim)."""
        dim = x.shape[-1]
        if self.buffer is None or self.buffer.shape[-1] != dim:
            self.buffer = self.sampler.uniform((self.buffer_size, dim), x.device, x.dtype, generator)
        idx = torch.randint(self.buffer_size, (n,), device=x.device, generator=generator)
        fresh = self.sampler.uniform((n, dim), x.device, x.dtype, generator)
        restart = torch.rand((n, 1), device=x.device, dtype=x.dtype, generator=generator) < self.reinit_prob
        return idx, torch.where(restart, fresh, self.buffer[idx])

    def _terms(self, view: EnergyView, x: Tensor, context: Tensor | None, generator: Generator) -> Terms:
        # x are the positives; the negatives are sampled under the same contexts.
        idx, x0 = self._draw_init(x.shape[0], x, generator)
        result = self.sampler.sample(view.condition(context), x0[:, None], generator=generator)
        x_neg = result.samples[:, 0].detach()
        self.buffer[idx] = x_neg
        self.diagnostics = result.diagnostics()
        e_pos = view.energy(x, context)
        if self.grad_penalty > 0:
            e_neg, g_neg = input_grad(lambda z: view.energy(z, context), x_neg, create_graph=True)
            gp = (g_neg.abs().amax(dim=-1) - 1.0).clamp_min(0.0).pow(2).mean()
        else:
            e_neg, gp = view.energy(x_neg, context), x.new_zeros(())
        for name, e in (("energy of the data (positives)", e_pos), ("energy of the negatives", e_neg)):
            worst = e.detach().abs().max()
            if not bool(torch.isfinite(worst)) or float(worst) > self.max_energy:
                raise NonFiniteError(
                    f"contrastive divergence diverged: the {name} reached |E| = {float(worst):.3g} "
                    f"(max_energy={self.max_energy:g}); raise l2_reg, lower the learning rate or use "
                    "spectral_norm"
                )
        l2 = (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        cd = e_pos.mean() - e_neg.mean()
        loss = cd + self.l2_reg * l2 + self.grad_penalty * gp
        return {"loss": loss, "loss_cd": cd.detach(), "energy_pos": e_pos.detach().mean(),
                "energy_neg": e_neg.detach().mean(), "l2": l2.detach(), "grad_penalty": gp.detach()}


class DenoisingScoreMatching(EnergyObjective):
    """Denoising score matching (Vincent 2011) at one or several noise levels.

    With x_noisy = x + sigma xi, the optimal -∇E(x_noisy) is the score of the noisy density,
    whose regression target is -xi/sigma. Each row draws its sigma uniformly from ``sigmas``; the
    per-level loss is weighted by sigma^2 (Song & Ermon 2019), so every level contributes
    equally: loss = 1/2 mean |sigma ∇E(x_noisy) - xi|^2. The trained energy then denoises by
    Tweedie's formula x_hat = x_noisy - sigma^2 ∇E(x_noisy) (:class:`~ebrl.heads.Denoiser`).

    Args:
        sigmas: one noise level sigma > 0 or a sequence of them.
        noise_conditional: the energy is E(x | c, sigma): log sigma is appended to the context
            (the energy needs ``context_dim`` one larger; NCSN, Song & Ermon 2019). Otherwise one
            energy serves all levels.
    """

    def __init__(self, sigmas: float | Sequence[float] = 0.1, *, noise_conditional: bool = False) -> None:
        levels = [sigmas] if not isinstance(sigmas, Sequence) else list(sigmas)
        if not levels:
            raise ValueError("sigmas must hold at least one noise level, got []")
        self.sigmas = [check_sigma(s, "sigmas") for s in levels]
        self.noise_conditional = bool(noise_conditional)
        self.diagnostics: dict[str, float] = {}

    def _terms(self, view: EnergyView, x: Tensor, context: Tensor | None, generator: Generator) -> Terms:
        levels = torch.tensor(self.sigmas, device=x.device, dtype=x.dtype)
        sigma = levels[torch.randint(len(self.sigmas), (x.shape[0],), device=x.device, generator=generator)]
        xi = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        x_noisy = x + sigma[:, None] * xi
        ctx = noise_context(sigma, context) if self.noise_conditional else context
        # Not view.condition: that may detach the context's share (StateActionEnergy), and here
        # every parameter must receive its gradient.
        e, g = input_grad(lambda z: view.energy(z, ctx), x_noisy, create_graph=True)
        loss = 0.5 * (sigma[:, None] * g - xi).pow(2).sum(-1).mean()
        return {"loss": loss, "energy": e.detach().mean(), "score_norm": g.detach().norm(dim=-1).mean()}
