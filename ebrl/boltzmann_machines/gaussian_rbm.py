"""Gaussian-Bernoulli restricted Boltzmann machine for real-valued data (Hinton & Salakhutdinov 2006)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import check_data, check_float, check_generator
from ._base import RBMBase
from ._ops import bernoulli

_MIN_SIGMA = 1e-3  # a constant column must not give sigma = 0


class GaussianBernoulliRBM(RBMBase):
    """RBM with Gaussian visible and binary hidden units.

    ``E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - c.h - sum_ij (v_i / sigma_i) W_ij h_j``, so
    ``p(h_j = 1 | v) = sigmoid(c_j + (v/sigma).W_j)`` and ``p(v_i | h) = N(b_i + sigma_i W_i.h,
    sigma_i^2)`` (Hinton 2010, guide §13.2; Cho, Ilin & Raiko 2011). ``sigma`` is fixed during
    training (learning it is unstable with CD); standardise the data or use ``sigma="std"``.

    Takes the arguments of :class:`RBM` (``method``, ``k``, ``n_chains``, ``learning_rate``,
    ``momentum``, ``weight_decay``, ``centering``, ``batch_size``, ``n_epochs``, ``device``,
    ``dtype``, ``progress``, ...) plus:

    Args:
        n_hidden: number of hidden units.
        n_visible: number of visible units; ``None`` takes it from the data at ``fit``.
        sigma: standard deviation of each visible unit given the hidden ones: a positive number,
            or ``"std"`` for the per-column standard deviation of the training data.
        learning_rate: default 0.005, an order of magnitude below the binary case, as Gaussian
            visible units make the reconstructions unbounded (guide §13.2).
    """

    _fit_values = _score_values = _transform_values = "real"

    def __init__(
        self, n_hidden: int, n_visible: int | None = None, *, sigma: float | str = 1.0, **kwargs: Any
    ) -> None:
        if isinstance(sigma, str) and sigma != "std":
            raise ValueError(f"sigma must be a positive number or 'std', got {sigma!r}")
        if sigma != "std":
            check_float("sigma", sigma, low=0.0, low_open=True)
        self.sigma_spec = sigma
        kwargs.setdefault("learning_rate", 0.005)
        super().__init__(n_hidden, n_visible, **kwargs)

    def _init_visible(self, n_visible: int, data: Tensor | None) -> None:
        kw = {"device": self.weight.device, "dtype": self.weight.dtype}
        b = torch.zeros(n_visible, **kw) if data is None else data.mean(0)
        self.visible_bias = nn.Parameter(b, requires_grad=False)
        if self.sigma_spec == "std" and data is not None and len(data) > 1:
            sigma = data.std(0).clamp_min(_MIN_SIGMA)
        else:
            sigma = torch.full(
                (n_visible,), 1.0 if self.sigma_spec == "std" else float(self.sigma_spec), **kw
            )
        self.register_buffer("sigma", sigma)

    def _visible_stat(self, v: Tensor) -> Tensor:
        return v / self.sigma

    def _visible_energy(self, v: Tensor) -> Tensor:
        return ((v - self.visible_bias) ** 2 / (2.0 * self.sigma**2)).sum(-1)

    def visible_mean(self, h: Tensor) -> Tensor:
        """``E[v | h] = b + sigma * (W h)``."""
        return self.visible_bias + self.sigma * (h @ self.weight.T)

    def log_visible_likelihood(self, v: Tensor, h: Tensor) -> Tensor:
        """``log p(v | h)``, the Gaussian log-density ``log N(v; b + sigma W h, sigma^2)``."""
        z = (v - self.visible_mean(h)) / self.sigma
        return -(0.5 * z**2 + torch.log(self.sigma) + 0.5 * math.log(2.0 * math.pi)).sum(-1)

    def _sample_visible_given_mean(self, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.sigma * noise

    def _bias_gradient(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        return (v_data.mean(0) - v_model.mean(0)) / self.sigma**2

    def _bias_shift(self, shift: Tensor) -> Tensor:
        # The coupling (v/sigma).W.lambda is linear in v; it moves the Gaussian's mean by sigma*W.lambda.
        return self.sigma * shift

    def _base_mean(self, data: Tensor | None = None) -> Tensor:
        if data is not None:
            return data.mean(0)
        return (self.data_mean if self.data_mean is not None else self.visible_bias).detach().clone()

    def _base_samples(self, n: int, generator: torch.Generator | None) -> Tensor:
        mean = self._base_mean().expand(n, -1)
        return self._sample_visible_given_mean(mean, generator)

    # ------------------------------------------------------------------ partition function
    def log_z_layers(self) -> dict[str, int]:
        """Only the hidden layer can be enumerated; the Gaussian visibles integrate out."""
        self._require_init()
        return {"hidden": self.n_hidden}

    def log_marginal(self, layer: str, states: Tensor) -> Tensor:
        """``log int exp(-E(v, h)) dv = c.h + sum_i [log sqrt(2 pi) sigma_i + b_i a_i / sigma_i + a_i^2 / 2]``
        with ``a = W h`` (completing the square in each ``v_i``)."""
        if layer != "hidden":
            raise ValueError(f"layer must be 'hidden' for a GaussianBernoulliRBM, got {layer!r}")
        W, b, c, sigma = (
            p.to(states.dtype) for p in (self.weight, self.visible_bias, self.hidden_bias, self.sigma)
        )
        a = states @ W.T
        const = (0.5 * math.log(2.0 * math.pi) + torch.log(sigma)).sum()
        return states @ c + const + (b * a / sigma + 0.5 * a**2).sum(-1)

    def ais_path(self, data: Tensor | None = None, dtype: torch.dtype | None = None) -> GaussianAISPath:
        """AIS path from ``p_A(v) = N(m, sigma^2)`` with ``m`` the data mean (or ``b``)."""
        self._require_init()
        dtype = dtype or self.dtype
        if data is not None:
            data, _ = check_data("data", data, n_features=self.n_visible, device=self.device, dtype=dtype)
        params = (self.weight, self.visible_bias, self.hidden_bias, self.sigma, self._base_mean(data))
        return GaussianAISPath(*params, dtype=dtype)


class GaussianAISPath:
    """``f_beta(v) = exp(-(1-beta) |v - m|^2_sigma / 2 - beta |v - b|^2_sigma / 2)
    prod_j (1 + exp(beta (c_j + (v/sigma).W_j)))`` with ``log Z_A = sum_i log(sqrt(2 pi) sigma_i)
    + n_hidden log 2``."""

    def __init__(
        self,
        weight: Tensor,
        visible_bias: Tensor,
        hidden_bias: Tensor,
        sigma: Tensor,
        base: Tensor,
        dtype: torch.dtype,
    ) -> None:
        tensors = (weight, visible_bias, hidden_bias, sigma, base)
        self.W, self.b, self.c, self.sigma, self.m = (t.detach().to(dtype) for t in tensors)
        self.state_size = self.W.shape[0]
        gauss = (0.5 * math.log(2.0 * math.pi) + torch.log(self.sigma)).sum()
        self.log_z_base = float(gauss) + self.W.shape[1] * math.log(2.0)

    def sample_base(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` exact draws of the base model p_A."""
        noise = torch.randn(
            (n, self.state_size), generator=generator, device=self.W.device, dtype=self.W.dtype
        )
        return self.m + self.sigma * noise

    def log_f(self, x: Tensor, betas: Tensor) -> Tensor:
        """log f_beta(v) with the hidden units summed out, at each beta in ``betas``."""
        quad_a = ((x - self.m) ** 2 / (2.0 * self.sigma**2)).sum(-1)
        quad_b = ((x - self.b) ** 2 / (2.0 * self.sigma**2)).sum(-1)
        pre = (x / self.sigma) @ self.W + self.c
        beta = betas[:, None]
        soft = nn.functional.softplus(beta[..., None] * pre).sum(-1)
        return -(1.0 - beta) * quad_a - beta * quad_b + soft

    def transition(
        self, x: Tensor, beta: Tensor, generator: torch.Generator | None, reverse: bool = False
    ) -> Tensor:
        """One block-Gibbs step (h | v, then v | h) leaving p_beta invariant."""
        check_generator("generator", generator)
        h = bernoulli(torch.sigmoid(beta * ((x / self.sigma) @ self.W + self.c)), generator=generator)
        mean = (1.0 - beta) * self.m + beta * (self.b + self.sigma * (h @ self.W.T))
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + self.sigma * noise
