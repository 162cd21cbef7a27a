"""Same-shaped state-action MLPs run as one batched pass, and their exact input gradient in closed form.

The twin critics of SQL act as one energy, E = max_i E_i (:class:`ebrl.energies.PessimisticEnergy`).
Their weights are stacked along a leading member dimension so that every layer is one ``bmm`` for
all members. The action search needs E and dE/da at a handful of points per state: a regime bound
by per-op overhead, where autograd's graph and engine cost as much as the matmuls. For piecewise-
linear activations (ReLU) the input gradient is a product of masked matrices, written here
directly (docs/architecture.md, "Samplers"); a layer normalisation between a matmul and its ReLU
adds its own (row-wise) backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Norm(NamedTuple):
    """A layer normalisation's gain and bias of every member, ``(n, 1, h)`` each."""

    weight: Tensor
    bias: Tensor
    eps: float


class Stacked(NamedTuple):
    """The weights of same-shaped state-action energies, stacked along a leading member dim."""

    w_s: Tensor
    b_s: Tensor
    w_a: Tensor
    # (weight, bias) per Linear, a Norm per LayerNorm, else the (parameter-free) layer itself
    trunk: list[tuple[Tensor, Tensor] | Norm | nn.Module]
    in_norm: Norm | None = None  # normalisation of the first layer's pre-activation


def _stack_norm(norms: list[nn.Module]) -> Norm | None:
    if not isinstance(norms[0], nn.LayerNorm):
        return None
    weight, bias = (torch.stack([getattr(m, name) for m in norms])[:, None, :] for name in ("weight", "bias"))
    return Norm(weight, bias, norms[0].eps)


def layer_norm(norm: Norm, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LayerNorm of ``z`` ``(n, R, h)`` with every member's gain and bias: (output, x_hat, 1/std)."""
    centred = z - z.mean(-1, keepdim=True)
    inv_std = torch.rsqrt(centred.square().mean(-1, keepdim=True) + norm.eps)
    x_hat = centred * inv_std
    return x_hat * norm.weight + norm.bias, x_hat, inv_std


def layer_norm_backward(g: Tensor, norm: Norm, x_hat: Tensor, inv_std: Tensor) -> Tensor:
    """dE/dz from dE/dy for y = LayerNorm(z), row by row: (g_hat - mean g_hat - x_hat mean(g_hat
    x_hat)) / std with g_hat = g * gain (the biased variance, as ``nn.LayerNorm``)."""
    g_hat = g * norm.weight
    return inv_std * (g_hat - g_hat.mean(-1, keepdim=True) - x_hat * (g_hat * x_hat).mean(-1, keepdim=True))


def stack(energies: Sequence[nn.Module]) -> Stacked:
    """Stack the ``state_in``/``action_in``/``trunk`` weights of :func:`ebrl.energies.stackable` members
    (transposed: every layer is ``baddbmm(bias, h, weight)``)."""

    def pair(linears: list[nn.Linear]) -> tuple[Tensor, Tensor]:
        return torch.stack([m.weight for m in linears]).transpose(1, 2), torch.stack(
            [m.bias for m in linears]
        )[:, None, :]

    w_s, b_s = pair([e.state_in for e in energies])
    w_a = torch.stack([e.action_in.weight for e in energies]).transpose(1, 2)
    trunk = [
        pair([e.trunk[i] for e in energies]) if isinstance(layer, nn.Linear)
        else _stack_norm([e.trunk[i] for e in energies]) if isinstance(layer, nn.LayerNorm) else layer
        for i, layer in enumerate(energies[0].trunk)
    ]
    return Stacked(w_s, b_s, w_a, trunk, _stack_norm([e.in_norm for e in energies]))


def stacked_features(w: Stacked, states: Tensor) -> Tensor:
    """W_s s + b of every member, ``(n, S, h)``: each state's share once."""
    n = w.w_s.shape[0]
    return torch.baddbmm(w.b_s, states.reshape(1, -1, w.w_s.shape[1]).expand(n, -1, -1), w.w_s)


def _first_layer(w: Stacked, feats: Tensor, actions: Tensor, n_chain: int) -> Tensor:
    n, n_states = feats.shape[:2]
    a = actions.reshape(1, -1, w.w_a.shape[1]).expand(n, -1, -1)
    h = torch.bmm(a, w.w_a).reshape(n, n_states, n_chain, -1) + feats[:, :, None, :]
    return h.reshape(n, n_states * n_chain, -1)


def stacked_energy(w: Stacked, act: nn.Module, feats: Tensor, actions: Tensor, n_chain: int) -> Tensor:
    """E_i of every member from its state features ``(n, S, h)`` and actions with ``n_chain``
    actions per state: ``(n, S * n_chain)``, one batched matmul per layer for all members."""
    h = _first_layer(w, feats, actions, n_chain)
    h = act(h if w.in_norm is None else layer_norm(w.in_norm, h)[0])
    for layer in w.trunk:
        if isinstance(layer, Norm):
            h = layer_norm(layer, h)[0]
        else:
            h = torch.baddbmm(layer[1], h, layer[0]) if isinstance(layer, tuple) else layer(h)
    return h.reshape(h.shape[0], -1)


def hidden_layers(w: Stacked) -> tuple[list[tuple[Tensor, Tensor]], list[Norm | None]]:
    """The trunk's Linear layers (the head last) and, per hidden layer, its normalisation or None:
    hidden layer 0 is the split first layer (``in_norm``), hidden layer k > 0 starts at linear k - 1."""
    linears: list[tuple[Tensor, Tensor]] = []
    norms: list[Norm | None] = [w.in_norm]
    for layer in w.trunk:
        if isinstance(layer, Norm):
            norms[-1] = layer
        elif isinstance(layer, tuple):
            linears.append(layer)
            norms.append(None)
    return linears, norms[:-1]  # the head's output is not normalised


def closed_form_gradient(act: nn.Module, trunk: Sequence[object]) -> bool:
    """Whether :func:`stacked_max_energy_and_grad` applies: ReLU activations only (their derivative
    is the mask of positive inputs; a smooth activation would need its own derivative), with or
    without layer normalisation before each."""
    return type(act) is nn.ReLU and all(isinstance(m, tuple | nn.ReLU) for m in trunk)


def stacked_max_energy_and_grad(
    w: Stacked, feats: Tensor, actions: Tensor, n_chain: int
) -> tuple[Tensor, Tensor]:
    """E = max_i E_i and dE/da for ReLU members, without autograd: ``(S * n_chain,)`` and
    ``(S * n_chain, act_dim)``.

    Forward: h_0 = relu(N_0(W_a a + f)), h_k = relu(N_k(W_k h_{k-1} + b_k)), E_i = w_L h + b_L, with
    N_k a layer normalisation or the identity. Backward, per member: dE_i/da = W_a^T N_0' D_0 W_1^T
    N_1' D_1 ... w_L with D_k the 0/1 masks of positive pre-activations and N_k' the normalisation's
    backward (:func:`layer_norm_backward`); the max takes the gradient of the member that attains it
    (as autograd's ``max`` does).
    """
    linears, norms = hidden_layers(w)
    h = _first_layer(w, feats, actions, n_chain)
    saved = []  # per hidden layer: (relu mask, x_hat and 1/std of its normalisation or None)
    for k, norm in enumerate(norms):
        if k > 0:
            h = torch.baddbmm(linears[k - 1][1], h, linears[k - 1][0])
        stats = None
        if norm is not None:
            h, x_hat, inv_std = layer_norm(norm, h)
            stats = (x_hat, inv_std)
        saved.append((h > 0, stats))
        h = h.clamp_min(0.0)
    weight, bias = linears[-1]
    e = torch.baddbmm(bias, h, weight)[..., 0]  # (n, R)
    best, idx = e.max(0)
    # Backward from the scalar head: w_L is (n, h, 1); row vector per member, masked per row.
    g = weight.transpose(1, 2).expand(-1, e.shape[1], -1)
    for k in reversed(range(len(norms))):
        mask, stats = saved[k]
        g = g * mask
        if stats is not None:
            g = layer_norm_backward(g, norms[k], *stats)
        g = torch.bmm(g, (linears[k - 1][0] if k > 0 else w.w_a).transpose(1, 2))
    grads = g  # (n, R, act_dim)
    grad = grads.gather(0, idx[None, :, None].expand(1, -1, grads.shape[-1]))[0]
    return best, grad


class StackedMax:
    """a -> max_i E_i(s, a) for fixed states ``S + (obs_dim,)``, for sampling only (no parameter
    gradients): what :meth:`ebrl.energies.PessimisticEnergy.condition` returns.

    ``closed_form_grad`` is E and dE/da without autograd (:func:`stacked_max_energy_and_grad`) where
    the members are ReLU networks, else None; :func:`ebrl.samplers.base.energy_and_grad` uses it when
    present.
    """

    def __init__(self, w: Stacked, act: nn.Module, states: Tensor, act_dim: int) -> None:
        self.w, self.act, self.act_dim = w, act, act_dim
        self.states_shape = tuple(states.shape)
        with torch.no_grad():
            self.feats = stacked_features(w, states)
        self.closed_form_grad = self._energy_and_grad if closed_form_gradient(act, w.trunk) else None

    def _n_chain(self, actions: Tensor) -> int:
        lead = self.states_shape[:-1]
        if tuple(actions.shape[: len(lead)]) != lead or actions.shape[-1] != self.act_dim:
            raise ValueError(
                f"actions of shape {tuple(actions.shape)} do not match states of shape "
                f"{self.states_shape}: expected {lead} + chains + ({self.act_dim},)"
            )
        return actions.shape[len(lead) : -1].numel()

    def __call__(self, actions: Tensor) -> Tensor:
        e = stacked_energy(self.w, self.act, self.feats, actions, self._n_chain(actions))
        return e.max(0).values.reshape(actions.shape[:-1])

    def _energy_and_grad(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            e, g = stacked_max_energy_and_grad(self.w, self.feats, actions, self._n_chain(actions))
        return e.reshape(actions.shape[:-1]), g.reshape(actions.shape)
