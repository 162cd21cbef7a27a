"""Energy networks: E(x) and E(x | c), lower is more plausible.

For reinforcement learning x is an action a and c a state s, and E(s, a) = -Q(s, a), so the
Boltzmann policy is pi(a|s) ∝ exp(-E(s, a)/alpha) = exp(Q(s, a)/alpha) (Haarnoja et al. 2017).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ebrl._stacked import StackedMax, stack, stacked_energy, stacked_features
from ebrl.validation import check_choice, check_int, check_tensor

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh,
    "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
}  # fmt: skip

EnergyFn = Callable[[Tensor], Tensor]


def _linear(n_in: int, n_out: int, spectral_norm: bool) -> nn.Module:
    layer = nn.Linear(n_in, n_out)
    if spectral_norm:
        # Bounds each layer's Lipschitz constant: keeps contrastively trained energies smooth
        # (Du & Mordatch 2019, sec. 3.3).
        layer = nn.utils.parametrizations.spectral_norm(layer)
    return layer


def check_layer_norm(name: str, layer_norm: object) -> bool | str:
    """``layer_norm`` of :class:`StateActionEnergy` (True, False or ``"last"``), or a TypeError naming
    ``name``."""
    if not (isinstance(layer_norm, bool) or (isinstance(layer_norm, str) and layer_norm == "last")):
        raise TypeError(f"{name} must be True, False or 'last', got {layer_norm!r}")
    return layer_norm if isinstance(layer_norm, bool) else "last"


def _check_hidden(hidden_sizes: Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden_sizes, int | str) or not isinstance(hidden_sizes, Sequence):
        raise TypeError(f"hidden_sizes must be a sequence of ints, got {hidden_sizes!r}")
    return tuple(check_int("hidden_sizes[i]", h, minimum=1) for h in hidden_sizes)


class Energy(nn.Module, ABC):
    """Base class of energies E(x | c) over ``x_dim``-dimensional x with optional context c.

    Subclasses implement :meth:`energy`; :meth:`condition` returns the function x -> E(x | c)
    that samplers take, with the context's share of the work done once.
    """

    x_dim: int
    context_dim: int

    @abstractmethod
    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Energy of ``x`` of shape ``(..., x_dim)``; returns shape ``x.shape[:-1]``."""

    def condition(self, context: Tensor | None = None) -> EnergyFn:
        """The function x -> E(x | context) for a fixed context (what a sampler runs on)."""
        return lambda x: self.energy(x, context)

    @property
    def device(self) -> torch.device:
        """Where the parameters (else buffers) live; CPU for an energy with neither."""
        return next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' (else buffers') dtype; the default dtype for an energy with neither."""
        return next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).dtype


class MLPEnergy(Energy):
    """Unconditional MLP energy E_theta(x) with a scalar output.

    Args:
        x_dim: dimension of x.
        hidden_sizes: widths of the hidden layers.
        activation: one of ``ACTIVATIONS``; smooth activations (SiLU, the default) give the
            smooth input gradients Langevin dynamics needs (Du & Mordatch 2019).
        spectral_norm: wrap every linear layer in spectral normalisation.
        context_dim: if > 0, the energy is conditional, E(x | c), with c concatenated to x.
    """

    def __init__(
        self,
        x_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "silu",
        spectral_norm: bool = False,
        context_dim: int = 0,
    ) -> None:
        super().__init__()
        self.x_dim = check_int("x_dim", x_dim, minimum=1)
        self.context_dim = check_int("context_dim", context_dim, minimum=0)
        hidden = _check_hidden(hidden_sizes)
        act = ACTIVATIONS[check_choice("activation", activation, list(ACTIVATIONS))]
        layers: list[nn.Module] = []
        n_in = self.x_dim + self.context_dim
        for h in hidden:
            layers += [_linear(n_in, h, spectral_norm), act()]
            n_in = h
        layers.append(_linear(n_in, 1, spectral_norm))
        self.net = nn.Sequential(*layers)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(_joint_input(x, context, self.x_dim, self.context_dim)).squeeze(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.energy(x, context)


def _joint_input(x: Tensor, context: Tensor | None, x_dim: int, context_dim: int) -> Tensor:
    """[x, c] of shape ``x.shape[:-1] + (x_dim + context_dim,)`` (just x when context_dim is 0),
    the context broadcast over x's chain dimensions; a missing or unexpected context is refused."""
    check_tensor("x", x, last_dim=x_dim)
    if not context_dim:
        if context is not None:
            raise ValueError("context must be None for an unconditional energy (context_dim=0)")
        return x
    if context is None:
        raise ValueError(f"context is required: this energy has context_dim={context_dim}")
    return torch.cat([x, _broadcast_context(context, x, context_dim)], dim=-1)


def _broadcast_context(context: Tensor, x: Tensor, context_dim: int, name: str = "context") -> Tensor:
    """Expand ``context`` of shape ``S + (c,)`` to ``x.shape[:-1] + (c,)``.

    ``x`` has shape ``S + C + (d,)``: the context's leading shape must be a prefix of x's, and it
    is broadcast over the extra (chain) dimensions C.
    """
    check_tensor(name, context, last_dim=context_dim)
    lead_c, lead_x = context.shape[:-1], x.shape[:-1]
    if len(lead_c) > len(lead_x) or lead_x[: len(lead_c)] != lead_c:
        raise ValueError(
            f"{name} of shape {tuple(context.shape)} does not match x of shape {tuple(x.shape)}: "
            "the leading (batch) shape of the context must be a prefix of x's leading shape"
        )
    extra = len(lead_x) - len(lead_c)
    context = context.reshape(*lead_c, *([1] * extra), context_dim)
    return context.expand(*lead_x, context_dim)


class StateActionEnergy(Energy):
    """State-action energy E_theta(s, a) = -Q_theta(s, a).

    The first layer is split, W_s s + W_a a, so that a state's share is computed once and
    broadcast over all of its action chains (the sampler's inner loop only pays for W_a a).

    Args:
        obs_dim: dimension of the state s.
        act_dim: dimension of the action a (actions live in the normalised box [-1, 1]^act_dim).
        hidden_sizes: widths of the hidden layers (at least one).
        activation: one of ``ACTIVATIONS`` (SiLU default: smooth gradients for Langevin).
        spectral_norm: wrap every linear layer in spectral normalisation.
        layer_norm: layer normalisation (with its affine gain and bias) of the hidden layers'
            pre-activations, Linear -> LayerNorm -> activation: the critic design of Ball et al.
            2023 (RLPD) and Lee et al. 2024 (SimBa), which bounds the features' scale as Q grows.
            ``True`` normalises every hidden layer, ``"last"`` only the last one (the features the
            linear head reads; about half the cost), ``False`` none.

    Shapes: ``states`` is ``S + (obs_dim,)`` and ``actions`` is ``S + C + (act_dim,)``; the state
    is broadcast over the extra chain dimensions C, e.g. states ``(batch, obs)`` with actions
    ``(batch, chains, act)``. The result has shape ``actions.shape[:-1]``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "silu",
        spectral_norm: bool = False,
        layer_norm: bool | str = False,
    ) -> None:
        super().__init__()
        self.layer_norm = check_layer_norm("layer_norm", layer_norm)
        self.obs_dim = self.context_dim = check_int("obs_dim", obs_dim, minimum=1)
        self.act_dim = self.x_dim = check_int("act_dim", act_dim, minimum=1)
        hidden = _check_hidden(hidden_sizes)
        if not hidden:
            raise ValueError("hidden_sizes must have at least one layer for StateActionEnergy, got ()")
        act = ACTIVATIONS[check_choice("activation", activation, list(ACTIVATIONS))]
        # which hidden layers are normalised: all, the last one, or none
        normed = [layer_norm is True or (layer_norm == "last" and i == len(hidden) - 1)
                  for i in range(len(hidden))]
        self.state_in = _linear(self.obs_dim, hidden[0], spectral_norm)
        # Bias lives in state_in only: the sum W_s s + b + W_a a is one linear layer on (s, a).
        self.action_in = nn.Linear(self.act_dim, hidden[0], bias=False)
        if spectral_norm:
            self.action_in = nn.utils.parametrizations.spectral_norm(self.action_in)
        self.act = act()
        # Identity without layer_norm: no parameters, so earlier state dicts still load.
        self.in_norm: nn.Module = nn.LayerNorm(hidden[0]) if normed[0] else nn.Identity()
        layers: list[nn.Module] = []
        n_in = hidden[0]
        for h, norm in zip(hidden[1:], normed[1:], strict=True):
            layers += [_linear(n_in, h, spectral_norm), *([nn.LayerNorm(h)] if norm else []), act()]
            n_in = h
        layers.append(_linear(n_in, 1, spectral_norm))
        self.trunk = nn.Sequential(*layers)

    def _state_features(self, states: Tensor, actions: Tensor) -> Tensor:
        feats = self.state_in(check_tensor("states", states, last_dim=self.obs_dim))
        return _broadcast_context(feats, actions, feats.shape[-1], name="states")

    def _energy_from_features(self, feats: Tensor, actions: Tensor) -> Tensor:
        return self.trunk(self.act(self.in_norm(feats + self.action_in(actions)))).squeeze(-1)

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        """E(s, a) with ``states`` ``S + (obs_dim,)`` and ``actions`` ``S + C + (act_dim,)``."""
        check_tensor("actions", actions, last_dim=self.act_dim)
        return self._energy_from_features(self._state_features(states, actions), actions)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Generic form: x are actions, the context the states (required)."""
        if context is None:
            raise ValueError("context (the states) is required for a StateActionEnergy")
        return self.forward(context, x)

    def q_value(self, states: Tensor, actions: Tensor) -> Tensor:
        """Q(s, a) = -E(s, a)."""
        return -self.forward(states, actions)

    def condition(self, context: Tensor | None = None) -> EnergyFn:
        """a -> E(s, a) for fixed states, with W_s s computed once (and without a graph).

        The state features are detached: samplers only need gradients with respect to actions,
        and a detached prefix keeps the per-step backward pass as short as possible. For that
        reason the returned function is for sampling only: a training loss must call
        :meth:`forward` (or :meth:`energy`) so that gradients reach the state layer.
        """
        if context is None:
            raise ValueError("context (the states) is required for a StateActionEnergy")
        check_tensor("states", context, last_dim=self.obs_dim)
        with torch.no_grad():
            base = self.state_in(context)

        # Shape of the prefix as seen by actions S + C + (act_dim,): singleton chain dims.
        lead = base.shape[:-1]

        def energy_fn(actions: Tensor) -> Tensor:
            if actions.shape[: len(lead)] != lead or actions.shape[-1] != self.act_dim:
                raise ValueError(
                    f"actions of shape {tuple(actions.shape)} do not match states of shape "
                    f"{tuple(context.shape)}: expected {tuple(lead)} + chains + ({self.act_dim},)"
                )
            extra = actions.dim() - 1 - len(lead)
            feats = base.reshape(*lead, *([1] * extra), base.shape[-1])
            return self._energy_from_features(feats, actions)

        return energy_fn


def stackable(energies: Sequence[Energy]) -> bool:
    """Whether :func:`ensemble_energy` can run these energies as one batched pass: plain
    state-action energies (no spectral normalisation) of one architecture, with or without layer
    normalisation."""
    first = energies[0]
    return all(
        isinstance(e, StateActionEnergy)
        and isinstance(first, StateActionEnergy)
        and e.layer_norm == first.layer_norm
        and isinstance(e.state_in, nn.Linear)
        and isinstance(e.action_in, nn.Linear)
        and not nn.utils.parametrize.is_parametrized(e.state_in)
        and not nn.utils.parametrize.is_parametrized(e.action_in)
        and len(e.trunk) == len(first.trunk)
        and all(type(a) is type(b) for a, b in zip(e.trunk, first.trunk, strict=True))
        and e.state_in.weight.shape == first.state_in.weight.shape
        and not any(nn.utils.parametrize.is_parametrized(m) for m in e.trunk)
        for e in energies
    )


def ensemble_energy(
    energies: Sequence[StateActionEnergy], states: Tensor, actions: Tensor, *, stacked: bool | None = None
) -> Tensor:
    """E_i(s, a) of several state-action energies of one architecture in one batched pass.

    Returns ``(n_energies, *actions.shape[:-1])``. The weights of the members are stacked and
    every layer runs as one batched matmul (``baddbmm``) instead of one matmul per member: half
    the kernel launches on a GPU (on one CPU thread a loop measured ~10 % faster for twin 2 x 256
    critics at 256-1024 rows, fwd + bwd). Gradients flow to every member's own parameters (the
    stack is part of the graph). Members that are not :func:`stackable` fall back to a loop;
    ``stacked`` passes that answer when the caller already knows it.
    """
    first = energies[0]
    if not (stackable(energies) if stacked is None else stacked) or len(energies) == 1:
        return torch.stack([e(states, actions) for e in energies])
    check_tensor("actions", actions, last_dim=first.act_dim)
    check_tensor("states", states, last_dim=first.obs_dim)
    lead_s, lead_a = states.shape[:-1], actions.shape[:-1]
    if len(lead_s) > len(lead_a) or lead_a[: len(lead_s)] != lead_s:
        raise ValueError(
            f"states of shape {tuple(states.shape)} do not match actions of shape {tuple(actions.shape)}"
        )
    w = stack(energies)
    n_chain = lead_a[len(lead_s):].numel()
    return stacked_energy(w, first.act, stacked_features(w, states), actions, n_chain).reshape(
        len(energies), *lead_a
    )


class PessimisticEnergy(Energy):
    """E(s, a) = max_i E_i(s, a) over state-action energies: Q(s, a) = min_i Q_i(s, a).

    The twin-critic minimum of TD3/SAC (Fujimoto et al. 2018) as one energy: a Boltzmann policy
    on it samples exp(min_i Q_i / alpha), the same function whose log-partition is the soft value
    in the SQL target, and it exploits the errors of one critic far less than either critic
    alone. The members are *not* registered as submodules (their owner holds them, so a
    ``state_dict`` has each parameter once); device and dtype follow the first member.

    Args:
        members: state-action energies of one architecture (e.g. the twin critics).
    """

    def __init__(self, members: Sequence[StateActionEnergy]) -> None:
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, StateActionEnergy) for m in members):
            raise TypeError("members must be a non-empty sequence of StateActionEnergy")
        self.__dict__["members"] = members
        self._stacked = stackable(members)
        self.obs_dim = self.context_dim = members[0].obs_dim
        self.act_dim = self.x_dim = members[0].act_dim

    @property
    def device(self) -> torch.device:
        """Where the members' parameters live."""
        return self.members[0].device

    @property
    def dtype(self) -> torch.dtype:
        """The members' parameters' dtype."""
        return self.members[0].dtype

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        """max_i E_i(s, a), shapes as in :class:`StateActionEnergy`."""
        # One batched pass on CUDA (half the kernel launches); on one CPU thread a loop measured
        # faster at every batch size, stacking the weights included (see ensemble_energy).
        if actions.device.type == "cuda":
            return ensemble_energy(self.members, states, actions, stacked=self._stacked).max(0).values
        return torch.stack([m(states, actions) for m in self.members]).max(0).values

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("context (the states) is required for a PessimisticEnergy")
        return self.forward(context, x)

    def condition(self, context: Tensor | None = None) -> EnergyFn:
        """a -> max_i E_i(s, a) for fixed states, for sampling only (no parameter gradients).

        The members' weights are stacked and their state features computed once per call, so
        each MCMC step is one batched matmul per layer for all members: the acting regime (a few
        chains per state) is bound by per-op overhead, which this halves for twin critics. For
        ReLU members the function also gives E and dE/da in closed form, without autograd
        (:class:`ebrl._stacked.StackedMax`).
        """
        if context is None:
            raise ValueError("context (the states) is required for a PessimisticEnergy")
        if not self._stacked or len(self.members) == 1:
            fns = [m.condition(context) for m in self.members]
            return lambda x: torch.stack([f(x) for f in fns]).max(0).values
        check_tensor("states", context, last_dim=self.obs_dim)
        with torch.no_grad():
            w = stack(self.members)
        return StackedMax(w, self.members[0].act, context, self.act_dim)
