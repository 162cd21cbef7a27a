"""Shared machinery of the restricted Boltzmann machines: parameters, Gibbs sampling and CD/PCD training.

The energy is ``E(v, h) = E_vis(v) - s(v).W.h - c.h`` with ``s(v) = v`` for binary visibles and
``s(v) = v / sigma`` for Gaussian ones; subclasses supply the visible layer. Training follows the
log-likelihood gradient ``<s h>_data - <s h>_model`` (Hinton 2002), the model term taken from
``k`` block-Gibbs steps started at the data (CD-k) or from persistent chains (PCD-k, Tieleman 2008).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..partition import ais_log_z, exact_log_z
from ._ops import bernoulli
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


class RBMBase(nn.Module):
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
        learning_rate: float = 0.05,
        momentum: float = 0.9,
        initial_momentum: float = 0.5,
        momentum_warmup: int = 5,
        weight_decay: float = 1e-4,
        centering: bool = True,
        offset_rate: float = 0.01,
        batch_size: int = 32,
        n_epochs: int = 20,
        lr_schedule: str = "constant",
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
    def _init_visible(self, n_visible: int, data: Tensor | None) -> None:
        """Set ``visible_bias`` (and any visible parameters) from the data, or to defaults."""
        raise NotImplementedError

    def _visible_stat(self, v: Tensor) -> Tensor:
        """``s(v)``, the visible term that couples to the hidden units."""
        raise NotImplementedError

    def _visible_energy(self, v: Tensor) -> Tensor:
        """``E_vis(v)``, the part of the energy that depends on ``v`` alone."""
        raise NotImplementedError

    def visible_mean(self, h: Tensor) -> Tensor:
        """``E[v | h]``: probabilities for binary visibles, the Gaussian mean otherwise."""
        raise NotImplementedError

    def _sample_visible_given_mean(self, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _bias_gradient(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        """``<dE/db>_model - <dE/db>_data`` for the visible bias."""
        raise NotImplementedError

    def _bias_shift(self, shift: Tensor) -> Tensor:
        """How a change ``W lambda`` of the coupling moves the visible bias under centring."""
        return shift

    def _base_samples(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Start states for ``sample``: draws from the base-rate (independent) model."""
        raise NotImplementedError

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
        h = as_visible(h, "h", self.n_hidden, self.weight)
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
        with torch.no_grad():
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

    # ----------------------------------------------------------------------------- training
    def fit(self, X: Any, generator: torch.Generator | None = None) -> RBMBase:
        """Initialise the model from ``X`` and train it for ``n_epochs`` epochs; returns ``self``.

        Args:
            X: training data of shape ``(n_samples, n_visible)``.
            generator: random source for the initial weights, shuffling and Gibbs sampling.
        """
        data, _ = as_data(X, "X", self._fixed_n_visible, self.device, self.dtype, self._fit_values)
        check_generator(generator)
        self._initialize(data.shape[1], data, generator)
        self.history_ = []
        self._train(data, self.n_epochs, generator, schedule=True)
        return self

    def partial_fit(self, X: Any, generator: torch.Generator | None = None) -> RBMBase:
        """Train one more epoch on ``X`` (initialising from ``X`` first if needed); returns ``self``."""
        n_features = self.n_visible if self.weight is not None else self._fixed_n_visible
        data, _ = as_data(X, "X", n_features, self.device, self.dtype, self._fit_values)
        check_generator(generator)
        if self.weight is None:
            self._initialize(data.shape[1], data, generator)
        self._train(data, 1, generator, schedule=False)
        return self

    def _train(self, data: Tensor, n_epochs: int, generator: torch.Generator | None, schedule: bool) -> None:
        n, bs = data.shape[0], min(self.batch_size, data.shape[0])
        if self.method == "pcd" and self.chains is None:
            start = torch.randint(n, (self.n_chains,), generator=generator, device=data.device)
            self.chains = data[start].clone()  # chains start at random training rows
        if not self._velocity:
            self._velocity = [torch.zeros_like(p) for p in (self.weight, self.visible_bias, self.hidden_bias)]
        n_batches = math.ceil(n / bs)
        total, step = n_epochs * n_batches, 0
        epochs: Any = range(n_epochs)
        if self.progress:
            from tqdm.auto import tqdm  # optional display only; the library itself needs torch + numpy

            epochs = tqdm(epochs, desc=f"{type(self).__name__} {self.method.upper()}-{self.k}", unit="epoch")
        with torch.no_grad():
            for _ in epochs:
                start_time = time.perf_counter()
                done = len(self.history_)
                momentum = self.initial_momentum if done < self.momentum_warmup else self.momentum
                perm = torch.randperm(n, generator=generator, device=generator.device if generator else "cpu")
                shuffled = data[perm.to(data.device)]
                chains, state = self.chains, self._begin_epoch()
                for i in range(n_batches):
                    lr = self.learning_rate
                    if schedule and self.lr_schedule == "linear":
                        lr *= 1.0 - step / total  # linear decay to 0 (Tieleman 2008)
                    # The chains live in a local during the epoch: assigning a buffer is slow.
                    batch = shuffled[i * bs : (i + 1) * bs]
                    chains = self._step(state, batch, chains, lr, momentum, generator)
                    step += 1
                self.chains = chains
                self._end_epoch(state)
                record = {"epoch": float(done + 1), "time_s": time.perf_counter() - start_time}
                if self.progress:
                    err = ((self.mean_field_reconstruct(data) - data) ** 2).sum(-1).mean().item()
                    record["reconstruction_error"] = err
                    epochs.set_postfix(recon=f"{err:.3f}")
                self.history_.append(record)

    def _begin_epoch(self) -> Any:
        """Working state of a faster update rule for one epoch (``None``: use :meth:`_update`)."""
        return None

    def _step(
        self,
        state: Any,
        v0: Tensor,
        chains: Tensor | None,
        lr: float,
        momentum: float,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        """One parameter update; returns the new persistent chains (``None`` for CD)."""
        return self._update(v0, chains, lr, momentum, generator)

    def _end_epoch(self, state: Any) -> None:
        """Write the working state of :meth:`_begin_epoch` back into the parameters."""

    def _update(
        self, v0: Tensor, chains: Tensor | None, lr: float, momentum: float, generator: torch.Generator | None
    ) -> Tensor | None:
        """One (centred) CD-k / PCD-k step with momentum and L2 weight decay.

        Written for speed on small models, where per-operation overhead dominates: sums instead of
        means, in-place momentum updates, one ``addmm`` per statistic.
        """
        W, b, c = self.weight, self.visible_bias, self.hidden_bias
        n0 = v0.shape[0]
        s0 = self._visible_stat(v0)
        ph0 = torch.sigmoid(torch.addmm(c, s0, W))
        vk = v0 if chains is None else chains
        for _ in range(self.k):
            hk = bernoulli(torch.sigmoid(torch.addmm(c, self._visible_stat(vk), W)), generator)
            vk = self._sample_visible_given_mean(self.visible_mean(hk), generator)
        nk = vk.shape[0]
        sk = self._visible_stat(vk)
        # Rao-Blackwellised statistics: hidden probabilities rather than samples on both sides.
        phk = torch.sigmoid(torch.addmm(c, sk, W))
        ph0_mean = ph0.sum(0).mul_(1.0 / n0)
        if self.centering:
            # Centred gradient (Melchior, Fischer & Wiskott 2016): <(s - mu)(h - lambda)>_data - _model.
            mu, lam = self.visible_offset, self.hidden_offset
            s0c, ph0c, skc, phkc = s0 - mu, ph0 - lam, sk - mu, phk - lam
        else:
            s0c, ph0c, skc, phkc = s0, ph0, sk, phk
        grad_w = torch.addmm(skc.T @ phkc, s0c.T, ph0c, beta=-1.0 / nk, alpha=1.0 / n0)
        if self.weight_decay:
            grad_w.add_(W, alpha=-self.weight_decay)
        grad_b = self._bias_gradient(v0, vk)
        grad_c = phk.sum(0).mul_(-1.0 / nk).add_(ph0_mean)
        vel_w, vel_b, vel_c = self._velocity
        vel_w.mul_(momentum).add_(grad_w, alpha=lr)
        vel_b.mul_(momentum).add_(grad_b, alpha=lr)
        vel_c.mul_(momentum).add_(grad_c, alpha=lr)
        W.add_(vel_w)
        if self.centering:
            # The centred biases are b + W lambda, c + W^T mu: keep them moving by vel_b, vel_c.
            b.add_(vel_b).sub_(self._bias_shift(vel_w @ self.hidden_offset))
            c.add_(vel_c).sub_(vel_w.T @ self.visible_offset)
            self.hidden_offset.mul_(1.0 - self.offset_rate).add_(ph0_mean, alpha=self.offset_rate)
        else:
            b.add_(vel_b)
            c.add_(vel_c)
        return None if chains is None else vk

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
