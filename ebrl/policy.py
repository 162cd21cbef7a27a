"""The Boltzmann policy pi(a|s) ∝ exp(-E(s, a)/alpha) on the action box, by MCMC action search."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ebrl._fused import FusedAct, fusable
from ebrl.energies import Energy, StateActionEnergy
from ebrl.estimators import importance_log_z
from ebrl.proposals import TanhGaussianProposal, defensive_sample, mala_first_step
from ebrl.samplers import Langevin, Sampler, SampleResult
from ebrl.samplers.base import FIXED_INIT_SEED
from ebrl.validation import check_finite, check_fraction, check_int, check_positive_float, check_tensor

# Gain of the between-call adaptation of the MALA step scale (see BoltzmannPolicy).
STEP_ADAPT_GAIN = 0.05


def default_sampler() -> Langevin:
    """Langevin action search as in the reference soft Q-learning loop (docs/architecture.md, "Samplers"):
    K = 20 steps with a polynomial step decay, moves clipped to a tenth of the box."""
    return Langevin(n_steps=20, step_size=0.1, step_size_final=1e-3, schedule="polynomial", move_clip=0.1)


class BoltzmannPolicy:
    """pi(a|s) ∝ exp(-E(s, a)/alpha) = exp(Q(s, a)/alpha) over actions in [-1, 1]^d.

    Args:
        energy: the state-action energy E(s, a) = -Q(s, a): a :class:`StateActionEnergy`, or any
            conditional :class:`Energy` whose x is the action and whose context is the state.
        sampler: the MCMC action search (default: :func:`default_sampler`).
        temperature: alpha, the entropy temperature of maximum-entropy RL (Haarnoja et al. 2017).
        n_chains: chains per state used by :meth:`mode` (the search keeps the best of them).
        warm_start: keep each state's chains between :meth:`sample` calls, so that the search for
            s_{t+1} starts where the one for s_t ended (rows restart with :meth:`reset_chains`).
            Ignored when a ``proposal`` starts the chains.
        proposal: an optional learned proposal q_phi(a|s) (:mod:`ebrl.proposals`). It starts the
            chains by sampling-importance-resampling (SIR) from ``n_candidates`` draws of the
            defensive mixture eps U + (1 - eps) q_phi, sets MALA's per-state step size from its
            scale, places the starts of :meth:`mode` at fixed quantiles of q_phi (its mode
            first), and is the importance proposal of :meth:`log_partition`. The chains then run
            on E itself: the policy stays exp(-E/alpha), whatever q_phi is (SIR is consistent as
            ``n_candidates`` grows, and every MCMC step leaves the Boltzmann density invariant).
            With a proposal and a sampler that takes a per-state step (MALA), the first step is
            eps = c mean(scale_phi^2) d^(-1/3) from q_phi's spread, and the factor c adapts
            *between* calls toward the sampler's ``target_accept`` (log c += 0.05 (acceptance -
            target)): within a call eps is fixed, so every call is an exact MH chain, while the
            scale follows how sharp exp(-E/alpha) is relative to q_phi (far sharper once alpha is
            small). log c is the 0-d tensor :attr:`log_step_scale`, updated in place (an owner
            module can register it as a buffer so that it is saved with the model).
        n_candidates: N, SIR candidates per chain start (with a proposal); 1: no resampling, the
            chains start at draws of q_phi and only the MCMC steps pull them toward pi.
        defensive: eps, the weight of the uniform density in the defensive mixture (Hesterberg
            1995): importance weights stay below 2^d exp(-E/alpha)/eps, so a poor q_phi costs
            variance, never consistency.
        compile_act: run :meth:`sample` as one function through :func:`torch.compile`
            (:mod:`ebrl._fused`): the same SIR + MALA algorithm, ~4x cheaper at one state on one
            CPU thread (``experiments/results/act_compile.md``), after a one-off compile of
            15-30 s per input shape. Applies where a proposal starts MALA chains on stackable ReLU
            critics (SQL's defaults); elsewhere it is ignored. False: the eager path.
    """

    def __init__(
        self,
        energy: StateActionEnergy | Energy,
        sampler: Sampler | None = None,
        temperature: float = 1.0,
        n_chains: int = 16,
        warm_start: bool = False,
        proposal: TanhGaussianProposal | None = None,
        n_candidates: int = 16,
        defensive: float = 0.1,
        compile_act: bool = False,
    ) -> None:
        if not isinstance(energy, Energy) or energy.context_dim < 1:
            raise TypeError(
                "energy must be a StateActionEnergy (or a conditional ebrl Energy with context_dim >= 1), "
                f"got {type(energy).__name__}"
            )
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be an ebrl Sampler, got {type(sampler).__name__}")
        self.energy = energy
        self.sampler = sampler if sampler is not None else default_sampler()
        # alpha as a 0-d tensor (log alpha), like log_step_scale: an owner module can share its
        # own buffer here, so that the temperature is stored once (``temperature`` reads it).
        self.log_temperature = torch.tensor(math.log(check_positive_float("temperature", temperature)),
                                            dtype=torch.float64)
        self.n_chains = check_int("n_chains", n_chains, minimum=1)
        self.warm_start = bool(warm_start)
        if proposal is not None and not isinstance(proposal, TanhGaussianProposal):
            raise TypeError(f"proposal must be a TanhGaussianProposal or None, got {type(proposal).__name__}")
        dims = (energy.context_dim, energy.x_dim)
        if proposal is not None and (proposal.obs_dim, proposal.act_dim) != dims:
            raise ValueError(
                f"proposal has (obs_dim, act_dim) = {(proposal.obs_dim, proposal.act_dim)}, the energy "
                f"{(energy.context_dim, energy.x_dim)}"
            )
        self.proposal = proposal
        self.n_candidates = check_int("n_candidates", n_candidates, minimum=1)
        self.defensive = check_fraction("defensive", defensive, allow_none=False)
        bounds = (self.sampler.low, self.sampler.high)
        if proposal is not None and bounds != (-1.0, 1.0):
            raise ValueError(f"a proposal lives on the box [-1, 1]; the sampler's bounds are {bounds}")
        self.last_result: SampleResult | None = None
        self.log_step_scale = torch.zeros((), device=energy.device, dtype=energy.dtype)
        if not isinstance(compile_act, bool):
            raise TypeError(f"compile_act must be True or False, got {compile_act!r}")
        self.compile_act = compile_act
        self._fused: FusedAct | bool | None = None  # None: not built yet; False: does not apply

    @property
    def temperature(self) -> float:
        """alpha, the temperature of pi ∝ exp(-E/alpha) (read from :attr:`log_temperature`)."""
        return float(self.log_temperature.detach().exp())

    @temperature.setter
    def temperature(self, value: float) -> None:
        value = check_positive_float("temperature", value)
        with torch.no_grad():
            self.log_temperature.fill_(math.log(value))

    @property
    def act_dim(self) -> int:
        """d, the action dimension (the energy's x dimension)."""
        return self.energy.x_dim

    @property
    def obs_dim(self) -> int:
        """The state dimension (the energy's context dimension)."""
        return self.energy.context_dim

    def _states(self, states: Tensor) -> tuple[Tensor, bool]:
        check_tensor("states", states, last_dim=self.obs_dim)
        # One host sync per call, at the boundary: a NaN state would otherwise surface later as a
        # non-finite energy inside the sampler, far from its cause.
        check_finite("states", states)
        if states.dim() == 1:
            return states[None], True
        if states.dim() != 2:
            raise ValueError(
                f"states must have shape (batch, {self.obs_dim}) or ({self.obs_dim},), "
                f"got {tuple(states.shape)}"
            )
        return states, False

    def sample(self, states: Tensor, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """n actions per state drawn by the sampler: ``(batch, n, act_dim)`` (``(n, act_dim)`` for
        a single state of shape ``(obs_dim,)``). Diagnostics land in :attr:`last_result`."""
        n = check_int("n", n, minimum=1)
        states, single = self._states(states)
        alpha = self.temperature  # read once per call (a host sync where the buffer is on a GPU)
        init: str | Tensor = "persistent" if self.warm_start else "uniform"
        step_size = None
        energy: Energy | Callable[[Tensor], Tensor] = self.energy
        context: Tensor | None = states
        if self.compile_act and not self.warm_start:
            fused = self._fused_result(states, n, generator, alpha)
            if fused is not None:
                return fused[0] if single else fused
        if self.proposal is not None:
            # Condition once (a state's share of the network, stacked weights) for SIR and MCMC.
            energy, context = self.energy.condition(states), None
            init, step_size = self._sir(states, n, generator, energy, alpha)
        result = self.sampler.sample(
            energy,
            init,
            shape=(states.shape[0], n, self.act_dim),
            context=context,
            temperature=alpha,
            generator=generator,
            step_size=step_size,
        )
        self._finish(result, adapt=step_size is not None)
        return result.samples[0] if single else result.samples

    def _finish(self, result: SampleResult, adapt: bool) -> None:
        self.last_result = result
        if adapt and result.acceptance is not None:
            # Robbins-Monro between calls, on the device (no host sync).
            target = getattr(self.sampler, "target_accept", 0.574)
            change = STEP_ADAPT_GAIN * (result.acceptance.detach() - target)
            with torch.no_grad():
                self.log_step_scale.add_(change.to(self.log_step_scale)).clamp_(-30.0, 5.0)

    def _fused_result(
        self, states: Tensor, n: int, generator: torch.Generator | None, alpha: float
    ) -> Tensor | None:
        """The samples of :meth:`sample` by the fused act (``compile_act``), or None where it does
        not apply or met a non-finite value (the eager path then runs and reports it)."""
        if self._fused is None:
            applies = fusable(self.energy, self.sampler, self.proposal, self.n_candidates)
            parts = (self.energy, self.sampler, self.proposal, self.n_candidates, self.defensive)
            self._fused = FusedAct(*parts) if applies else False  # type: ignore[arg-type]
        if not isinstance(self._fused, FusedAct):
            return None
        result = self._fused(states, n, generator, alpha, self.log_step_scale)
        if result is None:
            return None
        self._finish(result, adapt=True)
        return result.samples

    def _sir(
        self,
        states: Tensor,
        n: int,
        generator: torch.Generator | None,
        energy_fn: Callable[[Tensor], Tensor],
        alpha: float,
    ) -> tuple[Tensor, Tensor | None]:
        """Chain starts by sampling-importance-resampling: N candidates per state from the defensive
        mixture, n of them kept with probability ∝ exp(-E/alpha)/q_mix (Rubin 1988); and the
        per-state MALA step from the proposal's spread (:meth:`_step_size`). With N = 1 there is
        nothing to resample: the chains start at draws of q_phi."""
        assert self.proposal is not None
        with torch.no_grad():
            if self.n_candidates == 1:
                init = self.proposal.transform(
                    states, torch.randn((states.shape[0], n, self.act_dim), device=states.device,
                                        dtype=states.dtype, generator=generator)
                )
                return init, self._step_size(self.proposal.scale(states))
            draw = defensive_sample(self.proposal, states, self.n_candidates, self.defensive, generator)
            # Non-finite weights (a diverged critic) must not stop multinomial with an opaque
            # error: the chains then start anywhere and the sampler's check names the energy.
            log_w = torch.nan_to_num(-energy_fn(draw.actions) / alpha - draw.log_q, 0.0, 0.0, -1e30)
            idx = torch.multinomial(torch.softmax(log_w, dim=-1), n, replacement=True, generator=generator)
            init = torch.gather(draw.actions, 1, idx[..., None].expand(-1, -1, self.act_dim))
        return init, self._step_size(draw.scale)

    def _step_size(self, scale: Tensor) -> Tensor | None:
        """MALA's first step per state from the proposal's spread (:func:`ebrl.proposals.mala_first_step`,
        with the adapted factor c of the class docstring); None for samplers without one."""
        if not self.sampler.supports_step_size:
            return None
        return mala_first_step(scale, self.log_step_scale)

    def mode(self, states: Tensor) -> Tensor:
        """Noise-free search from a fixed initialisation; the lowest-energy chain per state:
        ``(batch, act_dim)`` (``(act_dim,)`` for a single state)."""
        states, single = self._states(states)
        shape = (states.shape[0], self.n_chains, self.act_dim)
        init: str | Tensor = "uniform"
        step_size = None
        if self.proposal is not None:
            # Starts at fixed quantiles of q_phi (its mode first): a deterministic function of the
            # state, and near the actions the critic was trained on. Uniform starts would let the
            # noise-free search find the spurious maxima a learned Q has far from its data.
            fixed = torch.Generator(device="cpu").manual_seed(FIXED_INIT_SEED)
            xi = torch.randn((1, *shape[1:]), dtype=states.dtype, generator=fixed).to(states.device)
            xi[:, 0] = 0.0
            with torch.no_grad():
                init = self.proposal.transform(states, xi)
                step_size = self._step_size(self.proposal.scale(states))
        result = self.sampler.sample(
            self.energy,
            init,
            shape=shape,
            context=states,
            temperature=self.temperature,
            deterministic=True,
            step_size=step_size,
        )
        self.last_result = result
        best = result.best()
        return best[0] if single else best

    def log_partition(
        self, states: Tensor, n: int = 1024, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """log Z(s) = log ∫_box exp(-E(s, a)/alpha) da by importance sampling.

        With a_i ~ U([-1, 1]^d): Z = 2^d E_U[exp(-E/alpha)], estimated by the sample mean (the
        soft value estimator of Haarnoja et al. 2017, eq. 10, with a uniform q). With a
        ``proposal`` the a_i come from the defensive mixture q_mix and Z = E_q_mix[exp(-E/alpha)/q_mix]:
        unbiased for Z for any q_phi, with far lower variance when q_phi is close to pi. Returns
        ``(log_z, stderr)``, both ``(batch,)``; the standard error of log Z is the delta-method
        std(w)/(sqrt(n) mean(w)) of the importance weights w.
        """
        n = check_int("n", n, minimum=2)
        states, single = self._states(states)
        _, _, log_w = self._weighted_particles(states, n, generator)
        log_z, stderr = importance_log_z(log_w)
        return (log_z[0], stderr[0]) if single else (log_z, stderr)

    def mean_action(self, states: Tensor, n: int = 64, generator: torch.Generator | None = None) -> Tensor:
        """E_pi[a | s], the mean action of the Boltzmann policy, by self-normalised importance
        sampling: sum_i w_i a_i / sum_i w_i with w_i = exp(-E(s, a_i)/alpha)/q(a_i|s) over ``n``
        draws a_i of the defensive mixture of :meth:`log_partition` (uniform on the box without a
        proposal): the uniform share bounds the weights, so the estimate is consistent and stable
        however poor q_phi is. The same random numbers serve every state, so with a fixed
        ``generator`` the result is a deterministic function of each state, independent of its row
        in the batch. A smoother deterministic act than :meth:`mode`: it averages over the
        policy's mass instead of descending to the energy's nearest minimum, where a narrow
        spurious minimum of a learned energy can sit. Returns ``(batch, act_dim)`` (``(act_dim,)``
        for a single state), without gradients.
        """
        n = check_int("n", n, minimum=2)
        states, single = self._states(states)
        with torch.no_grad():
            actions, _, log_w = self._weighted_particles(states, n, generator, shared=True)
            # A non-finite energy (a diverged critic) must not turn the mean into NaN.
            log_w = torch.nan_to_num(log_w, nan=-1e30, posinf=1e30, neginf=-1e30)
            mean = (torch.softmax(log_w, dim=-1)[..., None] * actions).sum(1)
        return mean[0] if single else mean

    def energy_quantile(
        self, actions: Tensor, states: Tensor, n: int = 1024, generator: torch.Generator | None = None
    ) -> Tensor:
        """P_{a' ~ pi(.|s)}[E(s, a') < E(s, a)]: where an action's energy falls in the distribution
        of the policy's own energies at that state, in [0, 1].

        For a' ~ pi the value is uniform on [0, 1] at every state (the probability integral
        transform of E(s, a')), so unlike E(s, a) or -log pi(a|s) it needs no per-state offset or
        scale to be compared across states: the policy's mode scores 0, an action as unusual as a
        typical draw scores about 1/2. Estimated by self-normalised importance sampling over the
        ``n`` particles of :meth:`log_partition`. ``actions`` is ``(batch, act_dim)`` or
        ``(batch, k, act_dim)`` (k actions per state, one set of particles); returns
        ``actions.shape[:-1]``.
        """
        n = check_int("n", n, minimum=2)
        states, single = self._states(states)
        check_tensor("actions", actions, last_dim=self.act_dim)
        check_finite("actions", actions)
        lead = actions.shape[:-1]
        bad = actions.dim() > 2 if single else actions.dim() not in (2, 3) or lead[0] != len(states)
        if bad:
            raise ValueError(
                f"actions must have shape (batch, act_dim) or (batch, k, act_dim) with the batch of states "
                f"({tuple(states.shape)} given), got {tuple(actions.shape)}"
            )
        with torch.no_grad():
            _, energies, log_w = self._weighted_particles(states, n, generator)
            e = self.energy.energy(actions.reshape(len(states), -1, self.act_dim), states)  # (batch, k)
            weights = torch.softmax(log_w, dim=-1)  # (batch, n)
            below = (energies[:, None, :] < e[..., None]).to(weights.dtype)  # (batch, k, n)
            return (below * weights[:, None, :]).sum(-1).reshape(lead)

    def _weighted_particles(
        self, states: Tensor, n: int, generator: torch.Generator | None, shared: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """n importance particles a_i per state ``(batch, n, act_dim)``, their energies E(s, a_i)
        ``(batch, n)`` and log-weights -E/alpha - log q(a_i) (uniform on the box, or the defensive
        mixture). With ``shared`` every state gets the same random numbers (with a fixed generator,
        a deterministic function of each state, whatever its row)."""
        dim, batch = self.act_dim, states.shape[0]
        if self.proposal is None:
            rows = 1 if shared else batch
            a = torch.rand((rows, n, dim), device=states.device, dtype=states.dtype, generator=generator)
            a = a.expand(batch, -1, -1)
            a = self.sampler.low + (self.sampler.high - self.sampler.low) * a
            log_q = torch.full(a.shape[:-1], -dim * math.log(self.sampler.high - self.sampler.low))
        else:
            a, log_q, _ = defensive_sample(self.proposal, states, n, self.defensive, generator, shared=shared)
        energies = self.energy.energy(a, states)
        return a, energies, -energies / self.temperature - log_q.to(a)

    def soft_value(self, states: Tensor, n: int = 1024, generator: torch.Generator | None = None) -> Tensor:
        """V(s) = alpha log Z(s) = alpha log ∫ exp(Q(s, a)/alpha) da (the soft state value)."""
        log_z, _ = self.log_partition(states, n, generator)
        return self.temperature * log_z

    def reset_chains(self, mask: Tensor | None = None) -> None:
        """Restart the warm-started chains of all states, or of the rows where ``mask`` is True."""
        self.sampler.reset_chains(mask)
