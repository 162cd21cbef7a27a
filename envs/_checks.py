"""Argument checks shared by the ebrl tasks (gymnasium + numpy only: the envs stand alone).

Each check names the argument, what was given and what is accepted, and runs before the env
touches any attribute, so a bad argument leaves no half-built env.
"""

from __future__ import annotations

import numpy as np


def check_finite(name: str, value: float, nonnegative: bool = False) -> float:
    """``value`` as a float; ValueError unless finite (and >= 0 with ``nonnegative``)."""
    value = float(value)
    if not np.isfinite(value) or (nonnegative and value < 0):
        bound = " >= 0" if nonnegative else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    """``value`` as a float; ValueError unless finite and > 0."""
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_render_mode(render_mode: str | None, accepted: list[str]) -> str | None:
    """``render_mode`` if it is None or one of ``accepted``; ValueError otherwise."""
    if render_mode is not None and render_mode not in accepted:
        raise ValueError(f"render_mode must be None or one of {accepted}, got {render_mode!r}")
    return render_mode


def clipped_action(action: np.ndarray | float, dim: int) -> np.ndarray:
    """``action`` as a float64 array of shape ``(dim,)`` clipped to ``[-1, 1]``. Any array of
    ``dim`` entries is accepted (a scalar when ``dim == 1``); ValueError if it has another size
    or a non-finite entry. Clipping, not rejecting, out-of-box actions follows the reference code
    of soft Q-learning's tasks (and gymnasium's own Box tasks)."""
    a = np.asarray(action, dtype=np.float64)
    if a.size != dim or not np.all(np.isfinite(a)):
        given = np.asarray(action)
        raise ValueError(f"action must be {dim} finite number(s) (shape ({dim},)), got {given!r}")
    return np.clip(a.reshape(dim), -1.0, 1.0)
