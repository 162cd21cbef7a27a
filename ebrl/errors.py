"""Exceptions shared across ebrl."""

from __future__ import annotations


class NonFiniteError(FloatingPointError, ValueError):
    """A quantity (energy, gradient, loss, chain state) became NaN or infinite.

    Subclasses both :class:`FloatingPointError` (what happened) and :class:`ValueError`
    (the pinned convention: a bad value raises ``ValueError``), so callers may catch either.
    """
