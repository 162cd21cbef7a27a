"""Divergence guard for SB3 off-policy algorithms: detect non-finite values, skip or roll back, count, stop.

An algorithm mixes in :class:`DivergenceGuardMixin` (before ``OffPolicyAlgorithm``) and calls, in
``train()``::

    self._guard_begin()                                   # remember the last good state
    for step in range(gradient_steps):
        ...
        if not self._guard_check(q_loss=q_loss, q_values=current, target=target):
            continue                                      # skip this update
        q_loss.backward()
        if not self._guard_check_grads(self.policy.optimizer):
            continue                                      # skip this optimiser step
        self.policy.optimizer.step()
    self._guard_end()                                     # parameters finite, else roll back

Each failure logs one line (logger ``ebrl.guard``: the quantity, the step, the count), adds one to
the ``train/diverged`` counter, and after ``max_divergences`` consecutive failures raises
:class:`~ebrl.errors.NonFiniteError` naming the quantity. Parameters that became non-finite are
rolled back, with every optimiser's state, to the last good snapshot. Snapshots are taken by
``_guard_begin`` every ``GUARD_SNAPSHOT_EVERY`` calls (a deep copy of every parameter and optimiser
state per env step cost a fifth of SAC-sized training time); every call still checks the
parameters, with one reduction per tensor. Actions from
the MCMC sampler are checked too (``_sample_action``): a non-finite action restarts the chains and
is replaced by a uniform one. The run checkpoints of ``ebrl train`` refuse non-finite tensors
(``experiments/checkpoints/state.py``, ``check_finite_params``), so a checkpoint never holds NaN or inf.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ebrl.errors import NonFiniteError, first_non_finite

log = logging.getLogger("ebrl.guard")
DEFAULT_MAX_DIVERGENCES = 10
# train() calls between two snapshots of the last good state (the rollback target).
GUARD_SNAPSHOT_EVERY = 100


def check_max_divergences(max_divergences: int) -> int:
    """``max_divergences`` as an int >= 1 (consecutive failures the guard allows)."""
    if isinstance(max_divergences, bool) or not isinstance(max_divergences, int) or max_divergences < 1:
        raise ValueError(f"max_divergences must be an integer >= 1, got {max_divergences!r}")
    return max_divergences


class DivergenceGuardMixin:
    """Skip, roll back, count and finally stop on non-finite losses, Q values, gradients, parameters
    and sampled actions (see the module docstring). ``max_divergences``: consecutive failures allowed."""

    max_divergences: int = DEFAULT_MAX_DIVERGENCES
    n_diverged: int = 0
    _consecutive_divergences: int = 0
    _guard_state: dict[str, Any] | None = None
    _guard_failures_at_begin: int = 0
    _guard_calls: int = 0

    def _excluded_save_params(self) -> list[str]:
        # The rollback snapshot is a copy of the model: never written into a saved model file.
        return [*super()._excluded_save_params(), "_guard_state"]  # type: ignore[misc]

    # --- what is guarded
    def _guard_modules(self) -> dict[str, Any]:
        """Objects whose state is rolled back: the policy, its optimiser(s), torch variables."""
        names, variables = self._get_torch_save_params()  # type: ignore[attr-defined]
        out = {}
        for name in [*names, *variables]:
            obj: Any = self
            for part in name.split("."):
                obj = getattr(obj, part)
            out[name] = obj
        return out

    def _guard_begin(self) -> None:
        """Snapshot the last good state (parameters, optimiser states, torch variables) when the
        last snapshot is ``GUARD_SNAPSHOT_EVERY`` calls old (the state here passed ``_guard_end``)."""
        self._guard_failures_at_begin = self.n_diverged
        self._guard_calls += 1
        if self._guard_state is not None and self._guard_calls % GUARD_SNAPSHOT_EVERY != 0:
            return
        state = {}
        for name, obj in self._guard_modules().items():
            if isinstance(obj, torch.Tensor):
                state[name] = obj.detach().clone()
            else:
                state[name] = copy.deepcopy(obj.state_dict())
        if first_non_finite(state=list(_tensors(state))) is None:  # optimiser states included
            self._guard_state = state

    def _guard_rollback(self) -> None:
        if self._guard_state is None:
            return
        for name, obj in self._guard_modules().items():
            saved = self._guard_state[name]
            if isinstance(obj, torch.Tensor):
                obj.data.copy_(saved)
            else:
                obj.load_state_dict(copy.deepcopy(saved))
        policy = self.policy  # type: ignore[attr-defined]
        if hasattr(policy, "reset_chains"):
            policy.reset_chains()

    def _guard_failed(self, quantity: str, rolled_back: bool) -> None:
        self.n_diverged += 1
        self._consecutive_divergences += 1
        steps = getattr(self, "num_timesteps", 0)
        action = "rolled back to the last good parameters" if rolled_back else "update skipped"
        log.warning(
            "non-finite %s at step %d: %s (%d consecutive, %d in all)",
            quantity,
            steps,
            action,
            self._consecutive_divergences,
            self.n_diverged,
        )
        self.logger.record("train/diverged", self.n_diverged)  # type: ignore[attr-defined]
        if self._consecutive_divergences >= self.max_divergences:
            raise NonFiniteError(
                f"training diverged: {quantity} was non-finite in {self._consecutive_divergences} "
                f"consecutive updates (max_divergences={self.max_divergences}) at step {steps}; lower the "
                f"learning rate or reward scale, or check the env's observations and rewards"
            )

    # --- the calls made from train()
    def _guard_check(self, **quantities: Any) -> bool:
        """False (and counted) when any named quantity is non-finite: skip this update."""
        bad = first_non_finite(**quantities)
        if bad is None:
            return True
        for group in self._guard_optimizers():
            group.zero_grad()
        self._guard_failed(bad, rolled_back=False)
        return False

    def _guard_check_grads(self, *optimizers: torch.optim.Optimizer) -> bool:
        """False (gradients cleared, counted) when a gradient of these optimisers is non-finite."""
        grads = [
            p.grad for opt in optimizers for g in opt.param_groups for p in g["params"] if p.grad is not None
        ]
        if first_non_finite(gradients=grads) is None:
            return True
        for opt in optimizers:
            opt.zero_grad()
        self._guard_failed("gradients", rolled_back=False)
        return False

    def _guard_end(self) -> None:
        """After the updates: roll back if a parameter (or torch variable) became non-finite.

        One reduction per tensor and one host sync: sums propagate NaN and inf. Optimiser states
        are checked when a snapshot is taken (a non-finite moment reaches the parameters at the
        next step, where this check sees it)."""
        bad = None
        for name, obj in self._guard_modules().items():
            if isinstance(obj, torch.optim.Optimizer):
                continue
            tensors = [obj] if isinstance(obj, torch.Tensor) else list(obj.state_dict().values())
            sums = [t.detach().sum() for t in tensors if t.is_floating_point()]
            if sums and not bool(torch.isfinite(torch.stack(sums)).all()):
                bad = name
                break
        if bad is None:
            if self.n_diverged == self._guard_failures_at_begin:  # every update of this call was good
                self._consecutive_divergences = 0
            return
        self._guard_rollback()
        self._guard_failed(f"parameters ({bad})", rolled_back=True)

    def _guard_optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in self._guard_modules().values() if isinstance(o, torch.optim.Optimizer)]

    # --- sampler states: actions used in the env
    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> Any:
        action, buffer_action = super()._sample_action(learning_starts, action_noise, n_envs)  # type: ignore[misc]
        if first_non_finite(action=np.asarray(action, dtype=np.float64)) is None:
            return action, buffer_action
        policy = self.policy  # type: ignore[attr-defined]
        if hasattr(policy, "reset_chains"):
            policy.reset_chains()
        self._guard_failed("sampled actions (sampler state)", rolled_back=False)
        action = np.array([self.action_space.sample() for _ in range(n_envs)])  # type: ignore[attr-defined]
        return action, policy.scale_action(action) if hasattr(policy, "scale_action") and getattr(
            policy, "squash_output", False
        ) else action


def _tensors(state: Any) -> Iterable[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for v in state.values():
            yield from _tensors(v)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from _tensors(v)
