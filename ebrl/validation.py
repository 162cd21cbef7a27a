"""Argument checks for the public boundary.

Every check raises before any state changes, with a message that names the argument, what was
given and what is accepted (docs/architecture.md, "Errors").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch import Tensor


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite number > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``.

    Args:
        name: the argument's name, for the message.
        value: what was given (a bool is refused, a numpy integer accepted).
        minimum: the least value accepted (``None``: any).
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_fraction(name: str, value: Any, *, allow_none: bool = True) -> float | None:
    """Check a number in (0, 1] (or None where allowed)."""
    if value is None and allow_none:
        return None
    value = check_positive_float(name, value)
    if value > 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def check_tensor(name: str, value: Any, *, min_dim: int = 1, last_dim: int | None = None) -> torch.Tensor:
    """Check a floating-point tensor with at least ``min_dim`` dims and a given last dim."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dim(s), got shape {tuple(value.shape)}")
    if last_dim is not None and value.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(value.shape)}")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Check that a tensor holds no NaN or inf (one host sync: use at the boundary only)."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN/inf entries in shape {tuple(value.shape)}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real number in an interval.

    Args:
        name: the argument's name, for the message.
        value: what was given (a bool is refused).
        low, high: the interval's ends.
        low_open, high_open: exclude that end (``(low, high]`` with ``low_open=True``).
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool after checking it is one (``bool`` or ``numpy.bool_``, not 0/1)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_generator(name: str, value: Any) -> torch.Generator | None:
    """Return ``value`` after checking it is a ``torch.Generator`` or None (a random source)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_float_dtype(name: str, value: Any) -> torch.dtype:
    """Return ``value`` after checking it is ``torch.float32`` or ``torch.float64``."""
    if value not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be torch.float32 or torch.float64, got {value!r}")
    return value


def check_device(name: str, value: Any) -> torch.device:
    """Resolve a device argument: ``None`` means CPU, ``"auto"`` CUDA when present, else anything
    ``torch.device`` accepts (docs/architecture.md, "Device and dtype")."""
    if value is None:
        return torch.device("cpu")
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{name} must be None, 'auto', a torch.device or a device string such as 'cpu' or 'cuda', "
            f"got {value!r}"
        ) from err


def check_data(
    name: str,
    value: Any,
    *,
    n_features: int | None,
    device: torch.device,
    dtype: torch.dtype,
    values: str = "real",
    min_rows: int = 1,
) -> tuple[Tensor, bool]:
    """Convert a 2-D array-like (a data matrix, rows are samples) to a tensor and check it.

    Args:
        name: the argument's name, for messages.
        value: a ``torch.Tensor``, ``numpy.ndarray`` or nested sequence of shape
            ``(n_samples, n_features)``.
        n_features: the number of columns required (a model's ``n_visible``), or ``None`` for any.
        device, dtype: where the tensor goes.
        values: ``"binary"`` (only 0 and 1, Bernoulli units), ``"unit"`` (in [0, 1]) or
            ``"real"`` (finite).
        min_rows: the least number of rows accepted.

    Returns:
        The tensor and whether the input was a tensor (so results can be returned as the same kind).
    """
    was_tensor = isinstance(value, Tensor)
    if was_tensor:
        data = value.detach()
    elif isinstance(value, np.ndarray | list | tuple):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must hold real numbers, got {type(value).__name__} that does not"
            ) from err
        data = torch.from_numpy(array)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy.ndarray or nested list of shape (n_samples, n_features), "
            f"got {type(value).__name__}"
        )
    if data.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {data.dtype}")
    if data.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(data.shape)}")
    if data.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {tuple(data.shape)}")
    if n_features is not None and data.shape[1] != n_features:
        raise ValueError(
            f"{name} has {data.shape[1]} features but the model expects n_visible={n_features} "
            f"(shape (n_samples, {n_features})), got shape {tuple(data.shape)}"
        )
    data = data.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if values == "binary" and not bool(((data == 0) | (data == 1)).all()):
        bad = data[(data != 0) & (data != 1)][0].item()
        raise ValueError(
            f"{name} must be binary (only 0 and 1) for a Bernoulli RBM, got a value {bad!r}; "
            "binarize it first (e.g. X >= threshold), or use GaussianBernoulliRBM for real-valued data"
        )
    if values == "unit" and not bool(((data >= 0) & (data <= 1)).all()):
        raise ValueError(
            f"{name} must lie in [0, 1] (probabilities or binary values), got min {data.min().item()!r} "
            f"and max {data.max().item()!r}"
        )
    return data, was_tensor


def check_units(name: str, value: Any, *, size: int, like: Tensor, size_name: str = "n_visible") -> Tensor:
    """Check a tensor of unit states of shape ``(..., size)`` and move it to ``like``'s device and dtype.

    Args:
        name: the argument's name, for messages.
        value: the states (floating point, bool or integer tensor).
        size: the required last dimension (a layer's number of units).
        like: a tensor whose device and dtype the result takes (a model parameter).
        size_name: what ``size`` is called in the message (``n_visible``, ``n_hidden``).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., {size}), got {type(value).__name__}")
    if value.ndim < 1 or value.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size_name}={size}), got shape {tuple(value.shape)}")
    if value.is_complex() or not (
        value.is_floating_point() or value.dtype in (torch.bool, torch.int64, torch.int32)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    return value.to(device=like.device, dtype=like.dtype)
