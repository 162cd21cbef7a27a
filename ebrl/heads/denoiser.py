"""Denoiser head: the Tweedie step for score-matched energies, MAP energy descent otherwise."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ebrl.heads._protocol import EnergyLike, EnergyView, as_energy, check_sigma, input_grad, noise_context
from ebrl.validation import check_choice, check_finite, check_int, check_positive_float


class Denoiser:
    """Estimate clean x from x_noisy = x + sigma * xi, xi ~ N(0, I).

    ``method="tweedie"``: x_hat = x_noisy - sigma^2 ∇E(x_noisy). If -∇E is the score of the
    *noisy* density p_sigma (what denoising score matching at level sigma learns, Vincent 2011),
    this is the posterior mean E[x | x_noisy], the one-step MMSE denoiser (Tweedie's formula,
    Efron 2011).

    ``method="descent"``: for energies of the *clean* density (e.g. trained by contrastive
    divergence) the MAP estimate argmin_x E(x) + |x - x_noisy|^2 / (2 sigma^2), by ``n_steps``
    of gradient descent with step ``step_scale * sigma^2`` (the quadratic term's curvature is
    1/sigma^2, so this step is stable for any sigma).

    Args:
        energy: an ``Energy``, an object with ``free_energy(v)``, a callable, or an ensemble.
        method: ``"tweedie"`` or ``"descent"``.
        noise_conditional: the energy takes log sigma as (the last entry of) its context, as
            trained by ``DenoisingScoreMatching(noise_conditional=True)`` (Song & Ermon 2019).
        n_steps: descent steps (``method="descent"``).
        step_scale: descent step in units of sigma^2, in (0, 1].
        clip: optional box (low, high) the estimate is clipped to (e.g. (0, 1) for images).
    """

    def __init__(
        self,
        energy: EnergyLike,
        method: str = "tweedie",
        *,
        noise_conditional: bool = False,
        n_steps: int = 50,
        step_scale: float = 0.2,
        clip: Sequence[float] | None = None,
    ) -> None:
        self.view: EnergyView = as_energy(energy)
        self.method = check_choice("method", method, ["tweedie", "descent"])
        self.noise_conditional = bool(noise_conditional)
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        self.step_scale = check_positive_float("step_scale", step_scale)
        if self.step_scale > 1:
            raise ValueError(f"step_scale must lie in (0, 1], got {step_scale!r}")
        if clip is not None and not (len(clip) == 2 and float(clip[0]) < float(clip[1])):
            raise ValueError(f"clip must be None or a pair (low, high) with low < high, got {clip!r}")
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def denoise(self, x_noisy: Tensor, sigma: float, context: Tensor | None = None) -> Tensor:
        """Denoise ``x_noisy`` (``(..., dim)``; not modified) observed at noise level ``sigma`` > 0
        (the std of the Gaussian corruption); ``context`` is the energy's own context, if any."""
        sigma = check_sigma(sigma)
        x_noisy = self.view.check_x("x_noisy", x_noisy)
        check_finite("x_noisy", x_noisy)
        if self.noise_conditional:
            s = torch.full(x_noisy.shape[:-1], sigma, device=x_noisy.device, dtype=x_noisy.dtype)
            context = noise_context(s, context)
        fn = self.view.condition(context)
        s2 = sigma**2
        if self.method == "tweedie":
            _, g = input_grad(fn, x_noisy)
            out = x_noisy - s2 * g
        else:
            out, eta = x_noisy.detach().clone(), self.step_scale * s2
            for _ in range(self.n_steps):
                _, g = input_grad(fn, out)
                out = out - eta * (g + (out - x_noisy) / s2)
        out = out.detach()
        return out if self.clip is None else out.clamp(*self.clip)
