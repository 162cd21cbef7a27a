"""The DiscreteSQL policy: a Q-network over all actions, its target, and the exact Boltzmann
policy softmax(Q/alpha)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import Tensor, nn

from ebrl.agents.common.checks import check_action_space_discrete, check_observation_space
from ebrl.agents.common.soft_q_policy import SoftQPolicy
from ebrl.agents.common.updates import make_optimizer
from ebrl.energies import ACTIVATIONS
from ebrl.validation import check_finite


class DiscreteSQLPolicy(SoftQPolicy):
    """Policy of :class:`~ebrl.agents.DiscreteSQL`: Q(s, .) for every action, pi(a|s) = softmax(Q(s, .)/alpha)
    sampled exactly (no MCMC needed over a finite set); ``deterministic=True`` returns argmax Q.

    Args:
        observation_space: the env's observation space (flattened into the state vector).
        action_space: the env's Discrete action space.
        lr_schedule: learning-rate schedule of the Q-network's optimiser.
        net_arch: hidden widths of the Q-network.
        activation: activation of the Q-network (one of ``ebrl.energies.ACTIVATIONS``).
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
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.check_kwargs(net_arch=net_arch, activation=activation, temperature=temperature)
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
        self.optimizer = make_optimizer(
            self.optimizer_class, self.q_net.parameters(), lr_schedule(1), self.optimizer_kwargs
        )

    def q_values(self, obs: PyTorchObs, target: bool = False) -> Tensor:
        """Q(s, .) of shape ``(batch, n_actions)`` (from the target network with ``target``)."""
        states = self.extract_features(obs, self.features_extractor)
        return (self.q_net_target if target else self.q_net)(states)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> Tensor:
        # Checked at the boundary: a NaN state would otherwise fail inside torch's Categorical.
        check_finite("observation", self.extract_features(observation, self.features_extractor))
        q = self.q_values(observation)
        if deterministic:
            return q.argmax(dim=1)
        return torch.distributions.Categorical(logits=q / self.log_temperature.exp()).sample()


MlpPolicy = DiscreteSQLPolicy
