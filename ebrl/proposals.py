"""Learned proposals q_phi(a|s) on the action box: they accelerate the Boltzmann policy, never replace it.

A proposal is a conditional density with an exact log-density on the open box (-1, 1)^d. The
Boltzmann policy pi(a|s) ∝ exp(-E(s, a)/alpha) uses it in three places (docs/architecture.md):

- as the importance proposal of log Z(s) = log ∫ exp(-E/alpha) da (the soft value), always in a
  *defensive mixture* q_mix = eps U + (1 - eps) q_phi with the uniform density U = 2^-d
  (Hesterberg 1995), so that every importance weight exp(-E/alpha)/q_mix is bounded by
  2^d exp(-E/alpha)/eps and the estimate stays consistent however poor q_phi is;
- as the candidate generator of sampling-importance-resampling (SIR), which starts the MCMC
  chains near the modes of pi; and then
- a few exact MALA (or Langevin) steps on E itself move the chains, so the acted action is still
  drawn from the Boltzmann policy of the energy, not from q_phi.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ebrl.energies import ACTIVATIONS
from ebrl.validation import check_choice, check_int, check_tensor

# Actions are kept this far inside the box so that atanh stays finite in float32.
_EDGE = 1e-6


def _tanh_log_det(u: Tensor) -> Tensor:
    """log |d tanh(u)/du| summed over the last dim, in the overflow-free form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def _log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """log-density on the box of tanh(N(mean, exp(log_std)^2)) at ``actions``."""
    u = torch.atanh(actions.clamp(-1.0 + _EDGE, 1.0 - _EDGE))
    z = (u - mean) / log_std.exp()
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1) - _tanh_log_det(u)


def _scale(mean: Tensor, log_std: Tensor) -> Tensor:
    return log_std.exp() * (1.0 - torch.tanh(mean) ** 2)


class TanhGaussianProposal(nn.Module):
    """q_phi(a|s) = tanh_# N(mu_phi(s), diag sigma_phi(s)^2): a Gaussian squashed into the box.

    The squashed Gaussian of SAC (Haarnoja et al. 2018, appendix C), with its exact log-density
    on the box (change of variables through tanh). Trained by the reverse KL toward the Boltzmann
    policy, E_q[log q - Q/alpha] (the amortised policy of SAC, here only a proposal).

    Args:
        obs_dim: dimension of the state s.
        act_dim: dimension d of the action a.
        hidden_sizes: widths of the hidden layers of the shared trunk.
        activation: one of ``ebrl.energies.ACTIVATIONS`` (ReLU, as SAC's actor).
        log_std_bounds: the range log sigma is squashed into (SAC's (-20, 2) is wider than a
            proposal needs; (-5, 2) keeps the density from collapsing onto a point).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
    ) -> None:
        super().__init__()
        self.obs_dim = check_int("obs_dim", obs_dim, minimum=1)
        self.act_dim = check_int("act_dim", act_dim, minimum=1)
        act = ACTIVATIONS[check_choice("activation", activation, list(ACTIVATIONS))]
        lo, hi = (float(b) for b in log_std_bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"log_std_bounds must be finite with low < high, got {log_std_bounds!r}")
        self.log_std_bounds = (lo, hi)
        layers: list[nn.Module] = []
        n_in = self.obs_dim
        for h in hidden_sizes:
            layers += [nn.Linear(n_in, check_int("hidden_sizes[i]", h, minimum=1)), act()]
            n_in = h
        self.trunk = nn.Sequential(*layers)
        # One head gives mean and log std: one matmul instead of two.
        self.head = nn.Linear(n_in, 2 * self.act_dim)

    def _gaussian(self, states: Tensor) -> tuple[Tensor, Tensor]:
        check_tensor("states", states, last_dim=self.obs_dim)
        mean, log_std = self.head(self.trunk(states)).chunk(2, dim=-1)
        lo, hi = self.log_std_bounds
        # tanh squashing of log sigma keeps its gradient alive at the bounds (unlike a clamp).
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1.0)
        return mean, log_std

    def rsample(
        self, states: Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """n reparameterised draws per state and their log-density on the box.

        Returns ``(actions, log_q)`` of shapes ``(batch, n, act_dim)`` and ``(batch, n)``;
        gradients flow to the proposal's parameters through both (SAC's reparameterisation).
        """
        mean, log_std = self._gaussian(states)
        mean, log_std = mean[:, None, :], log_std[:, None, :]
        shape = (states.shape[0], n, self.act_dim)
        xi = torch.randn(shape, device=states.device, dtype=states.dtype, generator=generator)
        u = mean + log_std.exp() * xi
        log_n = (-0.5 * xi**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        actions = torch.tanh(u).clamp(-1.0 + _EDGE, 1.0 - _EDGE)
        return actions, log_n - _tanh_log_det(u)

    def log_prob(self, states: Tensor, actions: Tensor) -> Tensor:
        """log q_phi(a|s) for actions ``(batch, n, act_dim)`` in the box: ``(batch, n)``."""
        mean, log_std = self._gaussian(states)
        return _log_prob(mean[:, None, :], log_std[:, None, :], actions)

    def transform(self, states: Tensor, noise: Tensor) -> Tensor:
        """tanh(mu_phi(s) + sigma_phi(s) xi) for given standard-normal ``noise`` xi of shape
        ``(batch or 1, n, act_dim)``: ``(batch, n, act_dim)`` (fixed xi give fixed quantiles)."""
        mean, log_std = self._gaussian(states)
        u = mean[:, None, :] + log_std.exp()[:, None, :] * noise
        return torch.tanh(u).clamp(-1.0 + _EDGE, 1.0 - _EDGE)

    def mode(self, states: Tensor) -> Tensor:
        """tanh(mu_phi(s)), the squashed mean, ``(batch, act_dim)``."""
        mean, _ = self._gaussian(states)
        return torch.tanh(mean).clamp(-1.0 + _EDGE, 1.0 - _EDGE)

    def scale(self, states: Tensor) -> Tensor:
        """The spread of q_phi on the box per coordinate, sigma (1 - tanh(mu)^2) (the delta
        method through tanh), ``(batch, act_dim)``: a scale for MCMC steps on the same state."""
        return _scale(*self._gaussian(states))

    def forward(self, states: Tensor, n: int = 1) -> tuple[Tensor, Tensor]:
        return self.rsample(states, n)


class DefensiveDraw(NamedTuple):
    """Draws of :func:`defensive_sample`: ``actions`` ``(batch, n, d)``, their mixture
    log-density ``log_q`` ``(batch, n)``, and q_phi's per-state spread ``scale`` ``(batch, d)``
    (:meth:`TanhGaussianProposal.scale`, from the same network pass)."""

    actions: Tensor
    log_q: Tensor
    scale: Tensor


def defensive_sample(
    proposal: TanhGaussianProposal,
    states: Tensor,
    n: int,
    defensive: float,
    generator: torch.Generator | None = None,
    shared: bool = False,
) -> DefensiveDraw:
    """n draws per state from the defensive mixture of U([-1, 1]^d) and q_phi(.|s), without gradients.

    The first n_u = ceil(eps n) draws are uniform and the other n - n_u come from q_phi: fixed
    counts, so every state gets at least one uniform draw, and the density of the pooled draws is
    the *balance heuristic* q_mix = (n_u/n) U + (1 - n_u/n) q_phi (Veach & Guibas 1995), with
    which the importance-sampling estimate of Z stays unbiased (and with lower variance than
    choosing the component at random per draw). With ``shared`` every state gets the same random
    numbers (pushed through its own q_phi), so with a fixed generator the draws of a state do not
    depend on its row or on the other states.
    """
    n_u = math.ceil(defensive * n)
    batch = states.shape[0]
    rows = 1 if shared else batch
    kw = {"device": states.device, "dtype": states.dtype, "generator": generator}
    xi = torch.randn((rows, n - n_u, proposal.act_dim), **kw)  # broadcasts over states in defensive_draw
    a_u = torch.rand((rows, n_u, proposal.act_dim), **kw).expand(batch, -1, -1)
    return defensive_draw(proposal, states, xi, a_u)


def defensive_draw(proposal: TanhGaussianProposal, states: Tensor, xi: Tensor, a_u: Tensor) -> DefensiveDraw:
    """:func:`defensive_sample` from given random numbers, without gradients: standard normals
    ``xi`` ``(batch or 1, n - n_u, d)`` for the q_phi draws and uniforms on [0, 1) ``a_u``
    ``(batch, n_u, d)`` for the box draws (a pure function, which ``torch.compile`` can capture)."""
    n_u, n = a_u.shape[1], a_u.shape[1] + xi.shape[1]
    with torch.no_grad():
        mean, log_std = proposal._gaussian(states)
        mean, log_std = mean[:, None, :], log_std[:, None, :]
        u_q = mean + log_std.exp() * xi
        a = torch.cat([2.0 * a_u - 1.0, torch.tanh(u_q).clamp(-1.0 + _EDGE, 1.0 - _EDGE)], dim=1)
        # log q_phi at every draw from the same (mean, log std): one trunk pass for both.
        log_q = mixture_log_prob(_log_prob(mean, log_std, a), proposal.act_dim, n_u / n)
        return DefensiveDraw(a, log_q, _scale(mean[:, 0], log_std[:, 0]))


def forward_kl_loss(
    proposal: TanhGaussianProposal,
    energy: Callable[[Tensor, Tensor], Tensor],
    states: Tensor,
    alpha: Tensor | float,
    n: int,
    defensive: float,
) -> tuple[Tensor, Tensor]:
    """alpha KL(pi || q_phi) up to a constant, for pi ∝ exp(-E(s, .)/alpha): the mass-covering fit.

    The n draws a_k of the defensive mixture (what SIR draws when acting) get self-normalised
    importance weights w_k ∝ exp(-E(s, a_k)/alpha) / q_mix(a_k), held fixed, and the loss is
    -alpha sum_k w_k log q_phi(a_k|s), averaged over states: the wake-phase proposal update of
    reweighted wake-sleep (Bornschein & Bengio 2015). Unlike the reverse KL, it is large wherever
    pi has mass that q_phi misses, so q_phi widens to cover every mode. Returns ``(loss,
    log_q)``: the loss (gradients reach phi only) and the detached log-density ``(batch, 1)`` of
    one q_phi draw per state, for an entropy estimate.
    """
    with torch.no_grad():
        particles, log_mix, _ = defensive_sample(proposal, states, n, defensive)
        weights = torch.softmax(-energy(states, particles) / alpha - log_mix, dim=-1)
    log_q = proposal.log_prob(states, particles)
    # The uniform draws come first (defensive_draw), so the last one is a q_phi draw.
    return -alpha * (weights * log_q).sum(-1).mean(), log_q[:, -1:].detach()


def mala_first_step(scale: Tensor, log_step_scale: Tensor) -> Tensor:
    """MALA's first step per state from the proposal's spread ``scale`` ``(batch, d)``:
    eps = c mean(scale^2) d^(-1/3), the optimal MALA scaling for a target of that width (Roberts &
    Rosenthal 1998) times the adapted factor c = exp(``log_step_scale``), clamped to (0, 1]."""
    eps = (scale.detach() ** 2).mean(-1) * scale.shape[-1] ** (-1.0 / 3.0)
    return (eps * log_step_scale.to(eps).exp()).clamp(1e-12, 1.0)


def mixture_log_prob(log_q: Tensor, act_dim: int, defensive: float) -> Tensor:
    """log(eps 2^-d + (1 - eps) q) from log q, computed in log space."""
    if defensive <= 0.0:
        return log_q
    log_u = math.log(defensive) - act_dim * math.log(2.0)
    if defensive >= 1.0:
        return torch.full_like(log_q, log_u)
    return torch.logaddexp(log_q + math.log1p(-defensive), torch.full_like(log_q, log_u))
