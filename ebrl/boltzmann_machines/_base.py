"""Shared machinery of the restricted Boltzmann machines: parameters, energies, Gibbs sampling and the
scikit-learn-like API (training lives in ``_training.py``).

The energy is ``E(v, h) = E_vis(v) - s(v).W.h - c.h`` with ``s(v) = v`` for binary visibles and
``s(v) = v / sigma`` for Gaussian ones; subclasses supply the visible layer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..partition import ais_log_z, exact_log_z, small_batch_threads
from ._ops import bernoulli
from ._training import ContrastiveDivergenceMixin
from ._validation import (
    as_data,
    as_visible,
    check_bool,
    check_choice,
    check_float,
    check_generator,
    check_int,
    output_like,
    resolve_device,
    resolve_dtype,
)

EXACT_AUTO_MAX_UNITS = 20  # score_samples/log_partition enumerate up to 2**20 states, else AIS


class RBMBase(ContrastiveDivergenceMixin, nn.Module, ABC):
    """Base class of :class:`RBM` and :class:`GaussianBernoulliRBM` (see their docstrings)."""

    _fit_values = "binary"  # what fit accepts: "binary", "unit" or "real"

    def __init__(
        self,
        n_hidden: int,
        n_visible: int | None = None,
        *,
        method: str = "pcd",
        k: int = 1,
        n_chains: int = 100,
        learning_rate: float = 0.1,
        momentum: float = 0.9,
        initial_momentum: float = 0.5,
        momentum_warmup: int = 5,
        weight_decay: float = 1e-4,
        centering: bool = True,
        offset_rate: float = 0.01,
        batch_size: int = 32,
        n_epochs: int = 20,
        lr_schedule: str = "linear",
        init_std: float = 0.01,
        device: Any = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_hidden = check_int(n_hidden, "n_hidden")
        n_visible = None if n_visible is None else check_int(n_visible, "n_visible")
        self.method = check_choice(method, "method", ("cd", "pcd"))
        self.k = check_int(k, "k")
        self.n_chains = check_int(n_chains, "n_chains")
        self.learning_rate = check_float(learning_rate, "learning_rate", 0.0, math.inf, low_open=True)
        self.momentum = check_float(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.initial_momentum = check_float(initial_momentum, "initial_momentum", 0.0, 1.0, high_open=True)
        self.momentum_warmup = check_int(momentum_warmup, "momentum_warmup", minimum=0)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.centering = check_bool(centering, "centering")
        self.offset_rate = check_float(offset_rate, "offset_rate", 0.0, 1.0)
        self.batch_size = check_int(batch_size, "batch_size")
        self.n_epochs = check_int(n_epochs, "n_epochs")
        self.lr_schedule = check_choice(lr_schedule, "lr_schedule", ("constant", "linear"))
        self.init_std = check_float(init_std, "init_std", 0.0)
        self.progress = check_bool(progress, "progress")
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype)
        self._fixed_n_visible = n_visible
        check_generator(generator)
        for name in ("weight", "visible_bias", "hidden_bias"):
            self.register_parameter(name, None)
        # visible_offset/hidden_offset: the centring offsets mu, lambda (Melchior et al. 2016);
        # data_mean: the training data's base rates, for the AIS base model and sample starts.
        for name in ("visible_offset", "hidden_offset", "data_mean", "chains"):
            self.register_buffer(name, None)
        self._velocity: list[Tensor] = []
        self.history_: list[dict[str, float]] = []
        if n_visible is not None:
            self._initialize(n_visible, None, generator)

    # ----------------------------------------------------------------- layer-specific hooks
    @abstractmethod
    def _init_visible(self, n_visible: int, data: Tensor | None) -> None:
        """Set ``visible_bias`` (and any visible parameters) from the data, or to defaults."""

    @abstractmethod
    def _visible_stat(self, v: Tensor) -> Tensor:
        """``s(v)``, the visible term that couples to the hidden units."""

    @abstractmethod
    def _visible_energy(self, v: Tensor) -> Tensor:
        """``E_vis(v)``, the part of the energy that depends on ``v`` alone."""

    @abstractmethod
    def visible_mean(self, h: Tensor) -> Tensor:
        """``E[v | h]``: probabilities for binary visibles, the Gaussian mean otherwise."""

    @abstractmethod
    def _sample_visible_given_mean(self, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        """Visible states drawn around ``mean`` (Bernoulli or Gaussian)."""

    @abstractmethod
    def _bias_gradient(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        """``<dE/db>_model - <dE/db>_data`` for the visible bias."""

    def _bias_shift(self, shift: Tensor) -> Tensor:
        """How a change ``W lambda`` of the coupling moves the visible bias under centring."""
        return shift

    @abstractmethod
    def _base_samples(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Start states for ``sample``: draws from the base-rate (independent) model."""

    # -------------------------------------------------------------------------- properties
    @property
    def n_visible(self) -> int | None:
        """Number of visible units (``None`` until the model is initialised by ``fit``)."""
        return None if self.weight is None else self.weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self._device if self.weight is None else self.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self.weight is None else self.weight.dtype

    def _require_init(self) -> None:
        if self.weight is None:
            raise RuntimeError(
                f"{type(self).__name__} has no parameters yet: call fit(X) first or pass n_visible"
            )

    def _initialize(self, n_visible: int, data: Tensor | None, generator: torch.Generator | None) -> None:
        """(Re)create all parameters: W ~ N(0, init_std^2), hidden biases 0 (Hinton 2010, guide §8)."""
        kw = {"device": self._device if self.weight is None else self.device, "dtype": self.dtype}
        w = torch.randn(n_visible, self.n_hidden, generator=generator, **kw) * self.init_std
        self.weight = nn.Parameter(w, requires_grad=False)
        self.hidden_bias = nn.Parameter(torch.zeros(self.n_hidden, **kw), requires_grad=False)
        self.data_mean = None if data is None else data.mean(0)
        self._init_visible(n_visible, data)
        stat = None if data is None else self._visible_stat(data).mean(0)
        self.visible_offset = torch.zeros(n_visible, **kw) if stat is None else stat
        self.hidden_offset = torch.full((self.n_hidden,), 0.5, **kw)
        self.chains = None
        self._velocity = []

    # ------------------------------------------------------------------- energy functions
    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """Joint energy ``E(v, h)``, shape ``broadcast(v.shape[:-1], h.shape[:-1])``; lower = more likely."""
        self._require_init()
        v = as_visible(v, "v", self.n_visible, self.weight)
        h = as_visible(h, "h", self.n_hidden, self.weight, "n_hidden")
        coupling = ((self._visible_stat(v) @ self.weight) * h).sum(-1)
        return self._visible_energy(v) - coupling - h @ self.hidden_bias

    def free_energy(self, v: Tensor) -> Tensor:
        """Free energy ``F(v) = -log sum_h exp(-E(v, h))``, shape ``v.shape[:-1]``.

        ``log p(v) = -F(v) - log Z``; lower is more likely. Differentiable in ``v``.
        """
        self._require_init()
        v = as_visible(v, "v", self.n_visible, self.weight)
        pre = self._visible_stat(v) @ self.weight + self.hidden_bias
        return self._visible_energy(v) - nn.functional.softplus(pre).sum(-1)

    def forward(self, v: Tensor) -> Tensor:
        """Same as :meth:`free_energy`, so that the model is an energy of ``v``."""
        return self.free_energy(v)

    def hidden_probabilities(self, v: Tensor) -> Tensor:
        """``p(h_j = 1 | v) = sigmoid(c_j + s(v).W_j)``, shape ``(..., n_hidden)``."""
        self._require_init()
        v = as_visible(v, "v", self.n_visible, self.weight)
        return torch.sigmoid(self._visible_stat(v) @ self.weight + self.hidden_bias)

    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Run ``k`` block-Gibbs steps ``v -> h ~ p(h|v) -> v ~ p(v|h)`` and return the visible samples.

        Args:
            v: start states, shape ``(..., n_visible)``; not modified.
            k: number of block-Gibbs steps.
            generator: random source.
        """
        self._require_init()
        v = as_visible(v, "v", self.n_visible, self.weight)
        k = check_int(k, "k")
        check_generator(generator)
        with torch.no_grad(), small_batch_threads(v.numel()):
            for _ in range(k):
                h = bernoulli(self.hidden_probabilities(v), generator=generator)
                v = self._sample_visible_given_mean(self.visible_mean(h), generator)
        return v

    def mean_field_reconstruct(self, v: Tensor, n_steps: int = 1) -> Tensor:
        """Deterministic reconstruction ``E[v | h = p(h|v)]`` iterated ``n_steps`` times (denoising)."""
        self._require_init()
        v = as_visible(v, "v", self.n_visible, self.weight)
        for _ in range(check_int(n_steps, "n_steps")):
            v = self.visible_mean(self.hidden_probabilities(v))
        return v

    def sample(
        self,
        n: int,
        n_gibbs: int = 1000,
        generator: torch.Generator | None = None,
        return_mean: bool = False,
    ) -> Tensor:
        """Draw ``n`` visible samples by ``n_gibbs`` block-Gibbs steps from base-rate start states.

        Args:
            n: number of independent chains (samples).
            n_gibbs: Gibbs steps per chain.
            generator: random source.
            return_mean: return ``E[v | h]`` of the last step instead of a sample (smoother images).
        """
        self._require_init()
        n, n_gibbs = check_int(n, "n"), check_int(n_gibbs, "n_gibbs")
        check_bool(return_mean, "return_mean")
        check_generator(generator)
        with torch.no_grad():
            v = self._base_samples(n, generator)
            if n_gibbs > 1:
                v = self.gibbs(v, n_gibbs - 1, generator)
            mean = self.visible_mean(bernoulli(self.hidden_probabilities(v), generator=generator))
            return mean if return_mean else self._sample_visible_given_mean(mean, generator)

    # --------------------------------------------------------------- scikit-learn-like API
    def transform(self, X: Any) -> Tensor | np.ndarray:
        """Hidden probabilities ``p(h = 1 | v)`` of each row of ``X`` (features), same kind as ``X``."""
        self._require_init()
        values = "unit" if self._fit_values != "real" else "real"
        data, was_tensor = as_data(X, "X", self.n_visible, self.device, self.dtype, values)
        with torch.no_grad():
            return output_like(self.hidden_probabilities(data), was_tensor)

    def log_partition(self, method: str = "auto", **ais_kwargs: Any) -> float:
        """``log Z``: exact enumeration when the smaller layer has <= 20 units (``"auto"``), else AIS.

        Args:
            method: ``"auto"``, ``"exact"`` (:func:`ebrl.partition.exact_log_z`) or ``"ais"``
                (:func:`ebrl.partition.ais_log_z`).
            **ais_kwargs: passed to ``ais_log_z`` (``n_runs``, ``betas``, ``generator``, ...).
        """
        check_choice(method, "method", ("auto", "exact", "ais"))
        self._require_init()
        if method == "exact" or (
            method == "auto" and min(self.log_z_layers().values()) <= EXACT_AUTO_MAX_UNITS
        ):
            return exact_log_z(self)
        return ais_log_z(self, **ais_kwargs).log_z

    def score_samples(self, X: Any, log_z: float | None = None) -> Tensor | np.ndarray:
        """Log-likelihood ``log p(v) = -F(v) - log Z`` of each row of ``X`` (nats), same kind as ``X``.

        Args:
            X: data of shape ``(n_samples, n_visible)``.
            log_z: a known ``log Z``; ``None`` computes it with :meth:`log_partition` (exact when small).
        """
        self._require_init()
        values = "binary" if self._fit_values != "real" else "real"
        data, was_tensor = as_data(X, "X", self.n_visible, self.device, self.dtype, values)
        if log_z is not None:
            log_z = check_float(log_z, "log_z")
        log_z = self.log_partition() if log_z is None else log_z
        with torch.no_grad():
            return output_like(-self.free_energy(data) - log_z, was_tensor)

    def score(self, X: Any, log_z: float | None = None) -> float:
        """Mean log-likelihood of the rows of ``X`` (nats)."""
        return float(self.score_samples(X, log_z).mean())

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, method={self.method!r}, k={self.k}"
