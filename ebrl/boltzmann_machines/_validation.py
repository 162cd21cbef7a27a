"""Argument checks shared by the Boltzmann machines.

Every check raises before any state changes, with a message that names the argument, what was
given and what is accepted (docs/architecture.md, "Errors").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be an int >= {minimum}{upper}, got {value!r}")
    return int(value)


def check_float(
    value: Any,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number in the stated interval."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        left, right = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str | bool) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_generator(generator: Any, name: str = "generator") -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def resolve_dtype(dtype: Any) -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def resolve_device(device: Any) -> torch.device:
    """``None`` means CPU; ``"auto"`` picks CUDA when present (docs/architecture.md, "Device and dtype")."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be None, 'auto', a torch.device or a device string such as 'cpu' or 'cuda', "
            f"got {device!r}"
        ) from err


def as_data(
    X: Any,
    name: str,
    n_features: int | None,
    device: torch.device,
    dtype: torch.dtype,
    values: str = "real",
    min_rows: int = 1,
) -> tuple[Tensor, bool]:
    """Convert a 2-D array-like to a tensor on ``device``/``dtype`` and check it.

    Args:
        X: the data, a ``torch.Tensor``, ``numpy.ndarray`` or nested sequence of shape
            ``(n_samples, n_features)``.
        name: the argument's name, for messages.
        n_features: the number of columns required, or ``None`` for any.
        values: ``"binary"`` (only 0 and 1), ``"unit"`` (in [0, 1]) or ``"real"`` (finite).
        min_rows: the least number of rows accepted.

    Returns:
        The tensor and whether the input was a tensor (so results can be returned as the same kind).
    """
    was_tensor = isinstance(X, Tensor)
    if was_tensor:
        data = X.detach()
    elif isinstance(X, np.ndarray | list | tuple):
        try:
            array = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must hold real numbers, got {type(X).__name__} that does not") from err
        data = torch.from_numpy(array)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy.ndarray or nested list of shape (n_samples, n_features), "
            f"got {type(X).__name__}"
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


def as_visible(v: Any, name: str, n_visible: int, like: Tensor, size_name: str = "n_visible") -> Tensor:
    """Check a tensor of unit states of shape ``(..., n_visible)`` and move it next to ``like``."""
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., {n_visible}), got {type(v).__name__}")
    if v.ndim < 1 or v.shape[-1] != n_visible:
        raise ValueError(f"{name} must have shape (..., {size_name}={n_visible}), got shape {tuple(v.shape)}")
    if v.is_complex() or not (v.is_floating_point() or v.dtype in (torch.bool, torch.int64, torch.int32)):
        raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
    return v.to(device=like.device, dtype=like.dtype)


def output_like(result: Tensor, was_tensor: bool) -> Tensor | np.ndarray:
    """Return a tensor for tensor input and a numpy array otherwise (scikit-learn style)."""
    return result if was_tensor else result.detach().cpu().numpy()
