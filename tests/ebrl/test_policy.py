"""BoltzmannPolicy: sampling, the noise-free mode, log Z against an exact answer, bad input."""

import math

import pytest
import torch
from scipy import stats

from ebrl import BoltzmannPolicy, Energy, MLPEnergy, StateActionEnergy
from ebrl.samplers import MALA, DerivativeFree, Langevin


class QuadraticEnergy(Energy):
    """E(s, a) = |a - mu(s)|^2 / (2 sigma^2) with mu(s) = 0.6 tanh(s[:, :d]): Z(s) is known."""

    def __init__(self, obs_dim: int, act_dim: int, sigma: float) -> None:
        super().__init__()
        self.x_dim, self.context_dim, self.sigma = act_dim, obs_dim, sigma
        self.scale = torch.nn.Parameter(torch.ones(()))

    def mu(self, states):
        return 0.6 * torch.tanh(states[..., : self.x_dim])

    def energy(self, x, context=None):
        mu = self.mu(context).reshape(*context.shape[:-1], *([1] * (x.dim() - context.dim())), self.x_dim)
        return self.scale * ((x - mu) ** 2).sum(-1) / (2 * self.sigma**2)

    def exact_log_z(self, states, alpha):
        s = self.sigma * math.sqrt(alpha)
        mu = self.mu(states).double().numpy()
        mass = stats.norm.cdf((1 - mu) / s) - stats.norm.cdf((-1 - mu) / s)
        return torch.from_numpy(
            (0.5 * math.log(2 * math.pi * s**2) + torch.from_numpy(mass).log().numpy()).sum(-1)
        )


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_log_partition_within_three_standard_errors(alpha):
    torch.manual_seed(0)
    energy = QuadraticEnergy(obs_dim=3, act_dim=2, sigma=0.4)
    policy = BoltzmannPolicy(energy, temperature=alpha)
    states = torch.randn(8, 3)
    log_z, se = policy.log_partition(states, n=20_000, generator=torch.Generator().manual_seed(0))
    exact = energy.exact_log_z(states, alpha).float()
    assert log_z.shape == se.shape == (8,)
    assert ((log_z - exact).abs() <= 3 * se).all(), (log_z - exact) / se
    assert (se < 0.05).all()
    torch.testing.assert_close(
        policy.soft_value(states, n=20_000, generator=torch.Generator().manual_seed(0)), alpha * log_z
    )


def test_log_partition_standard_error_is_calibrated():
    """Across 200 independent estimates the spread of log Z matches the reported standard error."""
    energy = QuadraticEnergy(obs_dim=1, act_dim=1, sigma=0.3)
    policy = BoltzmannPolicy(energy, temperature=1.0)
    states = torch.zeros(200, 1)
    log_z, se = policy.log_partition(states, n=500, generator=torch.Generator().manual_seed(1))
    ratio = float(log_z.detach().std() / se.detach().mean())
    assert 0.8 < ratio < 1.25


def test_sample_and_mode_shapes_and_box():
    torch.manual_seed(0)
    energy = StateActionEnergy(4, 3, hidden_sizes=(16,))
    policy = BoltzmannPolicy(energy, temperature=0.5)
    states = torch.randn(5, 4)
    assert policy.sample(states, 7).shape == (5, 7, 3)
    assert policy.sample(states[0], 2).shape == (2, 3)
    assert policy.mode(states).shape == (5, 3)
    assert policy.mode(states[0]).shape == (3,)
    a = policy.sample(states, 64)
    assert a.min() >= -1 and a.max() <= 1
    assert set(policy.last_result.diagnostics()) >= {"sampler/grad_norm", "sampler/energy_drop"}


@pytest.mark.parametrize(
    "sampler", [None, MALA(n_steps=20), DerivativeFree(n_steps=6)], ids=["langevin", "mala", "dfo"]
)
def test_mode_is_deterministic_finds_the_minimum_and_leaves_no_grad(sampler):
    energy = QuadraticEnergy(obs_dim=2, act_dim=2, sigma=0.5)
    policy = BoltzmannPolicy(energy, sampler, temperature=1.0, n_chains=64)
    states = torch.randn(6, 2)
    torch.manual_seed(1)
    with torch.no_grad():  # what SB3's predict does
        a1 = policy.mode(states)
    torch.manual_seed(2)
    a2 = policy.mode(states)
    assert torch.equal(a1, a2)
    torch.testing.assert_close(a1, energy.mu(states), atol=0.05, rtol=0)
    assert energy.scale.grad is None


def test_sampled_actions_follow_the_boltzmann_distribution():
    """With MALA the policy's samples of a 1-D quadratic energy are the truncated Gaussian."""
    energy = QuadraticEnergy(obs_dim=1, act_dim=1, sigma=0.5)
    policy = BoltzmannPolicy(energy, MALA(n_steps=300, step_size=0.05, adapt_steps=50), temperature=0.5)
    state = torch.tensor([[1.0]])
    a = policy.sample(state, 3000, generator=torch.Generator().manual_seed(0)).flatten().numpy()
    mu, s = float(energy.mu(state)), 0.5 * math.sqrt(0.5)
    truth = stats.truncnorm((-1 - mu) / s, (1 - mu) / s, loc=mu, scale=s)
    assert stats.kstest(a, truth.cdf).pvalue > 0.01


def test_warm_start_keeps_chains_between_calls():
    energy = QuadraticEnergy(obs_dim=2, act_dim=2, sigma=0.5)
    policy = BoltzmannPolicy(energy, Langevin(n_steps=1, step_size=1e-6), warm_start=True)
    states = torch.randn(3, 2)
    a1 = policy.sample(states, 4)
    a2 = policy.sample(states, 4)
    assert (a2 - a1).abs().max() < 0.01
    policy.reset_chains(torch.tensor([True, False, False]))
    a3 = policy.sample(states, 4)
    assert (a3[0] - a2[0]).abs().max() > 0.05 and (a3[1:] - a2[1:]).abs().max() < 0.01
    cold = BoltzmannPolicy(energy, Langevin(n_steps=1, step_size=1e-6))
    assert (cold.sample(states, 4) - cold.sample(states, 4)).abs().max() > 0.05


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"n_chains": 0}, ValueError, "n_chains"),
        ({"sampler": "langevin"}, TypeError, "sampler"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BoltzmannPolicy(StateActionEnergy(3, 2, hidden_sizes=(8,)), **kwargs)


def test_unconditional_energy_is_refused():
    with pytest.raises(TypeError, match="energy"):
        BoltzmannPolicy(MLPEnergy(2, hidden_sizes=(8,)))


def test_bad_call_arguments():
    policy = BoltzmannPolicy(StateActionEnergy(3, 2, hidden_sizes=(8,)))
    with pytest.raises(ValueError, match="states"):
        policy.sample(torch.randn(4, 5))
    with pytest.raises(ValueError, match="states"):
        policy.mode(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="n must"):
        policy.sample(torch.randn(4, 3), n=0)
    with pytest.raises(ValueError, match="n must"):
        policy.log_partition(torch.randn(4, 3), n=1)
    with pytest.raises(TypeError, match="states"):
        policy.mode(torch.zeros(4, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "sampler", [None, MALA(n_steps=10), DerivativeFree()], ids=["langevin", "mala", "dfo"]
)
def test_mode_of_a_state_does_not_depend_on_its_row(sampler):
    torch.manual_seed(0)
    policy = BoltzmannPolicy(StateActionEnergy(3, 2, hidden_sizes=(16,)), sampler, n_chains=8)
    states = torch.randn(5, 3)
    alone = torch.stack([policy.mode(s) for s in states])
    torch.testing.assert_close(policy.mode(states), alone)
    torch.testing.assert_close(policy.mode(states.flip(0)), alone.flip(0))


@pytest.mark.parametrize("proposal", [False, True], ids=["uniform", "wrong-proposal"])
def test_mean_action_matches_the_truncated_normal_mean(proposal):
    """E_pi[a|s] for E = |a - mu(s)|^2/(2 sigma^2) on [-1, 1]^2 is the mean of a normal truncated
    to the box, per coordinate (scipy's truncnorm). With an untrained tanh-Gaussian proposal (its
    spread is 0.02-0.4 and its mean is not mu(s)) the defensive mixture keeps the estimate right:
    within 0.01 at 100k draws, and the same function of each state whatever its row."""
    from ebrl.proposals import TanhGaussianProposal

    torch.manual_seed(0)
    energy = QuadraticEnergy(obs_dim=2, act_dim=2, sigma=0.3)
    q = TanhGaussianProposal(2, 2, (16,)) if proposal else None
    policy = BoltzmannPolicy(energy, temperature=0.5, proposal=q)
    states = torch.randn(6, 2)
    mean = policy.mean_action(states, n=100_000, generator=torch.Generator().manual_seed(0))
    s = 0.3 * math.sqrt(0.5)
    mu = energy.mu(states).double().numpy()
    exact = stats.truncnorm.mean((-1 - mu) / s, (1 - mu) / s, loc=mu, scale=s)
    assert mean.shape == (6, 2) and not mean.requires_grad
    assert float((mean.double() - torch.from_numpy(exact)).abs().max()) < 0.01
    one = policy.mean_action(states[3], n=64, generator=torch.Generator().manual_seed(1))
    rows = policy.mean_action(states, n=64, generator=torch.Generator().manual_seed(1))
    assert one.shape == (2,)
    torch.testing.assert_close(one, rows[3])
    with pytest.raises(ValueError, match="n must"):
        policy.mean_action(states, n=1)
