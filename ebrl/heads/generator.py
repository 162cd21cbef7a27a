"""Generator head: samples of p(x | c) ∝ exp(-E(x | c)/T) by the core MCMC samplers, and annealed
Langevin with a final Tweedie step for noise-conditional energies."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.energies import Energy
from ebrl.heads._protocol import (
    EnergyFn,
    EnergyLike,
    EnergyView,
    as_energy,
    check_sigma,
    input_grad,
    noise_context,
)
from ebrl.samplers import Langevin, Sampler, SampleResult
from ebrl.validation import check_finite, check_fraction, check_int, check_positive_float, check_tensor


class Generator:
    """Draw x ~ p(x | c) ∝ exp(-E(x | c)/T) from any energy.

    Chains start uniform on the sampler's box (or at ``init``), run ``burn_in`` discarded sampler
    calls, and then one sample per chain is kept every ``thin`` sampler calls until ``n`` samples
    are collected (each sampler call is ``sampler.n_steps`` MCMC steps). With ``n_chains=None``
    every sample is its own chain (all drawn in parallel, the usual choice for deep energies:
    independent short-run chains, Nijkamp et al. 2019).

    An energy without gradients but with its own ``sample(n, ...)`` method (a Boltzmann machine
    with Gibbs sampling) is sampled by that method when no ``sampler`` is given.

    Args:
        energy: an ``Energy``, an object with ``free_energy(v)``, a callable, or an ensemble.
        sampler: any core :class:`~ebrl.samplers.Sampler` (default: Langevin, 100 steps,
            step 1e-2, on ``bounds``). Its box is the support of the samples.
        bounds: the box of the default sampler (ignored when ``sampler`` is given).
        n_chains: chains per context (None: one chain per requested sample).
        burn_in: sampler calls discarded before the first sample is kept.
        thin: sampler calls between two kept samples of the same chain.
        temperature: T; 1 samples the model, < 1 sharpens it.
        x_dim: dimension of x, for energies that do not say it (plain callables).
    """

    def __init__(
        self,
        energy: EnergyLike,
        sampler: Sampler | None = None,
        *,
        bounds: Sequence[float] = (-1.0, 1.0),
        n_chains: int | None = None,
        burn_in: int = 0,
        thin: int = 1,
        temperature: float = 1.0,
        x_dim: int | None = None,
    ) -> None:
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be an ebrl Sampler or None, got {type(sampler).__name__}")
        self.view: EnergyView = as_energy(energy)
        # A Boltzmann machine (binary units, no useful input gradient) brings its own Gibbs sampler.
        self.own_sampler = (
            sampler is None and not isinstance(energy, Energy) and callable(getattr(energy, "sample", None))
        )
        if sampler is None:
            sampler = Langevin(n_steps=100, step_size=1e-2, bounds=bounds)
        self.sampler = sampler
        self.n_chains = None if n_chains is None else check_int("n_chains", n_chains, minimum=1)
        self.burn_in = check_int("burn_in", burn_in, minimum=0)
        self.thin = check_int("thin", thin, minimum=1)
        self.temperature = check_positive_float("temperature", temperature)
        if x_dim is not None:
            self.view.x_dim = check_int("x_dim", x_dim, minimum=1)
        self.last_result: SampleResult | None = None

    def sample(
        self,
        n: int,
        context: Tensor | None = None,
        *,
        init: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n`` samples.

        Args:
            n: number of samples per context.
            context: None, one context ``(c,)``, or a batch ``(batch, c)`` (e.g. one-hot labels).
            init: optional starting points ``(batch, chains, dim)`` inside the sampler's box.
            generator: random generator (same seed, same samples on CPU).

        Returns:
            ``(n, dim)`` for no or one context, ``(batch, n, dim)`` for a batch of contexts.
        """
        n = check_int("n", n, minimum=1)
        if self.own_sampler:
            if context is not None:
                raise ValueError("context must be None when sampling with the model's own sample()")
            return self.view.model.sample(n, generator=generator)
        dim = self.view.x_dim
        if dim is None:
            if init is None:
                raise ValueError("init is required: this energy does not say its x_dim (or n_visible)")
            dim = init.shape[-1]
        single = True
        if context is not None:
            check_tensor("context", context, last_dim=self.view.context_dim or None)
            if context.dim() > 2:
                raise ValueError(f"context must have shape (c,) or (batch, c), got {tuple(context.shape)}")
            single = context.dim() == 1
            context = context.reshape(-1, context.shape[-1])
        batch = 1 if context is None else context.shape[0]
        chains = n if self.n_chains is None else min(self.n_chains, n)
        view, sampler = self.view, self.sampler
        energy_fn = view.condition(context)
        if init is None:
            x = sampler.uniform((batch, chains, dim), view.device, view.dtype, generator)
        else:
            check_tensor("init", init, last_dim=dim)
            if tuple(init.shape) != (batch, chains, dim):
                raise ValueError(f"init must have shape {(batch, chains, dim)}, got {tuple(init.shape)}")
            x = init
        kept: list[Tensor] = []
        for r in range(math.ceil(n / chains)):
            for _ in range(self.burn_in + 1 if r == 0 else self.thin):
                self.last_result = sampler.sample(
                    energy_fn, x, temperature=self.temperature, generator=generator
                )
                x = self.last_result.samples
            kept.append(x)
        out = torch.cat(kept, dim=1)[:, :n].detach()
        return out[0] if single else out


def annealed_langevin(
    energy: EnergyLike,
    init: Tensor,
    sigmas: Sequence[float],
    *,
    context: Tensor | None = None,
    n_steps: int = 30,
    step_scale: float = 0.2,
    bounds: Sequence[float] = (-1.0, 2.0),
    denoise: bool = True,
    clip: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Annealed Langevin dynamics on a noise-conditional energy E(x | c, sigma) (Song & Ermon 2019,
    "NCSN"), ending with a Tweedie denoising step.

    For each level sigma_i, from the largest to the smallest, ``n_steps`` Langevin steps with step
    eta_i = ``step_scale`` * sigma_i^2 run on E(x | c, sigma_i), the energy of the data blurred by
    noise of std sigma_i (as trained by ``DenoisingScoreMatching(noise_conditional=True)``); each
    level starts where the previous one ended. With ``denoise``, the last level's noise is then
    removed by Tweedie's formula x - sigma_L^2 ∇E(x | c, sigma_L), the posterior mean E[x | x_L]
    (the final denoising step of Jolicoeur-Martineau et al. 2021).

    Args:
        energy: a noise-conditional energy whose context is [c, log sigma] (e.g.
            ``GaussianResidualEnergy``), or a callable ``fn(x, context)`` of that form.
        init: starting points x_0, ``(n, dim)``, e.g. draws of a Gaussian base blurred at sigma_0
            (clamped into ``bounds``).
        sigmas: the noise levels sigma_0 > sigma_1 > ... > sigma_L > 0.
        context: c, one context ``(c,)`` shared by every chain (e.g. a one-hot class), or None.
        n_steps: Langevin steps per level (T in NCSN).
        step_scale: eta_i / sigma_i^2, in (0, 1] (NCSN's epsilon / sigma_L^2). The smoothed
            density's curvature is at most about 1/sigma_i^2, so the step stays below it.
        bounds: the box (low, high) the chains reflect in.
        denoise: end with the Tweedie step at sigma_L.
        clip: optional box (low, high) the returned samples are clipped to (e.g. (0, 1) for images).
        generator: random generator (same seed, same samples on CPU).

    Returns:
        The samples, ``(n, dim)``.
    """
    view = as_energy(energy)
    levels = [check_sigma(s, "sigmas") for s in sigmas]
    if not levels or any(b >= a for a, b in itertools.pairwise(levels)):
        raise ValueError(f"sigmas must be a non-empty, strictly decreasing sequence, got {list(sigmas)!r}")
    n_steps = check_int("n_steps", n_steps, minimum=1)
    step_scale = check_fraction("step_scale", step_scale, allow_none=False)
    init = view.check_x("init", init)
    if init.dim() != 2:
        raise ValueError(f"init must have shape (n, dim), got {tuple(init.shape)}")
    check_finite("init", init)
    if context is not None:
        context = check_tensor("context", context, last_dim=max(view.context_dim - 1, 0) or None)
        if context.dim() != 1:
            raise ValueError(f"context must have shape (c,), got {tuple(context.shape)}")
    for name, box in (("bounds", bounds), ("clip", clip)):
        if box is not None and not (len(box) == 2 and float(box[0]) < float(box[1])):
            raise ValueError(f"{name} must be a pair (low, high) with low < high, got {box!r}")
    # The samplers run (batch, chains, dim): one batch row, every sample its own chain.
    x = init.to(view.device, view.dtype).clamp(float(bounds[0]), float(bounds[1]))[None]
    for sigma in levels:
        sampler = Langevin(n_steps=n_steps, step_size=step_scale * sigma**2, bounds=bounds)
        x = sampler.sample(_at_level(view, sigma, context), x, generator=generator).samples
    x = x[0].detach()
    if denoise:
        _, g = input_grad(_at_level(view, levels[-1], context), x)
        x = (x - levels[-1] ** 2 * g).detach()
    return x if clip is None else x.clamp(float(clip[0]), float(clip[1]))


def _at_level(view: EnergyView, sigma: float, context: Tensor | None) -> EnergyFn:
    """x -> E(x | c, sigma) at one noise level: the context [c, log sigma] broadcast over x."""

    def fn(x: Tensor) -> Tensor:
        s = torch.full(x.shape[:-1], sigma, device=x.device, dtype=x.dtype)
        c = None if context is None else context.to(x.device, x.dtype).expand(*x.shape[:-1], -1)
        return view.energy(x, noise_context(s, c))

    return fn
