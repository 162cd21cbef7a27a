"""Small tensor helpers shared by the Boltzmann machines."""

from __future__ import annotations

import torch
from torch import Tensor


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary samples with ``P(x = 1) = p``, in ``p``'s dtype.

    ``u < p`` with ``u ~ U[0, 1)`` draws the same distribution as ``torch.bernoulli`` at about a
    third of its cost on CPU, where sampling dominates a small RBM's update.
    """
    return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype).lt_(p)
