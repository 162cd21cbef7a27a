"""The one sampler interface, its result type, and the pieces every sampler shares.

A sampler draws x from p(x) ∝ exp(-E(x)/T) restricted to a box, over a whole
``(batch, chains, dim)`` tensor at once: the batch are independent targets (one per state, say),
the chains independent samples per target. There is never a Python loop over batch or chains;
the only loop is over MCMC steps.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ebrl._validation import check_choice, check_int, check_positive_float
from ebrl.energies import Energy
from ebrl.errors import NonFiniteError

EnergyFn = Callable[[Tensor], Tensor]
Init = Literal["uniform", "persistent"] | Tensor

# Deterministic mode starts every search from the same points, whatever the caller's RNG state.
_FIXED_INIT_SEED = 0


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        samples: final chain states, ``(batch, chains, dim)``, inside the box.
        energy: energy E (not divided by the temperature) of each final state, ``(batch, chains)``.
        energy_drop: mean over chains of E(initial) - E(final) (a scalar tensor).
        grad_norm: mean Euclidean norm of the input gradient of E over steps and chains, or None
            for derivative-free samplers.
        acceptance: mean Metropolis-Hastings acceptance rate, or None where no MH step is taken.
    """

    samples: Tensor
    energy: Tensor
    energy_drop: Tensor
    grad_norm: Tensor | None = None
    acceptance: Tensor | None = None

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


class NonFiniteTracker:
    """Finds the first step at which a watched quantity was NaN or infinite, with one host sync.

    Samplers hand it a scalar reduction per quantity and step (a sum: NaN and inf propagate
    through it); checking each step with ``.item()`` would synchronise a GPU every step, so the
    scalars are stacked and inspected once, when the loop ends.
    """

    def __init__(self) -> None:
        self._records: list[tuple[int, str]] = []
        self._values: list[Tensor] = []

    def update(self, step: int, **sums: Tensor) -> None:
        for name, value in sums.items():
            self._records.append((step, name))
            self._values.append(value)

    def check(self, sampler: str, n_steps: int) -> None:
        if not self._values:
            return
        bad = ~torch.isfinite(torch.stack(self._values))
        if bool(bad.any()):
            step, name = self._records[int(bad.nonzero()[0, 0])]
            raise NonFiniteError(
                f"{sampler}: the {name} became NaN or infinite at step {step} of {n_steps}; "
                "check the energy for overflow or lower the step size"
            )


def energy_and_grad(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) and dE/dx without touching any parameter's ``.grad`` (autograd.grad, inputs=x only)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy_fn(x)
        if e.shape != x.shape[:-1]:
            raise ValueError(
                f"the energy must map x of shape {tuple(x.shape)} to shape {tuple(x.shape[:-1])}, "
                f"got {tuple(e.shape)}"
            )
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


class Sampler(ABC):
    """Base class: MCMC (or search) over ``(batch, chains, dim)`` inside the box ``bounds``.

    Subclasses implement one method, :meth:`run_chains`. :meth:`sample` resolves the
    initialisation (uniform on the box, given tensors, or the chains left by the previous call),
    checks the arguments, and keeps the final chains for the next ``init="persistent"`` call.

    Args:
        n_steps: number of MCMC steps K (energy/gradient evaluations per chain).
        bounds: the box [low, high] on every coordinate (actions: the normalised [-1, 1]).
    """

    # Whether run_chains takes a per-state ``step_size`` tensor (see :meth:`sample`).
    supports_step_size: bool = False

    def __init__(self, n_steps: int, bounds: Sequence[float] = (-1.0, 1.0)) -> None:
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        if not (isinstance(bounds, Sequence) and len(bounds) == 2):
            raise TypeError(f"bounds must be a pair (low, high), got {bounds!r}")
        low, high = (float(b) for b in bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high, got {tuple(bounds)!r}")
        self.low, self.high = low, high
        self._chains: Tensor | None = None
        self._reset_mask: Tensor | None = None

    @abstractmethod
    def run_chains(
        self,
        energy_fn: EnergyFn,
        x0: Tensor,
        temperature: float,
        generator: torch.Generator | None,
        deterministic: bool,
    ) -> SampleResult:
        """Run the chains from ``x0`` (``(batch, chains, dim)``, inside the box, owned by the
        sampler) and return the final states with their diagnostics. With ``deterministic``
        the run is noise-free (or, for a search that needs randomness, seeded internally)."""

    def uniform(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Uniform draws on the box with the given shape."""
        u = torch.rand(tuple(shape), device=device, dtype=dtype, generator=generator)
        return self.low + (self.high - self.low) * u

    def sample(
        self,
        energy: Energy | EnergyFn,
        init: Init = "uniform",
        *,
        shape: Sequence[int] | None = None,
        context: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        step_size: Tensor | None = None,
    ) -> SampleResult:
        """Draw samples of p(x) ∝ exp(-E(x)/temperature) on the box.

        Args:
            energy: an :class:`~ebrl.energies.Energy` (conditioned on ``context``) or any
                function mapping ``(batch, chains, dim)`` to ``(batch, chains)`` energies.
            init: ``"uniform"`` (fresh uniform chains), a tensor ``(batch, chains, dim)`` of
                starting points inside the box (not modified), or ``"persistent"`` (the chains
                left by this sampler's previous call, when their shape equals ``shape``;
                uniform otherwise, and for rows marked by :meth:`reset_chains`).
            shape: ``(batch, chains, dim)``; required unless ``init`` is a tensor.
            context: the conditioning input c of a conditional energy (e.g. the states).
            temperature: T (the Boltzmann temperature alpha of soft Q-learning), > 0.
            generator: the random generator for initialisation and noise (same seed, same result).
            deterministic: noise-free search from a fixed initialisation (ARCHITECTURE.md).
            device, dtype: where uniform chains live when ``energy`` is a plain function;
                an ``Energy``'s own parameters decide otherwise.
            step_size: optional per-state first step size, ``(batch,)``, > 0 (only for samplers
                with ``supports_step_size``, e.g. :class:`~ebrl.samplers.MALA`).
        """
        temperature = check_positive_float("temperature", temperature)
        if isinstance(energy, Energy):
            device, dtype = energy.device, energy.dtype
            energy_fn = energy.condition(context)
        elif callable(energy):
            if context is not None:
                raise ValueError("context is only accepted with an Energy module, not a plain function")
            energy_fn = energy
        else:
            raise TypeError(f"energy must be an ebrl Energy or a callable, got {type(energy).__name__}")
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "samplers need autograd for input gradients: call them outside torch.inference_mode() "
                "(torch.no_grad() is fine)"
            )
        x0 = self._initial_chains(init, shape, device, dtype, generator, deterministic)
        extra = {}
        if step_size is not None:
            if not self.supports_step_size:
                raise ValueError(f"step_size: {type(self).__name__} takes no per-state step size")
            if not isinstance(step_size, Tensor) or tuple(step_size.shape) != (x0.shape[0],):
                raise ValueError(
                    f"step_size must be a tensor of shape ({x0.shape[0]},), got {step_size!r:.80}"
                )
            extra["step_size"] = step_size.detach()
        if deterministic:
            generator = torch.Generator(device=x0.device).manual_seed(_FIXED_INIT_SEED)
        result = self.run_chains(energy_fn, x0, temperature, generator, deterministic, **extra)
        if not deterministic:
            # Only a finished run replaces the persistent chains (a failed one leaves them as they were).
            self._chains = result.samples.detach()
            self._reset_mask = None
        return result

    def reset_chains(self, mask: Tensor | None = None) -> None:
        """Forget the persistent chains (all of them, or the batch rows where ``mask`` is True),
        e.g. when an episode ends and its state no longer follows from the previous one."""
        if mask is None or self._chains is None:
            self._chains = None
            self._reset_mask = None
            return
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self._chains.device).reshape(-1)
        if mask.shape[0] != self._chains.shape[0]:
            raise ValueError(
                f"mask must have one entry per persistent batch row ({self._chains.shape[0]}), "
                f"got {mask.shape[0]}"
            )
        self._reset_mask = mask if self._reset_mask is None else self._reset_mask | mask

    def _initial_chains(
        self,
        init: Init,
        shape: Sequence[int] | None,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        generator: torch.Generator | None,
        deterministic: bool,
    ) -> Tensor:
        if isinstance(init, Tensor):
            if init.dim() != 3:
                raise ValueError(f"init must have shape (batch, chains, dim), got {tuple(init.shape)}")
            if shape is not None and tuple(init.shape) != tuple(shape):
                raise ValueError(f"init has shape {tuple(init.shape)} but shape={tuple(shape)} was given")
            if not init.is_floating_point():
                raise TypeError(f"init must be a floating-point tensor, got dtype {init.dtype}")
            inside = (init >= self.low) & (init <= self.high)
            if not bool(inside.all()):
                raise ValueError(f"init must lie inside the box [{self.low}, {self.high}] everywhere")
            return init.detach().clone()
        check_choice("init", init, ["uniform", "persistent"])
        if shape is None:
            raise ValueError(f"shape=(batch, chains, dim) is required with init={init!r}")
        shape = tuple(shape)
        if len(shape) != 3:
            raise ValueError(f"shape must be (batch, chains, dim), got {shape}")
        for name, n in zip(("batch", "chains", "dim"), shape, strict=True):
            check_int(f"shape[{name}]", n, minimum=1)
        if deterministic:
            # One fixed set of starting points shared by every batch row: the answer for a state
            # must not depend on which row of the batch it sits in.
            fixed = torch.Generator(device="cpu").manual_seed(_FIXED_INIT_SEED)
            start = self.uniform((1, *shape[1:]), dtype=dtype, generator=fixed).to(device)
            return start.expand(shape).clone()
        x0 = self.uniform(shape, device, dtype, generator)
        chains = self._chains
        if init == "persistent" and chains is not None and tuple(chains.shape) == shape:
            keep = chains.to(device=x0.device, dtype=x0.dtype)
            if self._reset_mask is not None:
                keep = torch.where(self._reset_mask.to(x0.device)[:, None, None], x0, keep)
            x0 = keep.clone()
        return x0


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
