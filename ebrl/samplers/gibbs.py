"""Block Gibbs sampling of models with exact conditionals (the Boltzmann machines).

Why this is not a :class:`~ebrl.samplers.Sampler`: a Sampler targets exp(-E(x)/T) on a continuous
box from the energy function alone (and its input gradient), starts chains uniformly on the box
and tempers by T. A Gibbs kernel needs none of that and something the energy function cannot
give: the model's exact conditional distributions, block by block (``p(h | v)`` then ``p(v | h)``
for an RBM). Its states are binary, or unbounded reals for Gaussian visible units, and the
random numbers of a block are uniform or Gaussian as the model decides, so they are drawn inside
the model's block update rather than by a separate ``draw``. The class keeps the Sampler's shape
otherwise: :meth:`GibbsSampler.init` builds a :class:`ChainState`, :meth:`GibbsSampler.step` is
the kernel, one loop runs it, and :meth:`GibbsSampler.run_chains` returns a
:class:`SampleResult` (docs/architecture.md, "Samplers").
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ebrl.samplers.state import ChainState, SampleResult
from ebrl.validation import check_generator, check_int


@runtime_checkable
class GibbsModel(Protocol):
    """A model that the Gibbs sampler can run: exact block updates and an energy of chain states."""

    def gibbs_sweep(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One sweep of block updates, each block drawn from its exact conditional given the rest,
        of chain states ``x`` ``(n, dim)`` (the model may update ``x`` in place and return it)."""
        ...

    def chain_energy(self, x: Tensor) -> Tensor:
        """The energy whose Boltzmann distribution the sweep leaves invariant, ``(n,)``: the free
        energy F(v) of visible states, or the joint energy of full states."""
        ...


class GibbsSampler:
    """Runs ``n_steps`` Gibbs sweeps of a :class:`GibbsModel` on a batch of independent chains.

    A sweep leaves the model's distribution ``p(x) ∝ exp(-E(x))`` invariant, so chains started
    anywhere converge to it (Geman & Geman 1984); for an RBM a sweep is the block-Gibbs step
    ``h ~ p(h | v)``, ``v ~ p(v | h)`` (Hinton 2002). Persistent chains (PCD) are simply the
    positions a caller keeps and passes back in.

    Args:
        n_steps: number of sweeps K per call.
    """

    def __init__(self, n_steps: int = 1) -> None:
        self.n_steps = check_int("n_steps", n_steps, minimum=1)

    def init(self, model: GibbsModel, x0: Tensor) -> ChainState:
        """The state at the starting points ``x0`` ``(n, dim)``: positions and their energies."""
        return ChainState(x0, model.chain_energy(x0))

    def step(self, model: GibbsModel, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The kernel: one sweep. A Gibbs move needs neither the energy nor its gradient, so it maps
        positions to positions; energies are evaluated only where a result reports them."""
        return model.gibbs_sweep(x, generator)

    def run(
        self, model: GibbsModel, x: Tensor, generator: torch.Generator | None, n_steps: int | None = None
    ) -> Tensor:
        """``n_steps`` (default :attr:`n_steps`) sweeps from ``x``; returns the final positions only
        (what a training loop wants: no energies evaluated). ``x`` may be updated in place."""
        for _ in range(self.n_steps if n_steps is None else n_steps):
            x = self.step(model, x, generator)
        return x

    def run_chains(
        self, model: GibbsModel, x0: Tensor, generator: torch.Generator | None = None
    ) -> SampleResult:
        """Run the chains from ``x0`` ``(n, dim)`` (not modified) and return the final states.

        Returns:
            A :class:`SampleResult` with one batch row: ``samples`` ``(1, n, dim)``, ``energy``
            ``(1, n)`` (the model's :meth:`GibbsModel.chain_energy`), ``energy_drop``; no gradient
            norm or acceptance (every Gibbs move is accepted).
        """
        if not isinstance(model, GibbsModel):
            raise TypeError(
                f"model must have gibbs_sweep and chain_energy (a Boltzmann machine), "
                f"got {type(model).__name__}"
            )
        if not isinstance(x0, Tensor) or x0.ndim != 2:
            raise ValueError(
                f"x0 must be a (n, dim) tensor of chain states, got {getattr(x0, 'shape', x0)!r}"
            )
        check_generator("generator", generator)
        with torch.no_grad():
            start = self.init(model, x0)
            x = self.run(model, start.position.clone(), generator)
            end = ChainState(x, model.chain_energy(x))
        return SampleResult(
            samples=end.position[None],
            energy=end.energy[None],
            energy_drop=(start.energy - end.energy).mean(),
        )
