"""Plain data, encoded without pickle: what model files and checkpoints store as JSON.

:func:`to_plain` / :func:`from_plain` encode numbers, strings, lists, tuples, string-keyed dicts,
NumPy arrays and scalars (bit-exact, base64) and NumPy random generators (their
``bit_generator.state``). Decoding builds only those types, so nothing is unpickled when a file is
read. Used by :mod:`ebrl.agents.common.safe_load` (the spaces of a model file) and by the run
checkpoints of ``ebrl train`` (``experiments/checkpoints/``).
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class NotPlainError(TypeError):
    """A value that :func:`to_plain` cannot store without pickling it."""


class PlainDataError(ValueError):
    """Encoded data that :func:`from_plain` cannot decode (not written by :func:`to_plain`)."""


def to_plain(value: Any) -> Any:
    """JSON-safe, bit-exact encoding of plain data; raises :class:`NotPlainError` otherwise."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise NotPlainError(f"array of dtype {arr.dtype}")
        return {
            "__nd__": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode(),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "scalar": isinstance(value, np.generic),
        }
    if isinstance(value, np.random.Generator):
        return {"__rng__": value.bit_generator.state}
    if isinstance(value, tuple):
        return {"__tuple__": [to_plain(v) for v in value]}
    if isinstance(value, (list, deque)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise NotPlainError("dict with non-string keys")
        return {"__dict__": {k: to_plain(v) for k, v in value.items()}}
    raise NotPlainError(type(value).__name__)


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` (builds only arrays, tuples, dicts, lists and NumPy generators);
    raises :class:`PlainDataError` on an encoding it does not know."""
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__nd__" in obj:
        arr = np.frombuffer(base64.b64decode(obj["__nd__"]), dtype=np.dtype(obj["dtype"]))
        arr = arr.reshape(obj["shape"]).copy()
        return arr[()] if obj.get("scalar") else arr
    if "__rng__" in obj:
        state = obj["__rng__"]
        name = state.get("bit_generator")
        if name not in _BIT_GENERATORS:
            raise PlainDataError(f"unknown random bit generator {name!r}")
        bit_generator = getattr(np.random, name)()
        bit_generator.state = state
        return np.random.Generator(bit_generator)
    if "__tuple__" in obj:
        return tuple(from_plain(v) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {k: from_plain(v) for k, v in obj["__dict__"].items()}
    raise PlainDataError(f"unknown encoded value with keys {sorted(obj)}")


def is_plain(value: Any) -> bool:
    """Whether ``value`` is plain data that :func:`to_plain` can encode bit-exactly."""
    try:
        to_plain(value)
    except NotPlainError:
        return False
    return True
