"""Soft Q-learning (Haarnoja et al. 2017) as a stable-baselines3 off-policy algorithm.

The math, top to bottom (one gradient step; docs/architecture.md has the data flow):

    a_i ~ q_mix(.|s') = eps U([-1, 1]^d) + (1 - eps) q_phi(.|s'), i = 1..M   (defensive proposal)
    Q'(s', a_i) = min_j Q_target_j(s', a_i)                               (twin minimum)
    V(s') = alpha [logsumexp_i (Q'(s', a_i)/alpha - log q_mix(a_i)) - log M]  (eq. 10, importance sampling)
    y = reward_scale r + gamma (1 - done) V(s')                           (soft Bellman target)
    L_Q = sum_j 1/2 (Q_j(s, a) - y)^2                                     (critic loss)
    L_phi = E_{a ~ q_phi(.|s)} [alpha log q_phi(a|s) - min_j Q_j(s, a)]  (reverse KL to pi, reparameterised)
      or  -sum_k w_k log q_phi(a_k|s), w = softmax(Q/alpha - log q_mix)  (forward KL, proposal_loss='forward')
    theta_target <- tau theta + (1 - tau) theta_target                    (Polyak)

With ``alpha="auto"`` log alpha follows SAC's temperature loss with the Boltzmann entropy estimate
H = (V - E_pi[Q]) / alpha from the same particles. The policy that acts is the Boltzmann policy
pi(a|s) ∝ exp(min_j Q_j(s, a)/alpha), the function whose log-partition is V: chains start from
q_phi (sampling-importance-resampling) and take exact MALA steps on E = -min_j Q_j
(:class:`~ebrl.agents.sql.SQLPolicy`). q_phi only makes the search and the soft value cheap; with
q_phi = pi and M = 1 the target is SAC's Q - alpha log pi. Without a proposal
(``policy_kwargs=dict(proposal=False)``) the particles are uniform, as in the paper.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from ebrl.agents.common.checks import (
    CheckedLoadMixin,
    check_action_space_box,
    check_off_policy_args,
    check_policy_and_env,
    check_target_entropy,
    parse_alpha,
    resolve_target_entropy,
)
from ebrl.agents.common.guard import DEFAULT_MAX_DIVERGENCES, DivergenceGuardMixin, check_max_divergences
from ebrl.agents.common.updates import polyak, temperature_optimizer
from ebrl.agents.sql.policies import MlpPolicy, SQLPolicy
from ebrl.estimators import ESTIMATORS, mixture_soft_value, soft_value, uniform_soft_value
from ebrl.proposals import defensive_sample, forward_kl_loss
from ebrl.validation import check_choice, check_int, check_positive_float

SelfSQL = TypeVar("SelfSQL", bound="SQL")
PROPOSAL_LOSSES = ("reverse", "forward")


def _critic_layer_norm_default(policy_class: type) -> Any:
    """``critic_layer_norm``'s default in the policy class's constructor (SQLPolicy's where the
    class takes it through ``**kwargs``)."""
    own = inspect.signature(policy_class.__init__).parameters.get("critic_layer_norm")
    return (own or inspect.signature(SQLPolicy.__init__).parameters["critic_layer_norm"]).default


def check_proposal_use(estimator: str, loss: str, policy_kwargs: dict[str, Any] | None) -> None:
    """``value_estimator`` in ``ESTIMATORS``, ``proposal_loss`` in ``PROPOSAL_LOSSES``; the
    estimator ``"proposal"`` and the loss ``"forward"`` need the policy's proposal."""
    check_choice("value_estimator", estimator, ESTIMATORS)
    check_choice("proposal_loss", loss, PROPOSAL_LOSSES)
    for name, value, other in (("value_estimator", estimator, "'uniform', 'stratified' or 'mixture'"),
                               ("proposal_loss", loss, "'reverse' (unused without a proposal)")):
        if value in ("proposal", "forward") and not (policy_kwargs or {}).get("proposal", True):
            raise ValueError(f"{name}={value!r} needs the policy's proposal, but policy_kwargs has "
                             f"proposal=False: choose {name} {other}")


class SQL(CheckedLoadMixin, DivergenceGuardMixin, OffPolicyAlgorithm):
    """Soft Q-learning with an MCMC Boltzmann policy, for bounded Box action spaces.

    Args:
        policy: ``"MlpPolicy"`` or an :class:`SQLPolicy` subclass.
        env: the environment (or its Gymnasium id).
        learning_rate: learning rate of the critics, the proposal and the temperature (constant or
            schedule). 1e-3 (from SAC's 3e-4), chosen on the tuning set: the critic learns faster
            (experiments/results/sql_tuning.md, candidate G).
        buffer_size: replay buffer size.
        learning_starts: env steps of uniform random actions before learning (10 000, rl-zoo's
            MuJoCo value, chosen on the tuning set: experiments/results/sql_tuning.md).
        batch_size: minibatch size.
        tau, gamma: Polyak coefficient of the target critics (0.005); discount factor.
        train_freq: update the model every ``train_freq`` steps (or ``(n, "episode")``).
        gradient_steps: gradient steps per rollout (-1: as many as env steps collected).
        action_noise: optional extra action noise (SB3's ``ActionNoise``), rarely useful here.
        replay_buffer_class, replay_buffer_kwargs, optimize_memory_usage, n_steps: SB3's replay options
            (``n_steps`` > 1: n-step returns).
        alpha: the temperature alpha of pi ∝ exp(Q/alpha) (the paper's alpha; > 0), or ``"auto"``
            (the default, start at 1) / ``"auto_<init>"`` to learn log alpha toward
            ``target_entropy`` as SAC does.
        target_entropy: entropy aimed for with a learned alpha, in nats: ``"auto_<c>"`` is -c dim(A),
            ``"auto"`` SAC's -dim(A). The default ``"auto_0.5"`` (a warmer policy than SAC's target)
            was chosen on the tuning set (experiments/results/sql_tuning.md).
        reward_scale: multiplies rewards in the target (the paper's reward scale; with a fixed
            alpha, equivalent to dividing alpha by it; a learned alpha absorbs it). The default 0.1,
            with the critics' layer-normalised last hidden layer (a head that reads features of
            fixed scale reaches a large |Q| slowly), was chosen on the tuning set
            (experiments/results/sql_tuning.md, candidate J).
        n_particles: M, importance-sampling particles per next state for the soft value. 2 (from
            4): the target over B x M rows was SQL's largest cost beyond SAC's, and M = 2 learned
            as well on both tuning tasks (experiments/results/sql_tuning.md).
        value_estimator: ``"proposal"`` (the default with a proposal: particles from the defensive
            mixture eps U + (1 - eps) q_phi, see :mod:`ebrl.proposals`), ``"uniform"`` (i.i.d.
            uniform particles, the paper's estimator),
            ``"stratified"`` (Latin-hypercube uniform particles: the same density, lower variance)
            or ``"mixture"`` (half the particles uniform, half from one resampling step of the
            derivative-free sampler in a defensive mixture with a known density; see
            :func:`ebrl.estimators.mixture_soft_value`).
        proposal_loss: how q_phi is fitted to pi: ``"reverse"`` (the default; KL(q || pi), SAC's
            actor loss: mode-seeking, sharp) or ``"forward"`` (KL(pi || q) by self-normalised
            importance sampling over the act's ``n_candidates`` defensive-mixture draws per
            state, the wake-phase update of reweighted wake-sleep, Bornschein & Bengio 2015:
            mass-covering, so that a multimodal pi keeps every mode among the SIR candidates;
            it costs ``n_candidates`` critic evaluations per state and proposal step).
        target_update_interval: gradient steps between Polyak updates.
        proposal_update_interval: gradient steps between updates of the proposal q_phi (2: the
            delayed policy update of TD3, Fujimoto et al. 2018). The proposal only starts the
            chains and weights the particles, so a lag of one step costs nothing measurable and
            saves a fifth of the gradient-step time.
        max_divergences: consecutive non-finite updates (loss, Q values, gradients, parameters,
            sampled actions) skipped or rolled back before training stops with ``NonFiniteError``.
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device: as in SB3.
        _init_setup_model: build the networks now (False when loading).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: SQLPolicy

    def __init__(
        self,
        policy: str | type[SQLPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        alpha: float | str = "auto",
        target_entropy: float | str = "auto_0.5",
        reward_scale: float = 0.1,
        n_particles: int = 2,
        value_estimator: str = "proposal",
        proposal_loss: str = "reverse",
        target_update_interval: int = 1,
        proposal_update_interval: int = 2,
        max_divergences: int = DEFAULT_MAX_DIVERGENCES,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # Every check runs before SB3 builds anything (docs/architecture.md, "Errors").
        check_off_policy_args(learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq,
                              gradient_steps)
        alpha_init, alpha_auto = parse_alpha(alpha)
        target_entropy = check_target_entropy(target_entropy)
        reward_scale = check_positive_float("reward_scale", reward_scale)
        n_particles = check_int("n_particles", n_particles, minimum=1)
        check_proposal_use(value_estimator, proposal_loss, policy_kwargs)
        for name, value in (("target_update_interval", target_update_interval),
                            ("proposal_update_interval", proposal_update_interval)):
            check_int(name, value, minimum=1)
        max_divergences = check_max_divergences(max_divergences)
        env = check_policy_and_env(
            policy, self.policy_aliases, SQLPolicy, policy_kwargs, env, check_action_space_box, verbose
        )

        super().__init__(
            policy, env, learning_rate, buffer_size, learning_starts, batch_size, tau, gamma,
            train_freq, gradient_steps, action_noise,
            replay_buffer_class=replay_buffer_class, replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage, n_steps=n_steps, policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, verbose=verbose,
            device=device, seed=seed, sde_support=False, supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )  # fmt: skip
        # The settings as given, grouped: temperature; target; update schedule; guard.
        self.alpha, self.target_entropy = alpha, target_entropy
        self.reward_scale, self.n_particles, self.value_estimator = reward_scale, n_particles, value_estimator
        self.proposal_loss = proposal_loss
        self.target_update_interval = target_update_interval
        self.proposal_update_interval, self.max_divergences = proposal_update_interval, max_divergences
        self._alpha_init, self._alpha_auto = alpha_init, alpha_auto
        self.alpha_optimizer: torch.optim.Optimizer | None = None
        # The critics' design is saved with the model, so a later change of its default cannot
        # rebuild a saved model's critics differently (SB3 saves policy_kwargs as given).
        self.policy_kwargs = {"critic_layer_norm": _critic_layer_norm_default(self.policy_class),
                              **self.policy_kwargs}
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # A file without the key was saved before it was pinned, when every default had no norm.
        self.policy_kwargs = {"critic_layer_norm": False, **self.policy_kwargs,
                              "temperature": self._alpha_init}
        super()._setup_model()
        self._create_aliases()
        self.target_entropy = resolve_target_entropy(self.target_entropy, self.action_space)
        # Not a copy: alpha lives in one place, the policy's log_temperature buffer, which the
        # acting Boltzmann policy reads (docs/architecture.md, "Where each concept lives").
        self.log_alpha = self.policy.log_temperature
        self.alpha_optimizer = temperature_optimizer(self.log_alpha, self._alpha_auto, self.lr_schedule(1))

    def _create_aliases(self) -> None:
        self.critic = self.policy.critics
        self.critic_target = self.policy.critic_targets
        self.proposal = self.policy.proposal

    def _soft_value(
        self, next_states: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V(s') and the entropy estimate H(s') by importance sampling, from the twin-minimum
        of the target critics at every particle (one forward pass over batch x M per critic)."""

        def q_min(particles: torch.Tensor) -> torch.Tensor:
            return self.policy.q_values(next_states, particles, target=True).min(0).values

        batch, act_dim = next_states.shape[0], self.policy.act_dim
        if self.value_estimator == "proposal":
            assert self.proposal is not None
            particles, log_q, _ = defensive_sample(
                self.proposal, next_states, self.n_particles, self.policy.defensive
            )
            return soft_value(q_min(particles), alpha, log_q)
        if self.value_estimator == "mixture":
            return mixture_soft_value(q_min, batch, self.n_particles, act_dim, alpha, device=self.device)
        stratified = self.value_estimator == "stratified"
        return uniform_soft_value(
            q_min, batch, self.n_particles, act_dim, alpha, stratified=stratified, device=self.device
        )

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        proposal_optimizer = self.policy.proposal_optimizer
        optimizers = [self.policy.optimizer]
        if proposal_optimizer is not None:
            optimizers.append(proposal_optimizer)
        if self.alpha_optimizer is not None:
            optimizers.append(self.alpha_optimizer)
        self._update_learning_rate(optimizers)
        # Statistics stay tensors until the end of the call: one host sync per call, not per step.
        stats: dict[str, list[torch.Tensor]] = {}
        self._guard_begin()
        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts.reshape(-1) if data.discounts is not None else self.gamma
            alpha = self.log_alpha.detach().exp()
            states = self.policy.states(data.observations)
            # Soft Bellman target y = r + gamma (1 - done) V(s'), V by importance sampling.
            with torch.no_grad():
                next_states = self.policy.states(data.next_observations)
                value, entropy = self._soft_value(next_states, alpha)
                target = (
                    self.reward_scale * data.rewards.reshape(-1)
                    + (1.0 - data.dones.reshape(-1)) * discounts * value
                )
            # Critic loss: 1/2 MSE of every critic to the same target.
            current = self.policy.q_values(states, data.actions)
            q_loss = 0.5 * sum(F.mse_loss(q, target) for q in current)
            if not self._guard_check(q_loss=q_loss, q_values=current, soft_value=value, target=target):
                continue
            self.policy.optimizer.zero_grad()
            q_loss.backward()
            if not self._guard_check_grads(self.policy.optimizer):
                continue
            self.policy.optimizer.step()

            update_proposal = (self._n_updates + step) % self.proposal_update_interval == 0
            if proposal_optimizer is not None and update_proposal:
                self._proposal_step(proposal_optimizer, states.detach(), alpha, stats)
            if self.alpha_optimizer is not None:
                # SAC's temperature loss with -log pi replaced by the Boltzmann entropy estimate.
                alpha_loss = self.log_alpha * (entropy.mean() - self.target_entropy)
                self.alpha_optimizer.zero_grad()
                alpha_loss.backward()
                self.alpha_optimizer.step()
                stats.setdefault("alpha_loss", []).append(alpha_loss.detach())
            if step % self.target_update_interval == 0:
                polyak(self.critic_target.parameters(), self.critic.parameters(), self.tau)

            stats.setdefault("q_loss", []).append(q_loss.detach())
            stats.setdefault("q_values", []).append(current[0].detach().mean())
            stats.setdefault("soft_value", []).append(value.mean())
            stats.setdefault("entropy", []).append(entropy.mean())
            stats.setdefault("alpha", []).append(alpha)

        self._guard_end()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/diverged", self.n_diverged)
        if not stats:  # every update of this call was skipped
            return
        for key, values in stats.items():
            self.logger.record(f"train/{key}", float(torch.stack(values).mean()))
        result = self.policy.boltzmann.last_result
        if result is not None:
            for key, val in result.diagnostics().items():
                self.logger.record(key, val)

    def _proposal_step(
        self,
        optimizer: torch.optim.Optimizer,
        states: torch.Tensor,
        alpha: torch.Tensor,
        stats: dict[str, list[torch.Tensor]],
    ) -> None:
        """One step of the proposal toward pi ∝ exp(-E/alpha), E the energy the Boltzmann policy
        samples: the reverse KL E_q[alpha log q + E] (SAC's actor loss) or the forward KL
        (:func:`~ebrl.proposals.forward_kl_loss`). Gradients reach phi only."""
        policy = self.policy
        assert self.proposal is not None
        if self.proposal_loss == "forward":
            proposal_loss, log_q = forward_kl_loss(
                self.proposal, policy.energy, states, alpha, policy.n_candidates, policy.defensive
            )
        else:
            actions, log_q = self.proposal.rsample(states, 1)
            proposal_loss = (alpha * log_q + policy.energy(states, actions)).mean()
        optimizer.zero_grad()
        proposal_loss.backward(inputs=list(self.proposal.parameters()))
        # A non-finite proposal gradient skips the proposal's step only (counted).
        if self._guard_check_grads(optimizer):
            optimizer.step()
            stats.setdefault("proposal_loss", []).append(proposal_loss.detach())
            stats.setdefault("proposal_entropy", []).append(-log_q.detach().mean())

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        # A finished episode's next state does not follow from the last one: restart its chain.
        if self.policy.warm_start and np.any(dones):
            self.policy.reset_chains(torch.as_tensor(np.asarray(dones, dtype=bool)))

    def learn(
        self: SelfSQL,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SQL",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSQL:
        self.policy.plan_acting(total_timesteps + (0 if reset_num_timesteps else self.num_timesteps))
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "critic", "critic_target", "proposal"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]
        if self.policy.proposal_optimizer is not None:
            state_dicts.append("policy.proposal_optimizer")
        if self.alpha_optimizer is not None:
            state_dicts.append("alpha_optimizer")
        return state_dicts, ["log_alpha"]
