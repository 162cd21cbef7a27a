"""Exceptions shared across ebrl, and the one non-finite check every guard uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class NonFiniteError(FloatingPointError, ValueError):
    """A quantity (energy, gradient, loss, chain state) became NaN or infinite.

    Subclasses both :class:`FloatingPointError` (what happened) and :class:`ValueError`
    (the pinned convention: a bad value raises ``ValueError``), so callers may catch either.
    """


def first_non_finite(**quantities: Any) -> str | None:
    """Name of the first quantity (tensor, array, number, or a list of them) holding NaN or inf.

    Tensors cost one sum each (NaN and inf propagate through a sum; a sum overflowing the float
    range means values that diverged anyway) and one host sync for all quantities together, so
    a GPU is synchronised once per check, not once per quantity. Used by the samplers' loop
    (:class:`ebrl.samplers.base.NonFiniteTracker`), :func:`ebrl.training.fit` and the agents'
    divergence guard (``agents/common/guard.py``); each decides what a failure means.
    """
    names, sums = [], []
    for name, value in quantities.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, torch.Tensor):
                if v.is_floating_point():
                    names.append(name)
                    sums.append(v.detach().sum())
            elif v is not None and not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
                return name
    if sums:
        finite = torch.isfinite(torch.stack(sums))
        if not bool(finite.all()):
            return names[int((~finite).nonzero()[0, 0])]
    return None
