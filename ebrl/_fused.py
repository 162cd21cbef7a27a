"""SQL's default act as one pure function, run through torch.compile: ``BoltzmannPolicy(compile_act=True)``.

At one state (acting in one env) the SIR + MALA search of :meth:`ebrl.BoltzmannPolicy.sample` is a
few hundred tiny ops, bound by per-op overhead (~10x SAC's ``predict`` on one CPU thread). Here the
same algorithm is one function of the weights, the states and pre-drawn random numbers, built from
the library's own pieces (:class:`ebrl._stacked.StackedMax`, the proposal's density, the MALA
kernel :meth:`ebrl.samplers.MALA.step`), so :func:`torch.compile` turns it into one fused kernel
(docs/architecture.md, "Speed"). It applies to the configuration SQL ships: a proposal with N > 1
SIR candidates, a MALA sampler without in-call adaptation, and stackable ReLU critics
(:class:`ebrl.energies.PessimisticEnergy`); anything else runs the eager path.

The only difference from the eager path is how the SIR picks are drawn (Gumbel-max over the log
weights instead of ``torch.multinomial``: the same distribution), so for one generator the two
paths give different draws of the same policy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ebrl._stacked import StackedMax, closed_form_gradient, stack
from ebrl.energies import PessimisticEnergy, stackable
from ebrl.proposals import defensive_draw, mala_first_step
from ebrl.samplers.mala import MALA
from ebrl.samplers.state import ChainState, SampleResult


def fusable(energy: Any, sampler: Any, proposal: Any, n_candidates: int) -> bool:
    """Whether :class:`FusedAct` runs this policy's :meth:`~ebrl.BoltzmannPolicy.sample`."""
    if proposal is None or n_candidates < 2 or type(sampler) is not MALA or sampler.adapt_steps:
        return False
    if not isinstance(energy, PessimisticEnergy) or len(energy.members) < 2 or not stackable(energy.members):
        return False
    with torch.no_grad():
        trunk = stack(energy.members).trunk
    return closed_form_gradient(energy.members[0].act, trunk)


class FusedAct:
    """n actions per state from pi ∝ exp(-E/alpha) by SIR + K MALA steps, fused.

    Args:
        energy, sampler, proposal, n_candidates, defensive: the policy's (see
            :class:`ebrl.BoltzmannPolicy`); :func:`fusable` must hold.
        compiled: run through :func:`torch.compile` (False: the same function eagerly, for tests).
    """

    def __init__(
        self, energy: PessimisticEnergy, sampler: MALA, proposal: Any, n_candidates: int, defensive: float,
        compiled: bool = True,
    ) -> None:
        self.members, self.sampler, self.proposal = list(energy.members), sampler, proposal
        self.n_candidates, self.n_uniform = n_candidates, math.ceil(defensive * n_candidates)
        self.compiled = compiled
        self._fn: Callable[..., tuple[Tensor, ...]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A compiled function neither pickles nor deep-copies: a copy compiles its own.
        return {**self.__dict__, "_fn": None}

    def draws(self, states: Tensor, n: int, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Every random number of one call: q_phi's normals, the uniform candidates, Gumbel noise
        for the SIR picks, and MALA's normals and uniforms."""
        b, d, k, n_u = states.shape[0], self.proposal.act_dim, self.sampler.n_steps, self.n_uniform
        kw: dict[str, Any] = {"device": states.device, "dtype": states.dtype, "generator": generator}
        u = torch.rand((b, n, self.n_candidates), **kw).clamp_min(torch.finfo(states.dtype).tiny)
        return (
            torch.randn((b, self.n_candidates - n_u, d), **kw), torch.rand((b, n_u, d), **kw),
            -torch.log(-torch.log(u)), torch.randn((k, b, n, d), **kw), torch.rand((k, b, n), **kw),
        )

    def act(self, states: Tensor, xi: Tensor, a_u: Tensor, gumbel: Tensor, noise: Tensor, unif: Tensor,
            temp: Tensor, log_step_scale: Tensor) -> tuple[Tensor, ...]:
        """The pure function: (samples, energies, energy drop, mean gradient norm, acceptance,
        step size per state, all watched sums finite)."""
        d, n_steps = self.proposal.act_dim, self.sampler.n_steps
        energy = StackedMax(stack(self.members), self.members[0].act, states, d)
        draw = defensive_draw(self.proposal, states, xi, a_u)
        e_c, g_c = energy.closed_form_grad(draw.actions)
        # SIR: candidate j with probability ∝ exp(-E_j/alpha)/q_mix(a_j), by Gumbel-max.
        idx = ((-e_c / temp - draw.log_q)[:, None, :] + gumbel).argmax(-1)
        pick = idx[..., None].expand(-1, -1, d)
        eps = mala_first_step(draw.scale, log_step_scale)
        state = ChainState(
            torch.gather(draw.actions, 1, pick), torch.gather(e_c, 1, idx), torch.gather(g_c, 1, pick),
            eps.log().reshape(-1, 1, 1),
        )
        e0 = state.energy
        watch = [state.energy.sum(), state.grad.sum()]
        grad_norms, accepted = [state.grad.norm(dim=-1).sum()], []
        for k in range(n_steps):
            draws = {"noise": noise[k], "uniform": unif[k]}
            state, info = self.sampler.step(energy, state, draws, temp, k == n_steps - 1)
            watch.extend(info.watch.values())
            grad_norms.append(info.grad_norm)
            accepted.append(info.accepted.mean())
        rows = len(grad_norms) * state.position.shape[0] * state.position.shape[1]
        return (
            state.position, state.energy, (e0 - state.energy).mean(), torch.stack(grad_norms).sum() / rows,
            torch.stack(accepted).mean(), state.log_step_size.exp().reshape(-1),
            torch.isfinite(torch.stack(watch)).all(),
        )

    def __call__(
        self, states: Tensor, n: int, generator: torch.Generator | None, temperature: float,
        log_step_scale: Tensor,
    ) -> SampleResult | None:
        """One call's result, or None when a watched energy or gradient was non-finite (the caller
        then runs the eager path, whose checks name what failed)."""
        if self._fn is None:
            self._fn = torch.compile(self.act, fullgraph=True, dynamic=False) if self.compiled else self.act
        temp = torch.tensor(temperature, device=states.device, dtype=states.dtype)
        draws = self.draws(states, n, generator)
        with torch.no_grad():
            try:
                out = self._fn(states, *draws, temp, log_step_scale)
            except Exception as err:  # no C++ compiler, an unsupported backend, ...
                if self._fn is self.act:
                    raise
                warnings.warn(f"compile_act: torch.compile failed ({type(err).__name__}: {err}); acting "
                              "eagerly from now on", RuntimeWarning, stacklevel=3)
                self._fn = self.act
                out = self._fn(states, *draws, temp, log_step_scale)
        samples, energy, drop, grad_norm, acceptance, step_size, finite = out
        if not bool(finite):
            return None
        return SampleResult(samples, energy, drop, grad_norm, acceptance, step_size)
