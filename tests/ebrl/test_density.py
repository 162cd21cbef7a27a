"""KernelDensityEnergy and the state-density head: known answers on small data, bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from ebrl.heads import AnomalyScorer, KernelDensityEnergy, ledoit_wolf, replay_arrays

torch.set_num_threads(1)


def gauss(n: int, scale: tuple[float, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(scale), generator=g, dtype=torch.float64)
    return z * torch.tensor(scale, dtype=torch.float64)


def test_ledoit_wolf_matches_scikit_learn() -> None:
    x = gauss(60, (1.0, 2.0, 0.5, 3.0, 1.0), seed=0)
    x[:, 1] += 0.8 * x[:, 0]
    ref = LedoitWolf().fit(x.numpy()).covariance_
    assert torch.allclose(ledoit_wolf(x), torch.tensor(ref), atol=1e-10)


@pytest.mark.parametrize("metric", ["whitened", "diagonal", "identity"])
def test_energy_is_the_negative_log_of_the_mixture_of_gaussians(metric: str) -> None:
    """Known answer: E(x) = -log (1/n) sum_i N(x; x_i, h^2 Sigma), written with torch.distributions."""
    x = gauss(40, (1.0, 3.0), seed=1)
    x[:, 1] += x[:, 0]
    e = KernelDensityEnergy(x, bandwidth=0.4, metric=metric)
    cov = {
        "whitened": ledoit_wolf(x),
        "diagonal": torch.diag(x.var(0, unbiased=False)),
        "identity": torch.eye(2, dtype=x.dtype),
    }[metric]
    kernels = torch.distributions.MultivariateNormal(x, covariance_matrix=0.16 * cov.expand(40, 2, 2))
    q = gauss(7, (2.0, 2.0), seed=2)
    expected = -(torch.logsumexp(kernels.log_prob(q[:, None]), dim=1) - math.log(40))
    assert torch.allclose(e.energy(q), expected, atol=1e-8)


def test_density_integrates_to_one_and_loo_bandwidth_is_sensible() -> None:
    """exp(-E) integrates to 1 on a grid; for 400 draws of N(0, 1) the leave-one-out bandwidth
    lies near the Gaussian-reference rule 1.06 n^-1/5 = 0.32 (tolerance: 0.15 to 0.6)."""
    x = gauss(400, (1.0,), seed=3)
    e = KernelDensityEnergy(x, generator=torch.Generator().manual_seed(0))
    assert 0.15 < e.bandwidth < 0.6
    grid = torch.linspace(-8, 8, 4001, dtype=torch.float64)[:, None]
    integral = float(torch.exp(-e.energy(grid)).sum() * (grid[1, 0] - grid[0, 0]))
    assert integral == pytest.approx(1.0, abs=1e-4)
    assert np.isfinite(e.loo_log_likelihood)


def test_multi_scale_energy_is_the_mean_over_bandwidths() -> None:
    x = gauss(50, (1.0, 1.0), seed=10)
    q = gauss(5, (1.5, 1.5), seed=11)
    two = KernelDensityEnergy(x, bandwidth=0.3, metric="identity", scales=(1.0, 2.0)).energy(q)
    one = KernelDensityEnergy(x, bandwidth=0.3, metric="identity").energy(q)
    wide = KernelDensityEnergy(x, bandwidth=0.6, metric="identity").energy(q)
    assert torch.allclose(two, (one + wide) / 2, atol=1e-10)


def test_conditional_energy_is_joint_minus_marginal() -> None:
    c = gauss(200, (1.0,), seed=4)
    a = c + 0.1 * gauss(200, (1.0,), seed=5)
    cond = KernelDensityEnergy(a, c, bandwidth=0.3, metric="diagonal")
    joint = KernelDensityEnergy(torch.cat([a, c], 1), bandwidth=0.3, metric="diagonal")
    marginal = KernelDensityEnergy(c, bandwidth=0.3, metric="diagonal")
    qa, qc = gauss(9, (1.0,), seed=6), gauss(9, (1.0,), seed=7)
    expected = joint.energy(torch.cat([qa, qc], 1)) - marginal.energy(qc)
    assert torch.allclose(cond.energy(qa, qc), expected, atol=1e-8)
    # an action far from c given c is rare, the usual one (a = c) is not
    cond = KernelDensityEnergy(a, c, generator=torch.Generator().manual_seed(0))
    at_c = cond.energy(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    off = cond.energy(torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    assert float(off - at_c) > 10


def test_gradient_of_one_kernel_is_the_gaussian_score() -> None:
    """With one kernel dominating, dE/dx = (x - x_i) / (h^2 var): the score of N(x_i, h^2 var)."""
    x = torch.tensor([[0.0], [100.0], [200.0]], dtype=torch.float64)
    e = KernelDensityEnergy(x, bandwidth=0.05, metric="diagonal")
    var = float(x.var(unbiased=False))
    q = torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(e.energy(q).sum(), q)
    assert float(g) == pytest.approx(0.3 / (0.05**2 * var), rel=1e-6)


def test_local_anomalies_inside_a_ring_are_flagged() -> None:
    """Inliers on a ring of radius 2, anomalies at its centre: a local density flags them (AUROC
    > 0.95) where a Gaussian fit (Mahalanobis distance: the centre is its mode) cannot (< 0.5)."""
    g = torch.Generator().manual_seed(8)
    t = torch.rand(600, generator=g, dtype=torch.float64) * 2 * math.pi
    noise = 0.1 * torch.randn(600, 2, generator=g, dtype=torch.float64)
    ring = 2 * torch.stack([t.cos(), t.sin()], 1) + noise
    train, normal = ring[:500], ring[500:]
    centre = 0.3 * torch.randn(100, 2, generator=g, dtype=torch.float64)
    scorer = AnomalyScorer(KernelDensityEnergy(train, generator=g))
    test = torch.cat([normal, centre])
    labels = np.r_[np.zeros(100), np.ones(100)]
    assert roc_auc_score(labels, scorer.score(test).numpy()) > 0.95
    cov_inv = torch.linalg.inv(ledoit_wolf(train))
    maha = ((test - train.mean(0)) @ cov_inv * (test - train.mean(0))).sum(1)
    assert roc_auc_score(labels, maha.numpy()) < 0.5


def fake_agent(n: int, n_envs: int = 2) -> SimpleNamespace:
    """What for_agent reads of an SB3 off-policy model: replay_buffer.observations/actions/size()."""
    rng = np.random.default_rng(0)
    obs = np.zeros((10 * n, n_envs, 2), dtype=np.float32)
    acts = np.zeros((10 * n, n_envs, 1), dtype=np.float32)
    obs[:n] = rng.normal(size=(n, n_envs, 2))
    acts[:n] = np.tanh(obs[:n, :, :1]) + 0.05 * rng.normal(size=(n, n_envs, 1))
    buffer = SimpleNamespace(observations=obs, actions=acts, size=lambda: n)
    return SimpleNamespace(replay_buffer=buffer)


def test_for_agent_flags_unseen_states_and_unusual_actions() -> None:
    agent = fake_agent(300)
    states, acts = replay_arrays(agent)
    assert states.shape == (600, 2) and acts.shape == (600, 1)  # both envs, only the filled rows
    gen = torch.Generator().manual_seed(0)
    scorer = AnomalyScorer.for_agent(agent, generator=gen)
    seen = torch.tensor(np.random.default_rng(1).normal(size=(200, 2)), dtype=torch.float32)
    unseen = seen + torch.tensor([6.0, 0.0])
    labels = np.r_[np.zeros(200), np.ones(200)]
    assert roc_auc_score(labels, scorer.score(torch.cat([seen, unseen])).numpy()) > 0.99
    actor = AnomalyScorer.for_agent(agent, actions=True, generator=gen)
    usual = torch.tanh(seen[:, :1])
    odd = usual + torch.where(torch.rand(200, 1, generator=gen) < 0.5, -0.5, 0.5)
    s = actor.score(torch.cat([usual, odd]), context=torch.cat([seen, seen])).numpy()
    assert roc_auc_score(labels, s) > 0.95


def test_for_agent_reads_a_real_sb3_replay_buffer() -> None:
    buffers = pytest.importorskip("stable_baselines3.common.buffers")
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
    rb = buffers.ReplayBuffer(50, box, spaces.Box(-1.0, 1.0, (1,), dtype=np.float32), device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(20):
        o = rng.uniform(-1, 1, (1, 3)).astype(np.float32)
        rb.add(o, o, o[:, :1], np.zeros(1), np.zeros(1), [{}])
    states, acts = replay_arrays(SimpleNamespace(replay_buffer=rb))
    assert states.shape == (20, 3) and torch.equal(acts, states[:, :1])


def test_bad_input_is_refused_naming_the_argument() -> None:
    x = gauss(20, (1.0, 1.0), seed=9)
    with pytest.raises(TypeError, match="data"):
        KernelDensityEnergy(x.numpy())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data"):
        KernelDensityEnergy(x[:2])
    with pytest.raises(ValueError, match="metric"):
        KernelDensityEnergy(x, metric="euclid")
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensityEnergy(x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="scales"):
        KernelDensityEnergy(x, scales=(1.0, 0.0))
    with pytest.raises(TypeError, match="grid"):
        KernelDensityEnergy(x, grid=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        KernelDensityEnergy(x, x[:5])
    with pytest.raises(ValueError, match="data"):
        KernelDensityEnergy(x.masked_fill(x > 1, math.nan))
    e = KernelDensityEnergy(x, bandwidth=0.5)
    with pytest.raises(ValueError, match="context"):
        e.energy(x, x)
    with pytest.raises(ValueError, match="x"):
        e.energy(x[:, :1])
    with pytest.raises(ValueError, match="context is required"):
        KernelDensityEnergy(x, x, bandwidth=0.5).energy(x)
    with pytest.raises(ValueError, match="y must have shape"):
        ledoit_wolf(x[:1])
    with pytest.raises(TypeError, match="model"):
        AnomalyScorer.for_agent(object())
    with pytest.raises(TypeError, match="actions"):
        AnomalyScorer.for_agent(fake_agent(20), actions=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replay_buffer holds 2"):
        AnomalyScorer.for_agent(fake_agent(2))
