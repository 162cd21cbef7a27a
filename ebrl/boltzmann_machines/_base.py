"""Shared machinery of the restricted Boltzmann machines: parameters, energies and Gibbs sampling (the
scikit-learn-like API lives in ``_estimator.py``, training in ``_training.py``).

The energy is ``E(v, h) = E_vis(v) - s(v).W.h - c.h`` with ``s(v) = v`` for binary visibles and
``s(v) = v / sigma`` for Gaussian ones; subclasses supply the visible layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ..partition import small_batch_threads
from ..samplers.gibbs import GibbsSampler
from ..validation import check_bool, check_choice, check_float, check_generator, check_int, check_units
from ._estimator import BoltzmannEstimator
from ._ops import bernoulli
from ._training import ContrastiveDivergenceMixin


class RBMBase(ContrastiveDivergenceMixin, BoltzmannEstimator, ABC):
    """Base class of :class:`RBM` and :class:`GaussianBernoulliRBM` (see their docstrings)."""

    # One line per topic (sampling, optimiser, centring, passes over the data, set-up); every
    # argument after ``*`` is keyword-only, so the grouping is layout alone.
    def __init__(
        self,
        n_hidden: int,
        n_visible: int | None = None,
        *,
        method: str = "pcd", k: int = 1, n_chains: int = 100,
        learning_rate: float = 0.1, momentum: float = 0.9, initial_momentum: float = 0.5,
        momentum_warmup: int = 5, weight_decay: float = 1e-4, lr_schedule: str = "linear",
        centering: bool = True, offset_rate: float = 0.01,
        batch_size: int = 32, n_epochs: int = 20,
        init_std: float = 0.01, device: Any = None, dtype: torch.dtype = torch.float32,
        progress: bool = False, generator: torch.Generator | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_hidden = check_int("n_hidden", n_hidden, minimum=1)
        n_visible = None if n_visible is None else check_int("n_visible", n_visible, minimum=1)
        self.method = check_choice("method", method, ("cd", "pcd"))
        self.k = check_int("k", k, minimum=1)
        self.initial_momentum = check_float(
            "initial_momentum", initial_momentum, low=0.0, high=1.0, high_open=True
        )
        self.momentum_warmup = check_int("momentum_warmup", momentum_warmup, minimum=0)
        self.centering = check_bool("centering", centering)
        self.offset_rate = check_float("offset_rate", offset_rate, low=0.0, high=1.0)
        self.lr_schedule = check_choice("lr_schedule", lr_schedule, ("constant", "linear"))
        self._device, self._dtype = self._set_training_args(
            n_chains, learning_rate, momentum, weight_decay, batch_size, n_epochs, init_std, progress,
            device, dtype, generator,
        )  # fmt: skip
        self._fixed_n_visible = n_visible
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

    def _initialized(self) -> bool:
        return self.weight is not None

    def _reset(self, data: Tensor, generator: torch.Generator | None) -> None:
        self._initialize(data.shape[1], data, generator)

    def _features(self, data: Tensor) -> Tensor:
        return self.hidden_probabilities(data)

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
        v = check_units("v", v, size=self.n_visible, like=self.weight)
        h = check_units("h", h, size=self.n_hidden, like=self.weight, size_name="n_hidden")
        coupling = ((self._visible_stat(v) @ self.weight) * h).sum(-1)
        return self._visible_energy(v) - coupling - h @ self.hidden_bias

    def free_energy(self, v: Tensor) -> Tensor:
        """Free energy ``F(v) = -log sum_h exp(-E(v, h))``, shape ``v.shape[:-1]``.

        ``log p(v) = -F(v) - log Z``; lower is more likely. Differentiable in ``v``.
        """
        self._require_init()
        return self.chain_energy(check_units("v", v, size=self.n_visible, like=self.weight))

    def chain_energy(self, v: Tensor) -> Tensor:
        """``F(v)`` of checked visible states: the energy the block-Gibbs chain on ``v`` samples."""
        pre = self._visible_stat(v) @ self.weight + self.hidden_bias
        return self._visible_energy(v) - nn.functional.softplus(pre).sum(-1)

    def forward(self, v: Tensor) -> Tensor:
        """Same as :meth:`free_energy`, so that the model is an energy of ``v``."""
        return self.free_energy(v)

    def hidden_probabilities(self, v: Tensor) -> Tensor:
        """``p(h_j = 1 | v) = sigmoid(c_j + s(v).W_j)``, shape ``(..., n_hidden)``."""
        self._require_init()
        v = check_units("v", v, size=self.n_visible, like=self.weight)
        return torch.sigmoid(self._visible_stat(v) @ self.weight + self.hidden_bias)

    def gibbs_sweep(self, v: Tensor, generator: torch.Generator | None) -> Tensor:
        """One block-Gibbs step ``h ~ p(h | v)``, ``v ~ p(v | h)`` of visible states ``(n, n_visible)``
        (the kernel of :class:`ebrl.samplers.GibbsSampler`; no argument checks)."""
        h = bernoulli(
            torch.sigmoid(torch.addmm(self.hidden_bias, self._visible_stat(v), self.weight)), generator
        )
        return self._sample_visible_given_mean(self.visible_mean(h), generator)

    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Run ``k`` block-Gibbs steps ``v -> h ~ p(h|v) -> v ~ p(v|h)`` and return the visible samples.

        Args:
            v: start states, shape ``(..., n_visible)``; not modified.
            k: number of block-Gibbs steps.
            generator: random source.
        """
        self._require_init()
        v = check_units("v", v, size=self.n_visible, like=self.weight)
        k = check_int("k", k, minimum=1)
        check_generator("generator", generator)
        with small_batch_threads(v.numel()):
            result = GibbsSampler(k).run_chains(self, v.reshape(-1, self.n_visible), generator)
        return result.samples[0].reshape(v.shape)

    def mean_field_reconstruct(self, v: Tensor, n_steps: int = 1) -> Tensor:
        """Deterministic reconstruction ``E[v | h = p(h|v)]`` iterated ``n_steps`` times (denoising)."""
        self._require_init()
        v = check_units("v", v, size=self.n_visible, like=self.weight)
        for _ in range(check_int("n_steps", n_steps, minimum=1)):
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
        n, n_gibbs = check_int("n", n, minimum=1), check_int("n_gibbs", n_gibbs, minimum=1)
        check_bool("return_mean", return_mean)
        check_generator("generator", generator)
        with torch.no_grad(), small_batch_threads(n * self.n_visible):
            v = self._base_samples(n, generator)
            if n_gibbs > 1:
                v = GibbsSampler(n_gibbs - 1).run_chains(self, v, generator).samples[0]
            mean = self.visible_mean(bernoulli(self.hidden_probabilities(v), generator=generator))
            return mean if return_mean else self._sample_visible_given_mean(mean, generator)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, method={self.method!r}, k={self.k}"
