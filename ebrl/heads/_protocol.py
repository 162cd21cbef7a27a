"""The small protocol every head and objective is written against.

A head needs only "an energy of x, optionally given a context c". Three kinds of object satisfy it:

- an :class:`~ebrl.energies.Energy` (``energy(x, context)``; ``MLPEnergy``, ``StateActionEnergy``);
- any object with ``free_energy(v) -> v.shape[:-1]`` (a Boltzmann machine: the free energy
  F(v) = -log sum_h exp(-E(v, h)) is the energy of the visible units), no context;
- a plain callable ``fn(x)`` or ``fn(x, context)``.

A sequence of these is an ensemble whose energy is the mean of its members' energies.
:func:`as_energy` turns any of them into an :class:`EnergyView`, so that an RBM plugs in with
no adapter at all (``Generator(rbm)``, ``AnomalyScorer(rbm)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ebrl.energies import Energy
from ebrl.validation import check_positive_float, check_tensor

EnergyFn = Callable[[Tensor], Tensor]


@runtime_checkable
class HasFreeEnergy(Protocol):
    """What a Boltzmann machine exposes: the free energy of visible vectors."""

    def free_energy(self, v: Tensor) -> Tensor: ...


EnergyLike = Energy | HasFreeEnergy | Callable[..., Tensor] | Sequence[Any]


class EnergyView:
    """A uniform read-only view of an energy-like object (or an ensemble of them).

    Args:
        model: an ``Energy``, an object with ``free_energy(v)``, a callable ``fn(x[, context])``,
            or a non-empty sequence of these (an ensemble: energies are averaged).
    """

    def __init__(self, model: EnergyLike) -> None:
        if isinstance(model, Sequence) and not isinstance(model, str | bytes):
            if len(model) == 0:
                raise ValueError("energy must be a non-empty sequence when given as an ensemble, got []")
            self.members = [_single(m) for m in model]
        else:
            self.members = [_single(model)]
        self.model = model
        first = self.members[0]
        self.x_dim: int | None = getattr(first, "x_dim", None) or getattr(first, "n_visible", None)
        self.context_dim: int = int(getattr(first, "context_dim", 0) or 0)

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [m for m in self.members if isinstance(m, torch.nn.Module)]

    @property
    def device(self) -> torch.device:
        for m in self.modules:
            for p in m.parameters():
                return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for m in self.modules:
            for p in m.parameters():
                return p.dtype
        return torch.get_default_dtype()

    def check_x(self, name: str, x: Any) -> Tensor:
        """Check x is a float tensor whose last dim is the energy's x_dim (when known)."""
        return check_tensor(name, x, last_dim=self.x_dim)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Mean member energy of ``x`` (``(..., dim)`` -> ``x.shape[:-1]``)."""
        total = _member_energy(self.members[0], x, context)
        for m in self.members[1:]:
            total = total + _member_energy(m, x, context)
        return total / len(self.members) if len(self.members) > 1 else total

    def condition(self, context: Tensor | None = None) -> EnergyFn:
        """x -> E(x | context) for a fixed context (what a sampler runs on)."""
        if len(self.members) == 1 and isinstance(self.members[0], Energy):
            return self.members[0].condition(context)
        return lambda x: self.energy(x, context)


def _single(model: Any) -> Any:
    if isinstance(model, Energy | HasFreeEnergy) or callable(model):
        return model
    raise TypeError(
        "energy must be an ebrl Energy, an object with free_energy(v), a callable fn(x[, context]) "
        f"or a sequence of these, got {type(model).__name__}"
    )


def _member_energy(m: Any, x: Tensor, context: Tensor | None) -> Tensor:
    if isinstance(m, Energy):
        return m.energy(x, context)
    if isinstance(m, HasFreeEnergy):
        if context is not None:
            raise ValueError("context must be None for an energy given by free_energy(v) (e.g. an RBM)")
        return m.free_energy(x)
    return m(x) if context is None else m(x, context)


def as_energy(model: EnergyLike | EnergyView) -> EnergyView:
    """Wrap ``model`` in an :class:`EnergyView` (returned unchanged if it already is one)."""
    return model if isinstance(model, EnergyView) else EnergyView(model)


def check_sigma(sigma: Any, name: str = "sigma") -> float:
    """A noise level sigma: a finite float > 0."""
    return check_positive_float(name, sigma)


def noise_context(sigma: Tensor, context: Tensor | None) -> Tensor:
    """The context of a noise-conditional energy E(x | c, sigma): log sigma appended to c.

    ``sigma`` has shape ``S`` (one level per leading index) and ``context`` ``S + (c,)`` or None;
    the result is ``S + (c + 1,)``. Log sigma, not sigma, because the levels of a multi-scale
    schedule are geometric (Song & Ermon 2019, "NCSN").
    """
    log_sigma = sigma.log().unsqueeze(-1)
    if context is None:
        return log_sigma
    return torch.cat([context, log_sigma.expand(*context.shape[:-1], 1)], dim=-1)


def input_grad(fn: EnergyFn, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """E(x) and dE/dx; with ``create_graph`` the gradient stays differentiable in the parameters
    (score matching); without it, no parameter's ``.grad`` is touched."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = fn(x)
        if e.shape != x.shape[:-1]:
            raise ValueError(
                f"the energy must map x of shape {tuple(x.shape)} to shape {tuple(x.shape[:-1])}, "
                f"got {tuple(e.shape)}"
            )
        (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
    return e, g

