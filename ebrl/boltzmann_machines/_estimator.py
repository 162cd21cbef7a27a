"""What every Boltzmann machine shares: the training hyperparameters, the scikit-learn-like API
(``fit``, ``partial_fit``, ``transform``, ``score_samples``, ``score``, ``log_partition``), the
free energy as an :class:`ebrl.Energy`, and the pieces of the PCD loop (shuffling, chain starts,
progress bar). Each model supplies its layer-specific hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..energies import Energy
from ..partition import ais_log_z, exact_log_z
from ..validation import (
    check_bool,
    check_choice,
    check_data,
    check_device,
    check_float,
    check_float_dtype,
    check_generator,
    check_int,
)

EXACT_AUTO_MAX_UNITS = 20  # score_samples/log_partition enumerate up to 2**20 states, else AIS


def output_like(result: Tensor, was_tensor: bool) -> Tensor | np.ndarray:
    """Return a tensor for tensor input and a numpy array otherwise (scikit-learn style)."""
    return result if was_tensor else result.detach().cpu().numpy()


class FreeEnergy(Energy):
    """A Boltzmann machine's free energy ``F(v)`` as an :class:`ebrl.Energy` over visible states.

    ``F(v) = -log sum_h exp(-E(v, h))`` (hidden units summed out), so ``p(v) = exp(-F(v)) / Z``:
    any sampler, head or objective of :mod:`ebrl` that takes an Energy takes a Boltzmann machine
    this way. The machines are not Energies themselves because their ``energy(v, h)`` is the joint
    energy, where an Energy's ``energy(x, context)`` is the energy of ``x`` alone.

    Args:
        model: the Boltzmann machine (registered as a submodule: parameters, device and dtype are
            its own, and it is not copied).
    """

    def __init__(self, model: BoltzmannEstimator) -> None:
        super().__init__()
        model._require_init()
        self.model = model
        self.x_dim = int(model.n_visible)
        self.context_dim = 0

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``F(x)`` of visible states ``x`` ``(..., n_visible)``, shape ``x.shape[:-1]``."""
        if context is not None:
            raise ValueError("context must be None: a Boltzmann machine's free energy is unconditional")
        return self.model.free_energy(x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x, context)


class BoltzmannEstimator(nn.Module, ABC):
    """Base class of :class:`RBM`, :class:`GaussianBernoulliRBM` and :class:`BoltzmannMachine`."""

    _score_values = "binary"  # what score_samples accepts: "binary" or "real"
    _transform_values = "unit"  # what transform accepts: "unit" or "real"
    _fit_values = "binary"  # what fit accepts: "binary", "unit" or "real"
    _fixed_n_visible: int | None  # the number of visible units fit requires (None: any)
    n_visible: int | None

    def _set_training_args(
        self,
        n_chains: int,
        learning_rate: float,
        momentum: float,
        weight_decay: float,
        batch_size: int,
        n_epochs: int,
        init_std: float,
        progress: bool,
        device: Any,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> tuple[torch.device, torch.dtype]:
        """Check and store the hyperparameters every model has (see the models' docstrings);
        returns the resolved device and dtype."""
        self.n_chains = check_int("n_chains", n_chains, minimum=1)
        self.learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_open=True)
        self.momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.n_epochs = check_int("n_epochs", n_epochs, minimum=1)
        self.init_std = check_float("init_std", init_std, low=0.0)
        self.progress = check_bool("progress", progress)
        check_generator("generator", generator)
        return check_device("device", device), check_float_dtype("dtype", dtype)

    # ----------------------------------------------------------------- model-specific hooks
    def _require_init(self) -> None:
        """Raise unless the parameters exist (models created without a size get them in ``fit``)."""

    def _initialized(self) -> bool:
        return True

    @abstractmethod
    def _reset(self, data: Tensor, generator: torch.Generator | None) -> None:
        """(Re)initialise all parameters and chains from the training data."""

    @abstractmethod
    def _train(self, data: Tensor, n_epochs: int, generator: torch.Generator | None, schedule: bool) -> None:
        """Train ``n_epochs`` epochs (``schedule``: apply the learning-rate schedule of ``fit``)."""

    @abstractmethod
    def _features(self, data: Tensor) -> Tensor:
        """What :meth:`transform` returns for checked data: hidden (mean-field) probabilities."""

    @abstractmethod
    def free_energy(self, v: Tensor) -> Tensor:
        """Free energy ``F(v)``, shape ``v.shape[:-1]`` (see the models)."""

    @abstractmethod
    def log_z_layers(self) -> dict[str, int]:
        """Layers whose states :func:`ebrl.partition.exact_log_z` can enumerate (see the models)."""

    # --------------------------------------------------------------- scikit-learn-like API
    def fit(self, X: Any, generator: torch.Generator | None = None) -> Any:
        """Initialise the model from ``X`` and train it for ``n_epochs`` epochs; returns ``self``.

        Args:
            X: training data of shape ``(n_samples, n_visible)``.
            generator: random source for the initial weights, shuffling and Gibbs sampling.
        """
        data, _ = check_data(
            "X",
            X,
            n_features=self._fixed_n_visible,
            device=self.device,
            dtype=self.dtype,
            values=self._fit_values,
        )
        check_generator("generator", generator)
        self._reset(data, generator)
        self.history_ = []
        self._train(data, self.n_epochs, generator, schedule=True)
        return self

    def partial_fit(self, X: Any, generator: torch.Generator | None = None) -> Any:
        """Train one more epoch on ``X`` (initialising from ``X`` first if needed); returns ``self``."""
        n_features = self.n_visible if self._initialized() else self._fixed_n_visible
        data, _ = check_data(
            "X", X, n_features=n_features, device=self.device, dtype=self.dtype, values=self._fit_values
        )
        check_generator("generator", generator)
        if not self._initialized():
            self._reset(data, generator)
        self._train(data, 1, generator, schedule=False)
        return self

    def transform(self, X: Any) -> Tensor | np.ndarray:
        """Hidden probabilities ``p(h = 1 | v)`` (mean-field ones where hidden units interact) of each
        row of ``X`` (features), same kind as ``X``."""
        self._require_init()
        data, was_tensor = self._check_rows(X, self._transform_values)
        with torch.no_grad():
            return output_like(self._features(data), was_tensor)

    def log_partition(self, method: str = "auto", **ais_kwargs: Any) -> float:
        """``log Z``: exact enumeration when some enumerable layer has <= 20 units (``"auto"``), else AIS.

        Args:
            method: ``"auto"``, ``"exact"`` (:func:`ebrl.partition.exact_log_z`) or ``"ais"``
                (:func:`ebrl.partition.ais_log_z`).
            **ais_kwargs: passed to ``ais_log_z`` (``n_runs``, ``betas``, ``generator``, ...).
        """
        check_choice("method", method, ("auto", "exact", "ais"))
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
        data, was_tensor = self._check_rows(X, self._score_values)
        log_z = self.log_partition() if log_z is None else check_float("log_z", log_z)
        with torch.no_grad():
            return output_like(-self.free_energy(data) - log_z, was_tensor)

    def score(self, X: Any, log_z: float | None = None) -> float:
        """Mean log-likelihood of the rows of ``X`` (nats)."""
        return float(self.score_samples(X, log_z).mean())

    def as_energy(self) -> FreeEnergy:
        """The free energy ``F(v)`` as an :class:`ebrl.Energy` of visible states (see :class:`FreeEnergy`)."""
        return FreeEnergy(self)

    def _check_rows(self, X: Any, values: str) -> tuple[Tensor, bool]:
        return check_data(
            "X", X, n_features=self.n_visible, device=self.device, dtype=self.dtype, values=values
        )

    # ---------------------------------------------------------------- pieces of the PCD loop
    def _epochs(self, n_epochs: int, desc: str) -> Iterable[int]:
        if not self.progress:
            return range(n_epochs)
        from tqdm.auto import tqdm  # optional display only; the library itself needs torch + numpy

        return tqdm(range(n_epochs), desc=desc, unit="epoch")

    @staticmethod
    def _shuffled(data: Tensor, generator: torch.Generator | None) -> Tensor:
        """The rows of ``data`` in a random order (one permutation per epoch)."""
        perm = torch.randperm(len(data), generator=generator, device=generator.device if generator else "cpu")
        return torch.index_select(data, 0, perm.to(data.device))

    def _random_rows(self, data: Tensor, generator: torch.Generator | None) -> Tensor:
        """``n_chains`` training rows drawn at random: where the persistent chains start."""
        return data[torch.randint(len(data), (self.n_chains,), generator=generator, device=data.device)]
