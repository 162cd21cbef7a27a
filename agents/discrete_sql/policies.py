"""The DiscreteSQL policy: a Q-network over all actions, its target, optionally an average of its
weights that acts, and the exact Boltzmann policy softmax(Q/alpha)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ebrl.agents.common.checks import check_action_space_discrete, check_observation_space
from ebrl.agents.common.soft_q_policy import SoftQPolicy
from ebrl.agents.common.updates import make_optimizer
from ebrl.energies import ACTIVATIONS
from ebrl.validation import check_finite, check_float


class DiscreteSQLPolicy(SoftQPolicy):
    """Policy of :class:`~ebrl.agents.DiscreteSQL`: Q(s, .) for every action, pi(a|s) = softmax(Q(s, .)/alpha)
    sampled exactly (no MCMC needed over a finite set); ``deterministic=True`` returns argmax Q.
    With ``average_decay`` > 0 the Q that acts (here and in ``predict``) is an exponential moving
    average of the Q-network's weights, while the learning targets still come from the target network.

    Args:
        observation_space: the env's observation space (flattened into the state vector).
        action_space: the env's Discrete action space.
        lr_schedule: learning-rate schedule of the Q-network's optimiser.
        net_arch: hidden widths of the Q-network.
        activation: activation of the Q-network (one of ``ebrl.energies.ACTIVATIONS``).
        average_decay: the decay of the exponential moving average of the Q-network's weights that
            acts (weight averaging, Nikishin et al. 2018, "Improving stability in deep reinforcement
            learning with weight averaging"); in [0, 1), 0 acts with the last iterate.
        temperature, normalize_images, optimizer_class, optimizer_kwargs: as in
            :class:`~ebrl.agents.common.soft_q_policy.SoftQPolicy` (the initial alpha; the optimiser
            is the Q-network's).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: Sequence[int] = (64, 64),
        activation: str = "relu",
        temperature: float = 1.0,
        average_decay: float = 0.0,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.check_kwargs(net_arch=net_arch, activation=activation, temperature=temperature)
        self.average_decay = check_average_decay(average_decay)
        check_observation_space(observation_space)
        check_action_space_discrete(action_space)
        super().__init__(
            observation_space, action_space, net_arch, activation, temperature,
            normalize_images=normalize_images, optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.features_extractor = self.make_features_extractor()
        n_actions = int(action_space.n)
        dim = self.features_extractor.features_dim
        act = ACTIVATIONS[activation]
        self.q_net = nn.Sequential(*create_mlp(dim, n_actions, self.net_arch, act))
        self.q_net_target = nn.Sequential(*create_mlp(dim, n_actions, self.net_arch, act))
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.requires_grad_(False)
        self.q_net_target.train(False)
        # The averaged copy is a submodule: saved, loaded and rolled back by the divergence guard
        # with the rest of the policy; torch's AveragedModel updates it with one fused lerp.
        self.q_net_average: AveragedModel | None = None
        if self.average_decay > 0:
            self.q_net_average = AveragedModel(
                self.q_net, multi_avg_fn=get_ema_multi_avg_fn(self.average_decay), use_buffers=False
            )
            self.q_net_average.requires_grad_(False)
            self.q_net_average.train(False)
        self.optimizer = make_optimizer(
            self.optimizer_class, self.q_net.parameters(), lr_schedule(1), self.optimizer_kwargs
        )

    def q_values(self, obs: PyTorchObs, target: bool = False) -> Tensor:
        """Q(s, .) of shape ``(batch, n_actions)`` (from the target network with ``target``)."""
        states = self.extract_features(obs, self.features_extractor)
        return (self.q_net_target if target else self.q_net)(states)

    @property
    def acting_net(self) -> nn.Module:
        """The network that acts: the weight average when there is one, else the Q-network."""
        return self.q_net if self.q_net_average is None else self.q_net_average

    def acting_q_values(self, obs: PyTorchObs) -> Tensor:
        """Q(s, .) of the network that acts."""
        return self.acting_net(self.extract_features(obs, self.features_extractor))

    def update_average(self) -> None:
        """One step of the weight average toward the Q-network (after each optimiser step)."""
        if self.q_net_average is not None:
            self.q_net_average.update_parameters(self.q_net)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "average_decay": self.average_decay}

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        # Checked at the boundary: a NaN state would otherwise fail inside torch's Categorical.
        states = check_finite("observation", self.extract_features(observation, self.features_extractor))
        q = self.acting_net(states)  # the features once per call: this runs at every env step
        if deterministic:
            return q.argmax(dim=1)
        return torch.distributions.Categorical(logits=q / self.log_temperature.exp()).sample()


def check_average_decay(value: Any) -> float:
    """The decay of the acting weight average: a float in [0, 1)."""
    return check_float("average_decay", value, low=0.0, high=1.0, high_open=True)


MlpPolicy = DiscreteSQLPolicy
