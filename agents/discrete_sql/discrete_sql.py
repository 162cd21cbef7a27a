"""Soft Q-learning for discrete actions (Haarnoja et al. 2017, with an exact soft value).

The math, top to bottom (one gradient step):

    V(s') = alpha logsumexp_a Q_target(s', a)/alpha                 (exact soft value)
    y = reward_scale r + gamma (1 - done) V(s')                      (soft Bellman target)
      + beta clip(alpha log pi_target(a|s), l0, 0)                    (Munchausen term, beta > 0)
    L = Huber(Q(s, a) - y)                                           (as SB3's DQN)
    pi(a|s) = softmax(Q(s, .)/alpha)                                 (exact Boltzmann policy)

The target network is updated every ``target_update_interval`` env steps with coefficient
``tau`` (a hard copy by default, as DQN). With ``munchausen`` = beta > 0 the target adds the scaled,
clipped log-policy of the action taken (Munchausen RL, Vieillard et al. 2020): soft Q-learning
with an implicit KL penalty toward the previous policy (on CartPole it raised the mean of the late
evaluations but did not stop their oscillation: experiments/results/discrete.md). With
``average_decay`` > 0 the policy acts with an exponential moving average of the Q-network's weights
(Nikishin et al. 2018), updated after every gradient step; the targets are unchanged (on CartPole it
made the late evaluations worse, not steadier: experiments/results/discrete.md, fourth round).
With ``alpha="auto"`` log alpha follows SAC's temperature loss with the exact entropy of the acting
policy, L(alpha) = log alpha (H(softmax(Q(s, .)/alpha)) - target_entropy) (SAC-discrete,
Christodoulou 2019): as Q grows during training, a fixed alpha makes the policy ever greedier
(on CartPole a learned alpha made the late evaluations worse, not steadier:
experiments/results/discrete.md, fifth round).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from ebrl.agents.common.checks import (
    CheckedLoadMixin,
    check_action_space_discrete,
    check_off_policy_args,
    check_policy_and_env,
    check_target_entropy,
    parse_alpha,
    resolve_target_entropy,
)
from ebrl.agents.common.guard import DEFAULT_MAX_DIVERGENCES, DivergenceGuardMixin, check_max_divergences
from ebrl.agents.common.updates import polyak, temperature_optimizer
from ebrl.agents.discrete_sql.policies import DiscreteSQLPolicy, MlpPolicy, check_average_decay
from ebrl.validation import check_float, check_int, check_positive_float

SelfDiscreteSQL = TypeVar("SelfDiscreteSQL", bound="DiscreteSQL")


def softmax_entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """H(pi) = -sum_a pi(a) log pi(a) per row, from log-probabilities ``(batch, n_actions)``."""
    return -(log_pi.exp() * log_pi).sum(1)


class DiscreteSQL(CheckedLoadMixin, DivergenceGuardMixin, OffPolicyAlgorithm):
    """Soft Q-learning for Discrete action spaces: exact Boltzmann policy and soft value.

    Args:
        policy: ``"MlpPolicy"`` or a :class:`DiscreteSQLPolicy` subclass.
        env: the environment (or its Gymnasium id).
        learning_rate: Q-network learning rate (constant or schedule).
        buffer_size: replay buffer size.
        learning_starts: env steps of uniformly random actions before learning starts.
        batch_size: minibatch size.
        tau: target update coefficient (1.0: hard copy, as DQN).
        gamma: discount factor.
        train_freq: update the model every ``train_freq`` steps (or ``(n, "episode")``).
        gradient_steps: gradient steps per rollout (-1: as many as env steps collected).
        replay_buffer_class, replay_buffer_kwargs, optimize_memory_usage, n_steps: SB3's replay options.
        alpha: the temperature alpha of pi = softmax(Q/alpha) (> 0). Small alpha is near-greedy
            (alpha -> 0 recovers DQN's max backup); it should match the scale of Q-differences.
            ``"auto"`` (start at 1) / ``"auto_<init>"``: learn log alpha toward ``target_entropy``.
        target_entropy: the entropy of pi aimed for with a learned alpha, in nats in
            [0, log |A|), or ``"auto_<c>"``: c log |A|, the fraction c in [0, 1) of the uniform
            policy's entropy (``"auto"``: SAC-discrete's 0.98). The default 0.1 of log 2 is 0.069
            nats on two actions, near-greedy like DQN's final epsilon-greedy (0.098 nats at
            epsilon 0.04 on two actions).
        reward_scale: multiplies rewards in the target.
        munchausen: the Munchausen scale (the paper's alpha; 0.9 there) of the bonus
            clip(alpha log pi_target(a|s), munchausen_clip, 0) added to the target (0: plain SQL).
        munchausen_clip: the lower clip l_0 of that bonus (the paper's -1; < 0).
        target_update_interval: env steps between target updates.
        max_grad_norm: gradient-norm clip of the Q-network update (DQN's 10).
        average_decay: decay of the exponential moving average of the Q-network's weights that acts
            and predicts (weight averaging, Nikishin et al. 2018); in [0, 1), 0 acts with the last
            iterate. The targets still come from the target network.
        max_divergences: consecutive non-finite updates (loss, Q values, gradients, parameters)
            skipped or rolled back before training stops with ``NonFiniteError``.
        stats_window_size, tensorboard_log, policy_kwargs, verbose, seed, device: as in SB3.
        _init_setup_model: build the networks now (False when loading).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: DiscreteSQLPolicy

    def __init__(
        self,
        policy: str | type[DiscreteSQLPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        alpha: float | str = 0.01,
        target_entropy: float | str = "auto_0.1",
        reward_scale: float = 1.0,
        munchausen: float = 0.0,
        munchausen_clip: float = -1.0,
        target_update_interval: int = 10_000,
        max_grad_norm: float = 10.0,
        average_decay: float = 0.0,
        max_divergences: int = DEFAULT_MAX_DIVERGENCES,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_off_policy_args(learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq,
                              gradient_steps)
        parse_alpha(alpha)
        target_entropy = check_target_entropy(target_entropy)
        reward_scale = check_positive_float("reward_scale", reward_scale)
        munchausen = check_float("munchausen", munchausen, low=0.0)
        munchausen_clip = check_float("munchausen_clip", munchausen_clip, high=0.0, high_open=True)
        check_int("target_update_interval", target_update_interval, minimum=1)
        max_grad_norm = check_positive_float("max_grad_norm", max_grad_norm)
        average_decay = check_average_decay(average_decay)
        max_divergences = check_max_divergences(max_divergences)
        env = check_policy_and_env(
            policy, self.policy_aliases, DiscreteSQLPolicy, policy_kwargs, env,
            check_action_space_discrete, verbose,
            set_by_algorithm={"temperature": "alpha", "average_decay": "average_decay"},
        )
        if env is not None:  # range-checked against the action space before anything is built
            resolve_target_entropy(target_entropy, env.action_space)

        super().__init__(
            policy, env, learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq,
            gradient_steps, action_noise=None, replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs, optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps, policy_kwargs=policy_kwargs, stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log, verbose=verbose, device=device, seed=seed, sde_support=False,
            supported_action_spaces=(spaces.Discrete,), support_multi_env=True,
        )
        self.alpha, self.target_entropy, self.reward_scale = alpha, target_entropy, reward_scale
        self.alpha_optimizer: torch.optim.Optimizer | None = None
        self.munchausen, self.munchausen_clip = munchausen, munchausen_clip
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        self.average_decay, self.max_divergences = average_decay, max_divergences
        self._n_calls = 0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # From self.alpha here, not in __init__: a loaded model gets it from its file.
        self._alpha_init, self._alpha_auto = parse_alpha(self.alpha)
        self.policy_kwargs = {**self.policy_kwargs, "temperature": self._alpha_init,
                              "average_decay": self.average_decay}
        super()._setup_model()
        self._create_aliases()
        self.target_entropy = resolve_target_entropy(self.target_entropy, self.action_space)
        # Not a copy: alpha lives in the policy's log_temperature buffer, which the policy acts with.
        self.log_alpha = self.policy.log_temperature
        self.alpha_optimizer = temperature_optimizer(self.log_alpha, self._alpha_auto, self.lr_schedule(1))

    def _create_aliases(self) -> None:
        self.q_net = self.policy.q_net
        self.q_net_target = self.policy.q_net_target

    def _on_step(self) -> None:
        # Each call is one VecEnv step, i.e. n_envs transitions (as SB3's DQN counts).
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak(self.q_net_target.parameters(), self.q_net.parameters(), self.tau)

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.policy.optimizer]
        if self.alpha_optimizer is not None:
            optimizers.append(self.alpha_optimizer)
        self._update_learning_rate(optimizers)
        losses, q_means, values, entropies, alphas = [], [], [], [], []
        self._guard_begin()
        for _ in range(gradient_steps):
            # A fixed alpha is the exact constructor value (the policy's buffer holds it as float32
            # log alpha; a round trip through it would move the targets by an ulp and break the
            # bitwise reproducibility of earlier runs).
            alpha = float(self.log_alpha.detach().exp()) if self._alpha_auto else self._alpha_init
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            target, value, entropy = self._soft_target(data, alpha)
            q_all = self.policy.q_values(data.observations)
            q = q_all.gather(1, data.actions.long().reshape(-1, 1)).reshape(-1)
            loss = F.smooth_l1_loss(q, target)
            if not self._guard_check(q_loss=loss, q_values=q, soft_value=value, target=target):
                continue
            self.policy.optimizer.zero_grad()
            loss.backward()
            if not self._guard_check_grads(self.policy.optimizer):
                continue
            torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            self.policy.update_average()
            if self.alpha_optimizer is not None:
                # The exact entropy of the current policy at the batch states (Q detached).
                policy_entropy = softmax_entropy(torch.log_softmax(q_all.detach() / alpha, dim=1)).mean()
                alpha_loss = self.log_alpha * (policy_entropy - self.target_entropy)
                self.alpha_optimizer.zero_grad()
                alpha_loss.backward()
                self.alpha_optimizer.step()
            alphas.append(alpha)
            losses.append(loss.item())
            q_means.append(q.mean().item())
            values.append(value.mean().item())
            entropies.append(entropy.mean().item())

        self._guard_end()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/diverged", self.n_diverged)
        if not losses:  # every update of this call was skipped
            return
        self.logger.record("train/q_loss", np.mean(losses))
        self.logger.record("train/q_values", np.mean(q_means))
        self.logger.record("train/soft_value", np.mean(values))
        self.logger.record("train/entropy", np.mean(entropies))
        self.logger.record("train/alpha", float(np.mean(alphas)))

    @torch.no_grad()
    def _soft_target(self, data: Any, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The soft Bellman target y of the batch, with V(s') and the target policy's entropy at s'."""
        discounts = data.discounts.reshape(-1) if data.discounts is not None else self.gamma
        logits = self.policy.q_values(data.next_observations, target=True) / alpha
        value = alpha * torch.logsumexp(logits, dim=1)
        entropy = softmax_entropy(torch.log_softmax(logits, dim=1))
        not_done = 1.0 - data.dones.reshape(-1)
        target = self.reward_scale * data.rewards.reshape(-1) + not_done * discounts * value
        if self.munchausen > 0:
            # alpha log pi_target(a|s) of the action taken, clipped to [l0, 0] so that rarely taken
            # actions (log pi -> -inf) cannot blow the target up.
            q_now = self.policy.q_values(data.observations, target=True)
            log_pi_now = torch.log_softmax(q_now / alpha, dim=1)
            taken = log_pi_now.gather(1, data.actions.long().reshape(-1, 1)).reshape(-1)
            target = target + self.munchausen * (alpha * taken).clamp(self.munchausen_clip, 0.0)
        return target, value, entropy

    def learn(
        self: SelfDiscreteSQL,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DiscreteSQL",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDiscreteSQL:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "q_net", "q_net_target"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]
        if self.alpha_optimizer is not None:
            state_dicts.append("alpha_optimizer")
        return state_dicts, ["log_alpha"]
