"""What the two soft Q-learning policies share: the checked network settings and the temperature.

The temperature alpha lives in one place, the policy's ``log_temperature`` buffer: saved with the
policy (a policy-only save keeps a tuned alpha), rolled back with it by the divergence guard, and
*the* tensor that SQL's ``log_alpha`` names when alpha is learned
(docs/architecture.md, "Where each concept lives").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor

from ebrl.energies import ACTIVATIONS
from ebrl.validation import check_choice, check_int, check_positive_float


def check_net_arch(net_arch: Sequence[int]) -> list[int]:
    """``net_arch`` as a list of hidden widths (a non-empty sequence of ints >= 1)."""
    if isinstance(net_arch, int | str) or not isinstance(net_arch, Sequence) or len(net_arch) == 0:
        raise TypeError(f"net_arch must be a non-empty sequence of ints, got {net_arch!r}")
    return [check_int("net_arch[i]", h, minimum=1) for h in net_arch]


class SoftQPolicy(BasePolicy):
    """Base of the SQL and DiscreteSQL policies: flat MLP features, ``net_arch``/``activation``
    checked once, and the Boltzmann temperature alpha as the ``log_temperature`` buffer.

    Args:
        observation_space: the env's observation space (flattened into the state vector).
        action_space: the env's action space (checked by the subclass).
        net_arch: hidden widths of the Q-networks.
        activation: activation of the Q-networks (one of ``ebrl.energies.ACTIVATIONS``).
        temperature: initial alpha of pi ∝ exp(Q/alpha) (> 0).
        normalize_images: passed to SB3's observation preprocessing.
        optimizer_class, optimizer_kwargs: the Q-networks' optimiser.
        squash_output: True where actions live in [-1, 1]^d (SB3 rescales them to the env's box).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        net_arch: Sequence[int],
        activation: str,
        temperature: float,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        squash_output: bool = False,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class=FlattenExtractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=squash_output,
        )
        self.net_arch = check_net_arch(net_arch)
        self.activation = activation
        self.register_buffer("log_temperature", torch.tensor(math.log(temperature)))

    @staticmethod
    def check_kwargs(**kwargs: Any) -> None:
        """Validate the shared constructor arguments without building anything (the algorithm
        calls this on ``policy_kwargs`` before it creates any state)."""
        if "net_arch" in kwargs:
            check_net_arch(kwargs["net_arch"])
        if "activation" in kwargs:
            check_choice("activation", kwargs["activation"], list(ACTIVATIONS))
        if "temperature" in kwargs:
            check_positive_float("temperature", kwargs["temperature"])

    @property
    def temperature(self) -> float:
        """alpha, the Boltzmann temperature (a float read from the ``log_temperature`` buffer)."""
        return float(self.log_temperature.detach().exp())

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            lr_schedule=self._dummy_schedule, net_arch=self.net_arch, activation=self.activation,
            temperature=self.temperature, optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data
