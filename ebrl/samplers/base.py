"""The one sampler interface and its shared loop (kernels' types live in ebrl/samplers/state.py).

A sampler draws x from p(x) ∝ exp(-E(x)/T) restricted to a box, over a whole
``(batch, chains, dim)`` tensor at once: the batch are independent targets (one per state, say),
the chains independent samples per target. There is never a Python loop over batch or chains;
the only loop is over MCMC steps.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ebrl.energies import Energy
from ebrl.samplers.state import (
    ChainState,
    Draws,
    EnergyFn,
    Kernel,
    NonFiniteTracker,
    SampleResult,
    StepInfo,
    check_energy_shape,
    check_step_size,
    energy_and_grad,
    reflect,
    step_schedule,
)
from ebrl.validation import check_choice, check_int, check_positive_float

# The kernels' vocabulary is importable from here too (the samplers and user kernels do).
__all__ = [
    "COMPILE_MODES", "ChainState", "Draws", "EnergyFn", "Init", "Kernel", "NonFiniteTracker",
    "SampleResult", "Sampler", "StepInfo", "check_energy_shape", "check_step_size",
    "energy_and_grad", "reflect", "step_schedule",
]

Init = Literal["uniform", "persistent"] | Tensor
# torch.compile modes accepted by ``Sampler(compile=...)`` besides True/False.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Deterministic mode starts every search from the same points, whatever the caller's RNG state.
FIXED_INIT_SEED = 0


class Sampler(ABC):
    """Base class: MCMC (or search) over ``(batch, chains, dim)`` inside the box ``bounds``.

    A sampler is a set of small kernels with explicit state (BlackJAX's ``init``/``step``):
    :meth:`init` builds the :class:`ChainState` at the starting points, :meth:`step` makes one
    move of the exact (or approximate) chain and :meth:`search_step` one move of the noise-free
    search that ``deterministic=True`` runs; :meth:`draw` makes a step's random numbers. One
    shared loop, :meth:`run_chains`, owns everything else: the non-finite check, diagnostics,
    warm-up adaptation (:meth:`adapt`) and the compiled path. :meth:`sample` resolves the
    initialisation (uniform on the box, given tensors, or the chains left by the previous call in
    :attr:`chains`) and checks the arguments.

    Args:
        n_steps: number of MCMC steps K (energy/gradient evaluations per chain).
        bounds: the box [low, high] on every coordinate (actions: the normalised [-1, 1]).
        compile: run each kernel step through :func:`torch.compile` (one fused graph per step,
            gradient included; the first call compiles for a few seconds per shape). ``True`` uses
            torch.compile's default mode; a mode name (``"reduce-overhead"``: CUDA graphs on a GPU,
            ``"max-autotune"``, ...) is passed on. It pays where a step is many small ops: few states
            and chains on CPU (see experiments/results/sampler_throughput.md). The eager path
            (``False``) is the default.
    """

    # Whether run_chains takes a per-state ``step_size`` tensor (see :meth:`sample`).
    supports_step_size: bool = False

    def __init__(
        self, n_steps: int, bounds: Sequence[float] = (-1.0, 1.0), compile: bool | str = False
    ) -> None:
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        if not (isinstance(bounds, Sequence) and len(bounds) == 2):
            raise TypeError(f"bounds must be a pair (low, high), got {bounds!r}")
        low, high = (float(b) for b in bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high, got {tuple(bounds)!r}")
        if not (isinstance(compile, bool) or compile in COMPILE_MODES):
            raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {compile!r}")
        self.low, self.high = low, high
        self.compile = compile
        #: The chains left by the last finished stochastic call (what ``init="persistent"`` resumes),
        #: ``(batch, chains, dim)``, or None.
        self.chains: Tensor | None = None
        self._reset_mask: Tensor | None = None
        self._compiled: dict[str, Kernel] = {}

    # ------------------------------------------------------------------ kernels

    @abstractmethod
    def init(
        self, energy_fn: EnergyFn, x0: Tensor, step_size: Tensor | None, deterministic: bool
    ) -> ChainState:
        """The state at the starting points ``x0`` (evaluates E, and dE/dx where the kernel needs it)."""

    @abstractmethod
    def step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        """One move of the chain targeting exp(-E/temperature) on the box."""

    def search_step(
        self, energy_fn: EnergyFn, state: ChainState, draws: Draws, temperature: Tensor, last: bool
    ) -> tuple[ChainState, StepInfo]:
        """One move of the noise-free search (``deterministic=True``); by default the chain's own
        step with the draws :meth:`draw` gives in deterministic mode."""
        return self.step(energy_fn, state, draws, temperature, last)

    @abstractmethod
    def draw(
        self, state: ChainState, k: int, generator: torch.Generator | None, deterministic: bool
    ) -> Draws:
        """Step k's random numbers and per-step constants, as tensors."""

    def adapt(self, state: ChainState, info: StepInfo, k: int) -> ChainState | None:
        """Warm-up adaptation after step k; returns the adapted state, or None once warm-up is over
        (the step then counts toward the reported acceptance)."""
        return None

    def finish(
        self, energy_fn: EnergyFn, state: ChainState, temperature: Tensor, generator: torch.Generator | None,
        deterministic: bool,
    ) -> ChainState:
        """Anything done once after the last step (e.g. a final resampling)."""
        return state

    # ------------------------------------------------------------------ the shared loop

    def _kernel(self, name: str) -> Kernel:
        kernel: Kernel = getattr(self, name)
        if not self.compile:
            return kernel
        if name not in self._compiled:
            mode = None if self.compile is True else self.compile
            self._compiled[name] = torch.compile(kernel, dynamic=False, fullgraph=True, mode=mode)
        return self._compiled[name]

    def run_chains(
        self,
        energy_fn: EnergyFn,
        x0: Tensor,
        temperature: float,
        generator: torch.Generator | None,
        deterministic: bool,
        step_size: Tensor | None = None,
    ) -> SampleResult:
        """Run the chains from ``x0`` (``(batch, chains, dim)``, inside the box, owned by the
        sampler) and return the final states with their diagnostics."""
        # The temperature is a tensor so that a compiled step does not specialise on its value
        # (SQL's alpha changes every gradient step).
        temp = torch.tensor(temperature, device=x0.device, dtype=x0.dtype)
        state = self.init(energy_fn, x0, step_size, deterministic)
        e0 = state.energy
        tracker = NonFiniteTracker()
        watch0 = {"energy": state.energy.sum()}
        if state.grad is not None:
            watch0["gradient"] = state.grad.sum()
        tracker.update(0, **watch0)
        kernel = self._kernel("search_step" if deterministic else "step")
        grad_norms = [] if state.grad is None else [state.grad.norm(dim=-1).sum()]
        accepted: list[Tensor] = []
        with torch.no_grad():
            # CUDA graphs: the modes of torch.compile that capture them, on a CUDA device.
            graphs = self.compile in ("reduce-overhead", "max-autotune") and x0.is_cuda
            for k in range(self.n_steps):
                draws = self.draw(state, k, generator, deterministic)
                if graphs:
                    # A CUDA-graph replay reuses its output memory: mark each step as a new one
                    # and keep only copies of what outlives it (the diagnostics below).
                    torch.compiler.cudagraph_mark_step_begin()
                state, info = kernel(energy_fn, state, draws, temp, k == self.n_steps - 1)
                if graphs:
                    state = ChainState(*(None if t is None else t.clone() for t in state))
                    info = StepInfo(
                        None if info.accepted is None else info.accepted.clone(),
                        None if info.grad_norm is None else info.grad_norm.clone(),
                        {name: v.clone() for name, v in info.watch.items()},
                    )
                tracker.update(k + 1, **info.watch)
                if info.grad_norm is not None:
                    grad_norms.append(info.grad_norm)
                if info.accepted is not None and not deterministic:
                    adapted = self.adapt(state, info, k)
                    if adapted is None:
                        accepted.append(info.accepted.mean())
                    else:
                        state = adapted
            state = self.finish(energy_fn, state, temp, generator, deterministic)
        tracker.check(type(self).__name__, self.n_steps)
        step = state.log_step_size
        n_chain_grads = len(grad_norms) * x0.shape[0] * x0.shape[1]
        return SampleResult(
            samples=state.position,
            energy=state.energy,
            energy_drop=(e0 - state.energy).mean(),
            grad_norm=torch.stack(grad_norms).sum() / n_chain_grads if grad_norms else None,
            acceptance=None if deterministic or not self._is_mh else self._mean_or_zero(accepted, x0),
            step_size=None if step is None else step.exp().reshape(x0.shape[0], -1).mean(1),
        )

    # Whether the kernel is a Metropolis-Hastings chain (reports an acceptance rate).
    _is_mh: bool = False

    @staticmethod
    def _mean_or_zero(values: list[Tensor], like: Tensor) -> Tensor:
        return torch.stack(values).mean() if values else torch.zeros((), dtype=like.dtype, device=like.device)

    # ------------------------------------------------------------------ public entry point

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
            deterministic: noise-free search (:meth:`search_step`) from a fixed initialisation.
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
        if step_size is not None:
            if not self.supports_step_size:
                raise ValueError(f"step_size: {type(self).__name__} takes no per-state step size")
            if not isinstance(step_size, Tensor) or tuple(step_size.shape) != (x0.shape[0],):
                raise ValueError(
                    f"step_size must be a tensor of shape ({x0.shape[0]},), got {step_size!r:.80}"
                )
            step_size = step_size.detach()
        if deterministic:
            generator = torch.Generator(device=x0.device).manual_seed(FIXED_INIT_SEED)
        result = self.run_chains(energy_fn, x0, temperature, generator, deterministic, step_size)
        if not deterministic:
            # Only a finished run replaces the persistent chains (a failed one leaves them as they were).
            self.chains = result.samples.detach()
            self._reset_mask = None
        return result

    def state_dict(self) -> dict[str, Tensor | None]:
        """The sampler's only state between calls: the persistent chains and the rows marked for a
        restart (copies; None where there are none). Round-trips through :meth:`load_state_dict`."""
        return {
            "chains": None if self.chains is None else self.chains.detach().clone(),
            "reset_mask": None if self._reset_mask is None else self._reset_mask.clone(),
        }

    def load_state_dict(
        self, state: dict[str, Tensor | None], device: torch.device | str | None = None
    ) -> None:
        """Restore what :meth:`state_dict` returned (moved to ``device`` when given)."""
        unknown = set(state) - {"chains", "reset_mask"}
        if unknown:
            raise ValueError(f"state has unknown keys {sorted(unknown)}; accepted: ['chains', 'reset_mask']")
        chains, mask = state.get("chains"), state.get("reset_mask")
        if chains is not None and (not isinstance(chains, Tensor) or chains.dim() != 3):
            raise ValueError(
                f"state['chains'] must be a (batch, chains, dim) tensor or None, got {chains!r:.60}"
            )
        self.chains = None if chains is None else chains.detach().to(device or chains.device).clone()
        self._reset_mask = None if mask is None else mask.to(device or mask.device).clone()

    def reset_chains(self, mask: Tensor | None = None) -> None:
        """Forget the persistent chains (all of them, or the batch rows where ``mask`` is True),
        e.g. when an episode ends and its state no longer follows from the previous one."""
        if mask is None or self.chains is None:
            self.chains = None
            self._reset_mask = None
            return
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.chains.device).reshape(-1)
        if mask.shape[0] != self.chains.shape[0]:
            raise ValueError(
                f"mask must have one entry per persistent batch row ({self.chains.shape[0]}), "
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
            fixed = torch.Generator(device="cpu").manual_seed(FIXED_INIT_SEED)
            start = self.uniform((1, *shape[1:]), dtype=dtype, generator=fixed).to(device)
            return start.expand(shape).clone()
        x0 = self.uniform(shape, device, dtype, generator)
        chains = self.chains
        if init == "persistent" and chains is not None and tuple(chains.shape) == shape:
            keep = chains.to(device=x0.device, dtype=x0.dtype)
            if self._reset_mask is not None:
                keep = torch.where(self._reset_mask.to(x0.device)[:, None, None], x0, keep)
            x0 = keep.clone()
        return x0
