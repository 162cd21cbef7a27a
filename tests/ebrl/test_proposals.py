"""Learned proposals: exact densities on the box, the defensive mixture, and a Boltzmann policy that
stays exp(-E/alpha) when its proposal is deliberately wrong (known 4-mode answer)."""

import math

import pytest
import torch

from ebrl import BoltzmannPolicy, Energy
from ebrl.proposals import TanhGaussianProposal, defensive_sample, forward_kl_loss, mixture_log_prob
from ebrl.samplers import MALA, Langevin

WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1])
CENTRES = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
SIGMA = 0.1


class FourModes(Energy):
    """E(a) = -log sum_k w_k N(a; mu_k, sigma^2 I) on [-1, 1]^2 (the state is ignored).

    The modes sit 5 sigma inside the box, so with alpha = 1 the Boltzmann policy puts mass w_k on
    mode k and Z = 1 (log Z = 0) up to a truncation below 1e-6.
    """

    def __init__(self) -> None:
        super().__init__()
        self.x_dim, self.context_dim = 2, 1
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def energy(self, x, context=None):
        d2 = ((x[..., None, :] - CENTRES) ** 2).sum(-1)
        log_n = -d2 / (2 * SIGMA**2) - math.log(2 * math.pi * SIGMA**2)
        return -torch.logsumexp(WEIGHTS.log() + log_n, dim=-1) + 0.0 * self.unused


def collapsed_proposal() -> TanhGaussianProposal:
    """A deliberately wrong q: all its mass on the lightest mode (weight 0.1), half as wide as it:
    the mode-seeking failure of a reverse-KL fit."""
    q = TanhGaussianProposal(obs_dim=1, act_dim=2, hidden_sizes=(8,))
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.head.bias[:2] = torch.atanh(CENTRES[3])
        lo, hi = q.log_std_bounds
        q.head.bias[2:] = math.atanh(2 * (math.log(0.05) - lo) / (hi - lo) - 1)
    return q


def mode_weights(actions: torch.Tensor) -> torch.Tensor:
    nearest = ((actions[:, None, :] - CENTRES) ** 2).sum(-1).argmin(-1)
    return torch.bincount(nearest, minlength=4).float() / actions.shape[0]


def test_log_prob_is_a_density_on_the_box_and_matches_rsample():
    torch.manual_seed(0)
    q = TanhGaussianProposal(obs_dim=3, act_dim=1, hidden_sizes=(16,))
    states = torch.randn(4, 3)
    grid = torch.linspace(-1 + 1e-5, 1 - 1e-5, 200_001)
    density = q.log_prob(states, grid[None, :, None].expand(4, -1, -1)).exp()
    mass = torch.trapezoid(density, grid, dim=-1)
    torch.testing.assert_close(mass, torch.ones(4), atol=2e-3, rtol=0)
    actions, log_q = q.rsample(states, 5, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (4, 5, 1) and log_q.shape == (4, 5)
    assert (actions.abs() < 1).all()
    torch.testing.assert_close(log_q, q.log_prob(states, actions), atol=1e-4, rtol=1e-4)


def test_defensive_draws_have_the_balance_mixture_density():
    torch.manual_seed(0)
    q = TanhGaussianProposal(obs_dim=2, act_dim=3, hidden_sizes=(16,))
    states = torch.randn(5, 2)
    draw = defensive_sample(q, states, 10, 0.1, generator=torch.Generator().manual_seed(1))
    assert draw.actions.shape == (5, 10, 3) and draw.log_q.shape == (5, 10) and draw.scale.shape == (5, 3)
    # ceil(0.1 * 10) = 1 uniform draw per state: density (1/10) 2^-3 + (9/10) q.
    expected = torch.log(0.1 / 8 + 0.9 * q.log_prob(states, draw.actions).exp())
    torch.testing.assert_close(draw.log_q, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixture_log_prob(torch.zeros(3), 2, 1.0), torch.full((3,), -math.log(4)))


def test_wrong_proposal_still_acts_from_the_boltzmann_policy():
    """A proposal collapsed onto the lightest mode: SIR from the defensive mixture plus exact MALA
    steps still draw the 0.4/0.3/0.2/0.1 mode weights. Tolerance 0.025 per mode with 4000 draws
    (binomial s.e. <= 0.008: three of them); the error shrinks as the SIR candidates grow."""
    energy, q = FourModes(), collapsed_proposal()
    states = torch.zeros(4000, 1)
    errors = {}
    for n_candidates in (16, 4096):
        policy = BoltzmannPolicy(
            energy,
            MALA(n_steps=5, step_size=0.01),
            temperature=1.0,
            proposal=q,
            n_candidates=n_candidates,
            defensive=0.1,
        )
        actions = policy.sample(states, 1, generator=torch.Generator().manual_seed(0))[:, 0]
        assert (actions.abs() <= 1).all()
        errors[n_candidates] = (mode_weights(actions) - WEIGHTS).abs().max().item()
        assert policy.last_result.acceptance is not None
    assert errors[4096] < 0.025, errors
    assert errors[16] > 0.2, errors  # the proposal alone would give weight ~1 to the last mode


def test_log_partition_with_a_wrong_proposal_converges_to_the_exact_value():
    """Defensive importance sampling: consistent for any q. log Z = 0 exactly (see FourModes)."""
    energy, q = FourModes(), collapsed_proposal()
    policy = BoltzmannPolicy(energy, temperature=1.0, proposal=q, defensive=0.1)
    states = torch.zeros(20, 1)
    error = {}
    for n in (16, 256, 65536):
        log_z, se = policy.log_partition(states, n=n, generator=torch.Generator().manual_seed(1))
        error[n] = log_z.abs().mean().item()
    assert error[65536] < 0.05 and error[65536] < error[256] < error[16], error
    log_z, se = policy.log_partition(states, n=65536, generator=torch.Generator().manual_seed(2))
    assert (log_z.abs() <= 4 * se).all()


def test_mode_with_a_proposal_is_deterministic_and_row_independent():
    energy = FourModes()
    q = collapsed_proposal()
    policy = BoltzmannPolicy(
        energy, MALA(n_steps=20, step_size=0.01), temperature=1.0, n_chains=8, proposal=q
    )
    states = torch.zeros(3, 1)
    a1, a2 = policy.mode(states), policy.mode(states)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(policy.mode(states[0]), a1[0])
    # The best of the chains is at a mode centre (the descent ends within sigma of one).
    assert ((a1[:, None, :] - CENTRES) ** 2).sum(-1).min(-1).values.sqrt().max() < SIGMA


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"proposal": "tanh"}, TypeError, "proposal"),
        ({"proposal": TanhGaussianProposal(2, 2)}, ValueError, "proposal has"),
        ({"defensive": 0.0}, ValueError, "defensive"),
        ({"defensive": 1.5}, ValueError, "defensive"),
        ({"n_candidates": 0}, ValueError, "n_candidates"),
        ({"sampler": MALA(n_steps=2, bounds=(-2, 2))}, ValueError, "box"),
    ],
)
def test_bad_proposal_arguments(kwargs, exc, match):
    kwargs = {"proposal": collapsed_proposal(), **kwargs}
    with pytest.raises(exc, match=match):
        BoltzmannPolicy(FourModes(), **kwargs)


def test_step_size_is_validated():
    energy = lambda x: (x**2).sum(-1)  # noqa: E731
    with pytest.raises(ValueError, match="step_size"):
        MALA(n_steps=2).sample(energy, shape=(3, 2, 1), step_size=torch.ones(2))
    with pytest.raises(ValueError, match="step_size: Langevin"):
        Langevin(n_steps=2).sample(energy, shape=(3, 2, 1), step_size=torch.ones(3))
    result = MALA(n_steps=2).sample(energy, shape=(3, 2, 1), step_size=torch.full((3,), 0.01))
    assert result.samples.shape == (3, 2, 1)


def fit_proposal(loss: str, steps: int = 300) -> TanhGaussianProposal:
    """The collapsed proposal, fitted to the 4-mode Boltzmann policy (alpha = 1) by Adam on the
    forward KL (64 defensive-mixture draws per state) or on the reverse KL (SAC's actor loss)."""
    torch.manual_seed(0)
    q, energy = collapsed_proposal(), FourModes()
    opt = torch.optim.Adam(q.parameters(), lr=5e-2)
    states = torch.zeros(16, 1)
    for _ in range(steps):
        if loss == "forward":
            value, _ = forward_kl_loss(q, lambda s, a: energy.energy(a, s), states, 1.0, 64, 0.1)
        else:
            actions, log_q = q.rsample(states, 1)
            value = (log_q + energy.energy(actions, states)).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    return q


def test_forward_kl_fit_covers_every_mode_and_matches_the_moments():
    """KL(pi || q) for a diagonal Gaussian in u = atanh(a) is minimised by pi's own mean and
    variance of u: from the collapsed start (all mass on the 0.1 mode) the forward fit reaches
    them within 0.05 and puts >= 0.05 of its draws on every mode; the reverse fit from the same
    start stays on the mode it started at (the mode-seeking failure the forward loss exists for)."""
    g = torch.Generator().manual_seed(1)
    k = torch.multinomial(WEIGHTS, 100_000, replacement=True, generator=g)
    a = CENTRES[k] + SIGMA * torch.randn(100_000, 2, generator=g)  # exact draws of pi (5 sigma inside)
    u = torch.atanh(a.clamp(-0.999, 0.999))
    fwd, rev = fit_proposal("forward"), fit_proposal("reverse")
    state = torch.zeros(1, 1)
    with torch.no_grad():
        mean, log_std = fwd._gaussian(state)
        draws = fwd.rsample(state.expand(20_000, 1), 1, generator=g)[0][:, 0]
        rev_draws = rev.rsample(state.expand(20_000, 1), 1, generator=g)[0][:, 0]
    torch.testing.assert_close(mean[0], u.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(log_std[0].exp(), u.std(0), atol=0.05, rtol=0)
    assert (mode_weights(draws) >= 0.05).all()
    assert float(mode_weights(rev_draws)[3]) > 0.9
