"""Anomaly-scoring head: the energy (or a state's free energy) as an anomaly score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebrl.energies import Energy
from ebrl.heads._protocol import EnergyLike, EnergyView, as_energy
from ebrl.heads.density import KernelDensityEnergy
from ebrl.policy import BoltzmannPolicy
from ebrl.validation import check_bool, check_finite, check_fraction, check_int, check_positive_float


class AnomalyScorer:
    """Score inputs by energy: higher score = less plausible under the model.

    For an energy of actions given states (a soft Q-function, E = -Q), three scores exist:
    ``score(actions, context=states)`` is E(s, a); ``score_states(states)`` is the state's free
    energy F(s) = -alpha log Z(s) = -V(s) (the negative soft value, Haarnoja et al. 2017, eq. 10)
    with log Z by uniform importance sampling; ``score_normalized(actions, states)`` is
    -log pi(a|s) = E(s, a)/alpha + log Z(s), which removes each state's offset, and
    ``score_quantile(actions, states)`` is the share of pi's own actions with lower energy, which
    removes each state's spread as well (uniform on [0, 1] for pi's draws). A Q-function is
    not trained off its state distribution, so none of these flags states an agent has not seen;
    :meth:`for_agent` builds the head that does, a density over the agent's replay buffer.

    Args:
        energy: an ``Energy``, an object with ``free_energy(v)``, a callable, or an ensemble
            (the mean energy: members should share a scale, e.g. all trained by score matching).
        temperature: alpha of the Boltzmann policy pi ∝ exp(-E/alpha); required for the
            state scores of a ``StateActionEnergy``.
        n_partition: importance samples M per state for log Z(s).
        batch_size: rows scored per forward pass (bounds memory on large inputs).
    """

    def __init__(
        self,
        energy: EnergyLike,
        temperature: float | None = None,
        *,
        n_partition: int = 1024,
        batch_size: int = 4096,
    ) -> None:
        self.view: EnergyView = as_energy(energy)
        self.temperature = None if temperature is None else check_positive_float("temperature", temperature)
        self.n_partition = check_int("n_partition", n_partition, minimum=2)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.threshold: float | None = None

    @classmethod
    def for_agent(
        cls, model: Any, *, actions: bool = False, max_points: int = 5000,
        generator: torch.Generator | None = None, **kwargs: Any,
    ) -> AnomalyScorer:  # fmt: skip
        """A state-density head for an off-policy agent (an SB3 model with a replay buffer), in one
        call: a :class:`~ebrl.heads.density.KernelDensityEnergy` fitted on the states of
        ``model.replay_buffer`` (bandwidth and metric by leave-one-out likelihood on those states).

        ``score(states)`` is then -log p(s): high for states the agent has not seen. With
        ``actions=True`` the energy is -log p(a | s) of the buffer's (state, action) pairs:
        ``score(actions, context=states)`` flags actions unlike those taken near that state.
        States are observations as the environment returns them (a replay buffer holds them
        before any VecNormalize); actions are SB3's stored ones (Box actions scaled to [-1, 1]).

        Args:
            model: an object with ``replay_buffer`` holding ``observations`` and ``actions``
                arrays ``(buffer_size, n_envs, ...)`` and ``size()`` (SB3's ReplayBuffer).
            actions: fit -log p(a | s) instead of -log p(s).
            max_points: keep at most this many transitions (a uniformly random subset of the
                buffer; the cost of one score is O(max_points)).
            generator: random source of the subsets.
            kwargs: further arguments of ``KernelDensityEnergy`` (``bandwidth``, ``metric``, ...).
        """
        actions = check_bool("actions", actions)
        states, acts = replay_arrays(model)
        energy = KernelDensityEnergy(
            acts if actions else states, states if actions else None,
            max_points=max_points, generator=generator, **kwargs,
        )  # fmt: skip
        return cls(energy)

    def score(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """E(x | context) for ``x`` of shape ``(..., dim)``: shape ``x.shape[:-1]``, no graph."""
        x = check_finite("x", self.view.check_x("x", x))
        step = self.batch_size
        with torch.no_grad():
            if x.dim() == 1 or x.shape[0] <= step:
                return self.view.energy(x, context)
            parts = [
                self.view.energy(x[i : i + step], None if context is None else context[i : i + step])
                for i in range(0, x.shape[0], step)
            ]
        return torch.cat(parts)

    def _policy(self) -> BoltzmannPolicy:
        energy = self.view.model
        if not isinstance(energy, Energy) or energy.context_dim < 1:
            raise TypeError(
                "state scores need a state-action energy (a StateActionEnergy or another conditional "
                f"Energy), got {type(energy).__name__}"
            )
        if self.temperature is None:
            raise ValueError(
                "temperature (alpha) is required for state scores: pass AnomalyScorer(..., temperature=)"
            )
        return BoltzmannPolicy(energy, temperature=self.temperature)

    def score_states(self, states: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Free energy F(s) = -alpha log Z(s) of ``states`` ``(batch, obs_dim)``: ``(batch,)``."""
        policy = self._policy()
        with torch.no_grad():
            log_z, _ = policy.log_partition(states, n=self.n_partition, generator=generator)
        return -policy.temperature * log_z

    def score_normalized(
        self, actions: Tensor, states: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """-log pi(a|s) = E(s, a)/alpha + log Z(s) for ``states`` ``(batch, obs_dim)`` and
        ``actions`` ``(batch, act_dim)`` or ``(batch, k, act_dim)`` (k actions per state, each
        state's log Z estimated once): shape ``actions.shape[:-1]``."""
        policy = self._policy()
        e = self.score(actions, context=states)
        with torch.no_grad():
            log_z, _ = policy.log_partition(states, n=self.n_partition, generator=generator)
        return e / policy.temperature + log_z.reshape(-1, *[1] * (e.dim() - 1))

    def score_quantile(
        self, actions: Tensor, states: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """P_{a' ~ pi(.|s)}[E(s, a') < E(s, a)]: the share of the Boltzmann policy's own actions at
        s with lower energy than ``actions``, in [0, 1] (:meth:`BoltzmannPolicy.energy_quantile`).

        Uniform on [0, 1] at every state for the policy's own draws, so scores of different
        states compare directly (E(s, a) carries each state's offset V(s), and -log pi(a|s) its
        spread log Z); the policy's mode scores 0. Shapes as in :meth:`score_normalized`."""
        policy = self._policy()
        return policy.energy_quantile(actions, states, n=self.n_partition, generator=generator)

    def fit_threshold(self, x_normal: Tensor, fpr: float = 0.05, context: Tensor | None = None) -> float:
        """Set the threshold to the (1 - fpr) quantile of the scores of normal data, so that a
        fraction ``fpr`` (the false-positive rate) of normal inputs is flagged; returns it."""
        fpr = check_fraction("fpr", fpr, allow_none=False)
        if fpr >= 1.0:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}")
        x_normal = self.view.check_x("x_normal", x_normal)
        if x_normal.dim() != 2 or x_normal.shape[0] < 2:
            raise ValueError(f"x_normal must have shape (n >= 2, dim), got {tuple(x_normal.shape)}")
        check_finite("x_normal", x_normal)
        scores = self.score(x_normal, context)
        self.threshold = float(torch.quantile(scores.double(), 1.0 - fpr))
        return self.threshold

    def predict(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Boolean ``x.shape[:-1]``: True where the score exceeds the fitted threshold (anomaly)."""
        if self.threshold is None:
            raise RuntimeError("call fit_threshold(x_normal, fpr) before predict")
        return self.score(x, context) > self.threshold


def replay_arrays(model: Any) -> tuple[Tensor, Tensor]:
    """(states, actions) of an SB3 model's replay buffer as float32 tensors ``(n, obs_dim)`` and
    ``(n, act_dim)``, every env's column included; what :meth:`AnomalyScorer.for_agent` fits."""
    buffer = getattr(model, "replay_buffer", None)
    obs = getattr(buffer, "observations", None)
    if buffer is None or not hasattr(buffer, "size") or not hasattr(buffer, "actions"):
        raise TypeError(
            "model must be an off-policy agent with a replay_buffer (SB3's ReplayBuffer), "
            f"got {type(model).__name__}"
        )
    if isinstance(obs, dict) or not hasattr(obs, "shape"):
        raise TypeError(
            "model.replay_buffer must hold array observations (a Dict observation space is not supported)"
        )
    n = int(buffer.size())
    if n < 3:
        raise ValueError(f"model.replay_buffer holds {n} transitions; the density needs at least 3")
    states = torch.as_tensor(np.asarray(obs[:n]), dtype=torch.float32)
    acts = torch.as_tensor(np.asarray(buffer.actions[:n]), dtype=torch.float32)
    return states.reshape(n * states.shape[1], -1), acts.reshape(n * acts.shape[1], -1)
