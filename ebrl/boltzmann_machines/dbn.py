"""Deep belief network: RBMs stacked greedily, layer by layer (Hinton, Osindero & Teh 2006)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..validation import check_bool, check_data, check_generator, check_int, check_units
from ._base import RBMBase
from ._estimator import output_like
from ._ops import bernoulli
from .gaussian_rbm import GaussianBernoulliRBM
from .rbm import RBM


class DBN(nn.Module):
    """A stack of RBMs trained greedily: each layer is an RBM fitted to the hidden probabilities of
    the layer below (Hinton, Osindero & Teh 2006; probabilities as data as in Hinton &
    Salakhutdinov 2006). The top two layers form an undirected RBM, the lower ones directed
    sigmoid belief layers ``p(h_{l-1} | h_l)`` that reuse the RBM weights.

    Args:
        hidden_sizes: number of hidden units of each layer, bottom first.
        n_visible: number of visible units; ``None`` takes it from the data at ``fit``.
        gaussian_visible: make the bottom layer a :class:`GaussianBernoulliRBM` (real-valued data).
        sigma: the Gaussian visible standard deviation (``gaussian_visible`` only).
        layer_kwargs: optional per-layer keyword arguments, bottom first, that override ``rbm_kwargs``.
        **rbm_kwargs: keyword arguments of every layer's RBM (``n_epochs``, ``learning_rate``,
            ``method``, ``k``, ``batch_size``, ``device``, ``dtype``, ...).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        n_visible: int | None = None,
        *,
        gaussian_visible: bool = False,
        sigma: float | str = 1.0,
        layer_kwargs: Sequence[dict[str, Any]] | None = None,
        **rbm_kwargs: Any,
    ) -> None:
        super().__init__()
        if (
            isinstance(hidden_sizes, str | bytes)
            or not isinstance(hidden_sizes, Sequence)
            or not hidden_sizes
        ):
            raise TypeError(f"hidden_sizes must be a non-empty sequence of ints, got {hidden_sizes!r}")
        sizes = [check_int(f"hidden_sizes[{i}]", s, minimum=1) for i, s in enumerate(hidden_sizes)]
        check_bool("gaussian_visible", gaussian_visible)
        if layer_kwargs is not None and (
            not isinstance(layer_kwargs, Sequence) or len(layer_kwargs) != len(sizes)
        ):
            raise ValueError(
                f"layer_kwargs must be None or a list of {len(sizes)} dicts, got {layer_kwargs!r}"
            )
        rbms: list[RBMBase] = []
        below = n_visible
        for i, size in enumerate(sizes):
            kwargs = {**rbm_kwargs, **(layer_kwargs[i] if layer_kwargs is not None else {})}
            if i == 0 and gaussian_visible:
                rbms.append(GaussianBernoulliRBM(size, below, sigma=sigma, **kwargs))
            else:
                # Upper layers see probabilities in [0, 1], not binary data.
                rbms.append(RBM(size, below, binary_data=i == 0, **kwargs))
            below = size if below is not None else None
        self.rbms = nn.ModuleList(rbms)

    @property
    def n_visible(self) -> int | None:
        """Number of visible units of the bottom RBM."""
        return self.rbms[0].n_visible

    @property
    def n_layers(self) -> int:
        """Number of stacked RBMs."""
        return len(self.rbms)

    def fit(self, X: Any, generator: torch.Generator | None = None) -> DBN:
        """Greedy layer-wise training: layer 0 on ``X``, layer 1 on ``p(h_1 | X)``, ...; returns ``self``."""
        bottom = self.rbms[0]
        data, _ = check_data(
            "X", X, n_features=bottom._fixed_n_visible, device=bottom.device, dtype=bottom.dtype,
            values=bottom._fit_values,
        )  # fmt: skip
        check_generator("generator", generator)
        for rbm in self.rbms:
            rbm.fit(data, generator)
            data = rbm.transform(data)
        return self

    def transform(self, X: Any) -> Tensor | np.ndarray:
        """Up-pass: hidden probabilities of the top layer, same kind as ``X``."""
        out = X
        for rbm in self.rbms:
            out = rbm.transform(out)
        return out

    def mean_field_reconstruct(self, v: Tensor) -> Tensor:
        """Deterministic up-pass of probabilities, then down-pass of means (denoising)."""
        self.rbms[0]._require_init()
        x = check_units("v", v, size=self.n_visible, like=self.rbms[0].weight)
        for rbm in self.rbms:
            x = rbm.hidden_probabilities(x)
        for rbm in reversed(self.rbms):
            x = rbm.visible_mean(x)
        return x

    def sample(
        self, n: int, n_gibbs: int = 1000, generator: torch.Generator | None = None, return_mean: bool = False
    ) -> Tensor:
        """Generate: ``n_gibbs`` Gibbs steps in the top RBM, then one directed pass down.

        Args:
            n: number of samples.
            n_gibbs: Gibbs steps in the top-level RBM.
            generator: random source.
            return_mean: return ``E[v | h_1]`` at the bottom instead of a sample.
        """
        check_bool("return_mean", return_mean)
        x = self.rbms[-1].sample(n, n_gibbs, generator)
        with torch.no_grad():
            for i in range(self.n_layers - 2, -1, -1):
                mean = self.rbms[i].visible_mean(x)
                x = (
                    mean
                    if i == 0 and return_mean
                    else self.rbms[i]._sample_visible_given_mean(mean, generator)
                )
        return x

    def free_energy(self, v: Tensor, n_samples: int = 10, generator: torch.Generator | None = None) -> Tensor:
        """Variational upper bound on ``F(v)`` with ``log p(v) >= -F(v) - log Z_top`` (Hinton et al. 2006).

        ``F_l(x) <= E_q[F_{l+1}(h) - log p(x | h)] - H(q)`` with ``q = p_l(h | x)`` the layer's
        hidden conditional, estimated from ``n_samples`` draws of ``h``; the top level is the top RBM's
        exact free energy, so a one-layer DBN gives the RBM's ``F(v)`` exactly.
        """
        self.rbms[0]._require_init()
        v = check_units("v", v, size=self.n_visible, like=self.rbms[0].weight)
        n_samples = check_int("n_samples", n_samples, minimum=1)
        check_generator("generator", generator)
        flat = v.reshape(-1, self.n_visible)
        return self._bound(0, flat, n_samples, generator).reshape(v.shape[:-1])

    def _bound(self, level: int, x: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        rbm = self.rbms[level]
        if level == self.n_layers - 1:
            return rbm.free_energy(x)
        q = rbm.hidden_probabilities(x)
        entropy = nn.functional.binary_cross_entropy(q, q, reduction="none").sum(-1)
        h = bernoulli(q.expand(n_samples, *q.shape), generator)
        log_lik = rbm.log_visible_likelihood(x.expand(n_samples, *x.shape), h)
        upper = self._bound(level + 1, h.reshape(-1, h.shape[-1]), 1, generator).reshape(n_samples, -1)
        return (upper - log_lik).mean(0) - entropy

    def score_samples(
        self,
        X: Any,
        log_z: float | None = None,
        n_samples: int = 10,
        generator: torch.Generator | None = None,
    ) -> Tensor | np.ndarray:
        """Stochastic lower bound on ``log p(v)`` of each row of ``X`` (nats), same kind as ``X``.

        Args:
            X: data of shape ``(n_samples, n_visible)``.
            log_z: ``log Z`` of the top RBM; ``None`` computes it (exact when small, else AIS).
            n_samples: draws per layer of the variational bound.
            generator: random source.
        """
        bottom = self.rbms[0]
        bottom._require_init()
        data, was_tensor = bottom._check_rows(X, bottom._score_values)
        log_z = self.rbms[-1].log_partition() if log_z is None else float(log_z)
        with torch.no_grad():
            return output_like(-self.free_energy(data, n_samples, generator) - log_z, was_tensor)
