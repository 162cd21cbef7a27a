"""An exponential moving average of a module's parameters during training (weight averaging)."""

from __future__ import annotations

import torch
from torch import nn

from ebrl.validation import check_positive_float


class WeightAverage:
    """Exponential moving average (EMA) of a module's parameters, updated after every optimiser step:
    theta_bar <- decay * theta_bar + (1 - decay) * theta, starting from the parameters at creation.

    The EMA of Song & Ermon 2020 ("Improved techniques for training score-based generative
    models", technique 5): the last iterate of a score network trained with Adam is noisy, and
    annealed Langevin samples of the averaged weights are markedly better (the heads benchmark's
    generation section measures it). It is :func:`~ebrl.training.fit`'s metrics hook: pass it as
    ``callback`` with ``log_every=1`` (one update per step), then copy the average into the module::

        average = WeightAverage(energy, decay=0.999)
        fit(energy, x, objective, callback=average, log_every=1)
        average.apply()

    Only parameters are averaged; buffers (fixed statistics such as a Gaussian base) are left as
    they are.

    Args:
        module: the module being trained; its parameters are read at each update and written only
            by :meth:`apply`.
        decay: the weight of the past average, in [0, 1): 0 keeps the last parameters, 0.999
            averages over about the last 1000 steps.
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not isinstance(module, nn.Module) or not any(True for _ in module.parameters()):
            raise TypeError(f"module must be an nn.Module with parameters, got {type(module).__name__}")
        decay = check_positive_float("decay", decay, allow_zero=True)
        if decay >= 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.module, self.decay, self.updates = module, decay, 0
        self.average = [p.detach().clone() for p in module.parameters()]

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step toward the module's current parameters."""
        current = [p.detach() for p in self.module.parameters()]
        if len(current) != len(self.average):
            raise ValueError("the module's parameters changed since the WeightAverage was created")
        # One fused lerp over all tensors: theta_bar + (1 - decay) (theta - theta_bar).
        torch._foreach_lerp_(self.average, current, 1.0 - self.decay)
        self.updates += 1

    def __call__(self, step: int, metrics: dict[str, float]) -> bool:
        """The :func:`~ebrl.training.fit` hook: one update per call; never stops training."""
        self.update()
        return False

    @torch.no_grad()
    def apply(self, module: nn.Module | None = None) -> None:
        """Copy the averaged parameters into ``module`` (default: the tracked module), which must
        have the same parameter shapes."""
        target = self.module if module is None else module
        params = list(target.parameters())
        if len(params) != len(self.average) or any(
            p.shape != a.shape for p, a in zip(params, self.average, strict=True)
        ):
            raise ValueError("module must have the parameter shapes of the averaged module")
        for p, a in zip(params, self.average, strict=True):
            p.copy_(a)
