"""Bernoulli-Bernoulli restricted Boltzmann machine (Smolensky 1986; Hinton 2002)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..validation import check_bool, check_data, check_generator
from ._base import RBMBase
from ._ops import bernoulli

_BASE_RATE_EPS = 1e-3  # clip base rates away from 0 and 1 so that log(p / (1 - p)) stays finite


def base_rate_logits(data: Tensor) -> Tensor:
    """``log(p / (1 - p))`` of the column means of ``data`` (Hinton 2010, guide §8.1)."""
    p = data.mean(0).clamp(_BASE_RATE_EPS, 1.0 - _BASE_RATE_EPS)
    return torch.log(p) - torch.log1p(-p)


class RBM(RBMBase):
    """Bernoulli-Bernoulli RBM with energy ``E(v, h) = -b.v - c.h - v.W.h`` (lower = more likely).

    Trained by CD-k (Hinton 2002) or PCD-k (Tieleman 2008) with momentum, L2 weight decay and
    optional centring (Montavon & Müller 2012; Melchior, Fischer & Wiskott 2016). Parameters are
    ``weight`` ``W`` (n_visible, n_hidden), ``visible_bias`` ``b`` and ``hidden_bias`` ``c``; they
    are created by ``fit`` (or at construction when ``n_visible`` is given) and every computation
    runs on their device and dtype.

    Args:
        n_hidden: number of hidden units.
        n_visible: number of visible units; ``None`` takes it from the data at ``fit``.
        method: ``"pcd"`` (persistent contrastive divergence, Tieleman 2008) or ``"cd"`` (CD-k).
        k: number of Gibbs steps per update in CD-k / PCD-k.
        n_chains: number of persistent (fantasy) chains of PCD, independent of the batch size.
        learning_rate: step size epsilon of the gradient ascent on the log-likelihood.
        momentum: momentum coefficient after the warm-up (Hinton 2010, guide §9: 0.9).
        initial_momentum: momentum during the first ``momentum_warmup`` epochs (guide §9: 0.5).
        momentum_warmup: number of epochs that use ``initial_momentum``.
        weight_decay: L2 penalty coefficient on ``W`` (guide §10: 1e-4 to 1e-2).
        centering: subtract offsets (the data mean of ``v`` and a running mean of ``p(h|v)``) in
            the gradient, the "centring trick" (Montavon & Müller 2012; Melchior et al. 2016).
        offset_rate: rate of the running mean of the hidden offset (Melchior et al.: 0.01).
        batch_size: mini-batch size.
        n_epochs: passes over the data made by ``fit``.
        lr_schedule: ``"linear"`` decays the learning rate to zero over ``fit`` (Tieleman 2008; worth
            about a nat of test log-likelihood on digits), ``"constant"`` keeps it.
        init_std: standard deviation of the initial weights (guide §8: 0.01).
        binary_data: if True, ``fit`` accepts only 0/1 data; if False, values in [0, 1] are
            treated as Bernoulli means (e.g. grey levels, or the hidden probabilities of a lower
            layer in a :class:`DBN`). ``score_samples`` always needs binary data.
        device: device of the parameters (``"auto"``: CUDA when present).
        dtype: ``torch.float32`` or ``torch.float64``.
        progress: show a tqdm progress bar in ``fit``.
        generator: random source for the initial weights when ``n_visible`` is given.

    Example:
        >>> rbm = RBM(n_hidden=20, n_epochs=20).fit(X_binary)      # doctest: +SKIP
        >>> rbm.score_samples(X_test).mean()                        # exact log-likelihood (nats)
    """

    def __init__(
        self, n_hidden: int, n_visible: int | None = None, *, binary_data: bool = True, **kwargs: Any
    ):
        self.binary_data = check_bool("binary_data", binary_data)
        self._fit_values = "binary" if binary_data else "unit"
        super().__init__(n_hidden, n_visible, **kwargs)

    def _init_visible(self, n_visible: int, data: Tensor | None) -> None:
        kw = {"device": self.weight.device, "dtype": self.weight.dtype}
        b = torch.zeros(n_visible, **kw) if data is None else base_rate_logits(data)
        self.visible_bias = nn.Parameter(b, requires_grad=False)

    def _visible_stat(self, v: Tensor) -> Tensor:
        return v

    def _visible_energy(self, v: Tensor) -> Tensor:
        return -(v @ self.visible_bias)

    def visible_mean(self, h: Tensor) -> Tensor:
        """``p(v_i = 1 | h) = sigmoid(b_i + W_i.h)``."""
        return torch.sigmoid(h @ self.weight.T + self.visible_bias)

    visible_probabilities = visible_mean

    def log_visible_likelihood(self, v: Tensor, h: Tensor) -> Tensor:
        """``log p(v | h) = sum_i v_i l_i - softplus(l_i)`` with logits ``l = b + W h``."""
        logits = h @ self.weight.T + self.visible_bias
        return (v * logits - nn.functional.softplus(logits)).sum(-1)

    def _sample_visible_given_mean(self, mean: Tensor, generator: torch.Generator | None) -> Tensor:
        return bernoulli(mean, generator=generator)

    def _bias_gradient(self, v_data: Tensor, v_model: Tensor) -> Tensor:
        return v_model.sum(0).mul_(-1.0 / v_model.shape[0]).add_(v_data.sum(0), alpha=1.0 / v_data.shape[0])

    # ----------------------------------------------------------------- fast training path
    # On small models the cost of an update is the number of tensor operations, not arithmetic.
    # Stacking the parameters as theta = [[W, b], [c^T, 0]] and the statistics as [x - offset, 1]
    # gives every gradient in one addmm ([[gW, gb], [gc, 0]]) and momentum and the update of all
    # three parameters in three in-place operations. About half the operations of the generic
    # RBMBase._update, which the tests check it reproduces.
    _fast_path = True

    def _begin_epoch(self) -> dict[str, Any] | None:
        if not self._fast_path:
            return None
        nv, nh = self.n_visible, self.n_hidden
        kw = {"device": self.device, "dtype": self.dtype}
        theta, vel = torch.zeros(nv + 1, nh + 1, **kw), torch.zeros(nv + 1, nh + 1, **kw)
        params = (self.weight, self.visible_bias, self.hidden_bias)
        for t, (w, b, c) in ((theta, params), (vel, self._velocity)):
            t[:nv, :nh], t[:nv, nh], t[nv, :nh] = w, b, c
        neg_mu, neg_lam = torch.zeros(nv, **kw), torch.zeros(nh, **kw)
        if self.centering:
            neg_mu, neg_lam = -self.visible_offset, -self.hidden_offset
        rows = max(self.batch_size, self.n_chains)
        stats = [torch.ones(rows, size + 1, **kw) for size in (nv, nh, nv, nh)]
        return {
            "theta": theta, "vel": vel, "stats": stats, "neg_mu": neg_mu, "neg_lam": neg_lam,
            "W": theta[:nv, :nh], "b": theta[:nv, nh], "c": theta[nv, :nh], "vel_w": vel[:nv, :nh],
            "kernel": BernoulliGibbs(theta[:nv, :nh], theta[:nv, nh], theta[nv, :nh]),
        }  # fmt: skip

    def _fast_update(
        self,
        state: dict[str, Any],
        v0: Tensor,
        chains: Tensor | None,
        lr: float,
        momentum: float,
        generator: Any,
    ) -> Tensor | None:
        W, b, c, neg_mu, neg_lam = state["W"], state["b"], state["c"], state["neg_mu"], state["neg_lam"]
        nv, nh, n0 = W.shape[0], W.shape[1], v0.shape[0]
        ph0 = torch.sigmoid(torch.addmm(c, v0, W))
        vk = self._sampler.run(state["kernel"], v0 if chains is None else chains, generator)
        nk = vk.shape[0]
        phk = torch.sigmoid(torch.addmm(c, vk, W))
        a0, p0, ak, pk = state["stats"]
        a0, p0, ak, pk = a0[:n0], p0[:n0], ak[:nk], pk[:nk]
        torch.add(v0, neg_mu, out=a0[:, :nv])
        torch.add(ph0, neg_lam, out=p0[:, :nh])
        torch.add(vk, neg_mu, out=ak[:, :nv])
        torch.add(phk, neg_lam, out=pk[:, :nh])
        grad = torch.addmm(ak.T @ pk, a0.T, p0, beta=-1.0 / nk, alpha=1.0 / n0)
        if self.weight_decay:
            grad[:nv, :nh].add_(W, alpha=-self.weight_decay)
        state["theta"].add_(state["vel"].mul_(momentum).add_(grad, alpha=lr))
        if self.centering:
            # Centred biases b + W lambda and c + W^T mu move by vel_b, vel_c: correct b and c.
            b.addmv_(state["vel_w"], neg_lam)
            c.addmv_(state["vel_w"].T, neg_mu)
            neg_lam.mul_(1.0 - self.offset_rate).add_(ph0.sum(0), alpha=-self.offset_rate / n0)
        return None if chains is None else vk

    def _end_epoch(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        nv, nh = self.n_visible, self.n_hidden
        for t, (w, b, c) in (
            (state["theta"], (self.weight, self.visible_bias, self.hidden_bias)),
            (state["vel"], self._velocity),
        ):
            w.copy_(t[:nv, :nh]), b.copy_(t[:nv, nh]), c.copy_(t[nv, :nh])
        if self.centering:
            self.hidden_offset.copy_(-state["neg_lam"])

    def _base_logits(self, data: Tensor | None = None) -> Tensor:
        if data is not None:
            return base_rate_logits(data)
        if self.data_mean is not None:
            return base_rate_logits(self.data_mean[None])
        return self.visible_bias.detach().clone()

    def _base_samples(self, n: int, generator: torch.Generator | None) -> Tensor:
        p = torch.sigmoid(self._base_logits()).expand(n, -1)
        return bernoulli(p, generator=generator)

    # ------------------------------------------------------------------ partition function
    def log_z_layers(self) -> dict[str, int]:
        """Both layers can be enumerated: the other one sums out in closed form."""
        self._require_init()
        return {"visible": self.n_visible, "hidden": self.n_hidden}

    def log_marginal(self, layer: str, states: Tensor) -> Tensor:
        """``-F(v)`` for visible states, ``c.h + sum_i softplus(b_i + W_i.h)`` for hidden ones."""
        W, b, c = (p.to(states.dtype) for p in (self.weight, self.visible_bias, self.hidden_bias))
        if layer == "visible":
            return states @ b + nn.functional.softplus(states @ W + c).sum(-1)
        if layer == "hidden":
            return states @ c + nn.functional.softplus(states @ W.T + b).sum(-1)
        raise ValueError(f"layer must be 'visible' or 'hidden', got {layer!r}")

    def ais_path(self, data: Tensor | None = None, dtype: torch.dtype | None = None) -> BernoulliAISPath:
        """The AIS path from the base-rate model ``p_A(v) ∝ exp(b_A.v)`` (Salakhutdinov & Murray 2008).

        Args:
            data: data whose pixel means set ``b_A``; ``None`` uses the base rates seen by ``fit``
                (or ``b`` itself for a model that was never fitted).
            dtype: the precision of the path (default: the model's).
        """
        self._require_init()
        dtype = dtype or self.dtype
        if data is not None:
            data, _ = check_data(
                "data", data, n_features=self.n_visible, device=self.device, dtype=dtype, values="unit"
            )
        return BernoulliAISPath(
            self.weight, self.visible_bias, self.hidden_bias, self._base_logits(data), dtype
        )


class BernoulliGibbs:
    """The block-Gibbs kernel of a Bernoulli RBM with the given parameters, as a
    :class:`ebrl.samplers.GibbsModel`: the fast training path samples its persistent chains with
    the working copies of the parameters that it updates during an epoch.

    Args:
        weight, visible_bias, hidden_bias: ``W``, ``b`` and ``c`` (views that may change in place).
    """

    def __init__(self, weight: Tensor, visible_bias: Tensor, hidden_bias: Tensor) -> None:
        self.W, self.b, self.c = weight, visible_bias, hidden_bias

    def gibbs_sweep(self, v: Tensor, generator: torch.Generator | None) -> Tensor:
        """``h ~ p(h | v) = sigmoid(c + v W)``, then ``v ~ p(v | h) = sigmoid(b + W h)``."""
        h = bernoulli(torch.sigmoid(torch.addmm(self.c, v, self.W)), generator)
        return bernoulli(torch.sigmoid(torch.addmm(self.b, h, self.W.T)), generator)

    def chain_energy(self, v: Tensor) -> Tensor:
        """``F(v) = -b.v - sum_j softplus(c_j + v.W_j)``."""
        return -(v @ self.b) - nn.functional.softplus(torch.addmm(self.c, v, self.W)).sum(-1)


class BernoulliAISPath:
    """``f_beta(v) = exp((1-beta) b_A.v + beta b.v) prod_j (1 + exp(beta (c_j + v.W_j)))``.

    At beta = 0 the hidden units are independent of ``v`` and each contributes a factor 2, so
    ``log Z_A = sum_i softplus(b_A,i) + n_hidden log 2``. The transition is one block-Gibbs step of
    the tempered RBM (hidden units with scaled weights ``beta W``), which leaves ``f_beta`` invariant.
    """

    def __init__(
        self, weight: Tensor, visible_bias: Tensor, hidden_bias: Tensor, base: Tensor, dtype: torch.dtype
    ):
        self.W, self.b, self.c, self.b_a = (
            t.detach().to(dtype) for t in (weight, visible_bias, hidden_bias, base)
        )
        self.state_size = self.W.shape[0]
        self.log_z_base = float(nn.functional.softplus(self.b_a).sum()) + self.W.shape[1] * math.log(2.0)

    def sample_base(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` exact draws of the base-rate model p_A."""
        return bernoulli(torch.sigmoid(self.b_a).expand(n, -1), generator=generator)

    def log_f(self, x: Tensor, betas: Tensor) -> Tensor:
        """log f_beta(v) with the hidden units summed out, at each beta in ``betas``."""
        pre = x @ self.W + self.c
        lin_a, lin_b = x @ self.b_a, x @ self.b
        beta = betas[:, None]
        soft = nn.functional.softplus(beta[..., None] * pre).sum(-1)
        return (1.0 - beta) * lin_a + beta * lin_b + soft

    def transition(
        self, x: Tensor, beta: Tensor, generator: torch.Generator | None, reverse: bool = False
    ) -> Tensor:
        # The marginal chain v -> h -> v is reversible, so reverse AIS uses the same step.
        """One block-Gibbs step (h | v, then v | h) leaving p_beta invariant."""
        check_generator("generator", generator)
        h = bernoulli(torch.sigmoid(beta * (x @ self.W + self.c)), generator=generator)
        logits = (1.0 - beta) * self.b_a + beta * (h @ self.W.T + self.b)
        return bernoulli(torch.sigmoid(logits), generator=generator)
