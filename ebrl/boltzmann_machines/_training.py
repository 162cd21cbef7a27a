"""Training of the restricted Boltzmann machines by CD-k and PCD-k.

The log-likelihood gradient ``<s h>_data - <s h>_model`` (Hinton 2002), its model term from ``k``
block-Gibbs steps started at the data (CD-k) or from persistent chains (PCD-k, Tieleman 2008), with
momentum, L2 weight decay, a linearly decaying learning rate and optional centring (Melchior,
Fischer & Wiskott 2016).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from ..partition import small_batch_threads
from ..samplers.gibbs import GibbsSampler


class ContrastiveDivergenceMixin:
    """The training loop of :class:`RBMBase` (``fit`` and ``partial_fit`` of
    :class:`~ebrl.boltzmann_machines._estimator.BoltzmannEstimator` run it); the attributes it
    uses are set there. The persistent chains move by :class:`ebrl.samplers.GibbsSampler`."""

    def _train(self, data: Tensor, n_epochs: int, generator: torch.Generator | None, schedule: bool) -> None:
        n, bs = data.shape[0], min(self.batch_size, data.shape[0])
        if self.method == "pcd" and self.chains is None:
            self.chains = self._random_rows(data, generator).clone()  # chains start at random training rows
        if not self._velocity:
            self._velocity = [torch.zeros_like(p) for p in (self.weight, self.visible_bias, self.hidden_bias)]
        n_batches = math.ceil(n / bs)
        total, step = n_epochs * n_batches, 0
        epochs: Any = self._epochs(n_epochs, f"{type(self).__name__} {self.method.upper()}-{self.k}")
        self._sampler = GibbsSampler(self.k)
        rows = max(bs, self.n_chains if self.method == "pcd" else bs)
        with torch.no_grad(), small_batch_threads(rows * data.shape[1]):
            for _ in epochs:
                start_time = time.perf_counter()
                done = len(self.history_)
                momentum = self.initial_momentum if done < self.momentum_warmup else self.momentum
                shuffled = self._shuffled(data, generator)
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
        self, state: Any, v0: Tensor, chains: Tensor | None, lr: float, momentum: float, generator: Any
    ) -> Tensor | None:
        """One parameter update, by the faster rule of ``state`` when :meth:`_begin_epoch` made one;
        returns the new persistent chains (``None`` for CD)."""
        if state is None:
            return self._update(v0, chains, lr, momentum, generator)
        return self._fast_update(state, v0, chains, lr, momentum, generator)

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
        vk = self._sampler.run(self, v0 if chains is None else chains, generator)
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
