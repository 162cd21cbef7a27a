"""The kernels' vocabulary: chain state, step info, results, and the pieces every kernel shares
(energy and gradient, reflection at the box walls, step schedules, the non-finite tracker).

See :class:`ebrl.samplers.Sampler` for how kernels are put together, and docs/architecture.md,
"Samplers".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ebrl.errors import NonFiniteError, first_non_finite
from ebrl.validation import check_positive_float

EnergyFn = Callable[[Tensor], Tensor]
# A step's random numbers and per-step constants, by name (see Sampler.draw).
Draws = dict[str, Tensor]


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        samples: final chain states, ``(batch, chains, dim)``, inside the box.
        energy: energy E (not divided by the temperature) of each final state, ``(batch, chains)``.
        energy_drop: mean over chains of E(initial) - E(final) (a scalar tensor).
        grad_norm: mean Euclidean norm of the input gradient of E over steps and chains, or None
            for derivative-free samplers.
        acceptance: mean Metropolis-Hastings acceptance rate after warm-up, or None where no MH
            step is taken (deterministic searches included).
        step_size: the final per-state step size, ``(batch,)``, for samplers that keep one (MALA).
    """

    samples: Tensor
    energy: Tensor
    energy_drop: Tensor
    grad_norm: Tensor | None = None
    acceptance: Tensor | None = None
    step_size: Tensor | None = None

    def best(self) -> Tensor:
        """The lowest-energy chain of each batch element, ``(batch, dim)``."""
        idx = self.energy.argmin(dim=1)
        return self.samples[torch.arange(self.samples.shape[0], device=idx.device), idx]

    def diagnostics(self) -> dict[str, float]:
        """Scalars for a logger, namespaced ``sampler/`` (one host sync per value)."""
        out = {"sampler/energy_drop": float(self.energy_drop), "sampler/energy": float(self.energy.mean())}
        if self.grad_norm is not None:
            out["sampler/grad_norm"] = float(self.grad_norm)
        if self.acceptance is not None:
            out["sampler/acceptance"] = float(self.acceptance)
        return out


class ChainState(NamedTuple):
    """Everything a kernel step needs to know about the chains, passed in and returned explicitly
    (BlackJAX's ``init``/``step`` convention): a step is a function of its inputs alone, which is
    what lets :func:`torch.compile` capture it (docs/architecture.md, "Samplers").

    Attributes:
        position: x, ``(batch, chains, dim)``.
        energy: E(x), ``(batch, chains)``.
        grad: dE/dx at x, ``(batch, chains, dim)``, or None (derivative-free kernels; and
            Langevin after its last move, whose gradient nothing uses).
        log_step_size: log eps, ``(batch, 1, 1)`` (one per state) or ``(batch, chains, 1)`` (one per
            chain, deterministic MALA search), or None for kernels without an adaptive step.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor | None = None
    log_step_size: Tensor | None = None


class StepInfo(NamedTuple):
    """What one kernel step reports besides the new state.

    Attributes:
        accepted: ``(batch, chains)`` 0/1 (as the state's dtype) for MH kernels, else None.
        grad_norm: sum over chains of |dE/dx| at the new state (a 0-d tensor), or None.
        watch: named scalar sums (NaN and inf propagate through a sum) that the shared loop checks
            for non-finite values once, when the run ends.
    """

    accepted: Tensor | None
    grad_norm: Tensor | None
    watch: dict[str, Tensor]


class NonFiniteTracker:
    """Finds the first step at which a watched quantity was NaN or infinite, with one host sync.

    The loop hands it a scalar reduction per quantity and step (a sum: NaN and inf propagate
    through it); checking each step with ``.item()`` would synchronise a GPU every step, so the
    scalars are stacked and inspected once, when the loop ends.
    """

    def __init__(self) -> None:
        self._records: list[tuple[int, str]] = []
        self._values: list[Tensor] = []

    def update(self, step: int, **sums: Tensor) -> None:
        """Record one scalar sum per named quantity at ``step`` (no host sync)."""
        for name, value in sums.items():
            self._records.append((step, name))
            self._values.append(value)

    def check(self, sampler: str, n_steps: int) -> None:
        """Raise NonFiniteError naming the first non-finite quantity and its step (one host sync)."""
        bad = first_non_finite(**{str(i): v for i, v in enumerate(self._values)})
        if bad is not None:
            step, name = self._records[int(bad)]
            raise NonFiniteError(
                f"{sampler}: the {name} became NaN or infinite at step {step} of {n_steps}; "
                "check the energy for overflow or lower the step size"
            )


def check_energy_shape(e: Tensor, x: Tensor) -> None:
    """Raise ValueError unless ``e`` has shape ``x.shape[:-1]`` (one energy per point)."""
    if e.shape != x.shape[:-1]:
        raise ValueError(
            f"the energy must map x of shape {tuple(x.shape)} to shape {tuple(x.shape[:-1])}, "
            f"got {tuple(e.shape)}"
        )


def energy_and_grad(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) and dE/dx without touching any parameter's ``.grad``.

    An energy function that knows its gradient in closed form says so with a callable
    ``closed_form_grad`` attribute (x -> (E, dE/dx); e.g. the twin ReLU critics of
    :meth:`ebrl.energies.PessimisticEnergy.condition`): it is used as is, with no graph at all.
    Otherwise, eager: ``torch.autograd.grad`` with x the only input (the fastest eager form). Inside
    :func:`torch.compile` (the compiled path): ``torch.func.grad``, which the compiler traces
    into one graph with the step around it, where ``autograd.grad`` would break the graph.
    """
    closed_form = getattr(energy_fn, "closed_form_grad", None)
    if closed_form is not None:
        e, g = closed_form(x)
        check_energy_shape(e, x)
        return e, g
    if torch.compiler.is_compiling():

        def with_aux(a: Tensor) -> tuple[Tensor, Tensor]:
            e = energy_fn(a)
            return e.sum(), e

        g, e = torch.func.grad(with_aux, has_aux=True)(x)
        return e, g
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy_fn(x)
        check_energy_shape(e, x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def reflect(x: Tensor, low: float, high: float) -> Tensor:
    """Fold x back into [low, high] by mirror reflection at the walls.

    Reflection keeps the uniform measure on the box invariant, so a Langevin chain with reflecting
    walls targets the *truncated* density; clipping would pile mass onto the faces.
    """
    width = high - low
    r = torch.remainder(x - low, 2 * width)
    return r.sub_(width).abs_().neg_().add_(low + width)


# A kernel step: (energy_fn, state, draws, temperature, last) -> (state, info). ``draws`` holds the
# step's random numbers and per-step constants as tensors (drawn outside, so the same generator
# gives the same samples eagerly and compiled); ``last`` is True on the final step.
Kernel = Callable[[EnergyFn, ChainState, Draws, Tensor, bool], tuple[ChainState, StepInfo]]


def check_step_size(name: str, value: float) -> float:
    """Step sizes are finite and > 0."""
    return check_positive_float(name, value)


def step_schedule(
    kind: str, n_steps: int, start: float, final: float | None, power: float = 2.0
) -> list[float]:
    """Step sizes eta_0..eta_{K-1}.

    ``polynomial`` is Implicit BC's schedule (Florence et al. 2021, App. B):
    eta_k = (eta_0 - eta_final) (1 - k/(K-1))^power + eta_final; ``exponential`` interpolates
    geometrically from eta_0 to eta_final; ``constant`` keeps eta_0.
    """
    if kind == "constant" or n_steps == 1:
        return [start] * n_steps
    assert final is not None
    if kind == "polynomial":
        return [(start - final) * (1 - k / (n_steps - 1)) ** power + final for k in range(n_steps)]
    return [start * (final / start) ** (k / (n_steps - 1)) for k in range(n_steps)]
