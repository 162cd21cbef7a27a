"""ebrl.heads on 2-D toys with known answers, plus bad input and duck-typed (RBM-like) energies."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ebrl import BoltzmannPolicy, Energy, MLPEnergy, StateActionEnergy
from ebrl.heads import AnomalyScorer, Denoiser, Generator
from ebrl.samplers import MALA, Langevin
from ebrl.training import ContrastiveDivergence, DenoisingScoreMatching, fit

torch.set_num_threads(1)


class GaussianEnergy(Energy):
    """E(x | c) = |x - mu|^2 / (2 s^2) with mu = c (or 0): an energy whose answers are known."""

    def __init__(self, x_dim: int = 2, scale: float = 1.0, context_dim: int = 0) -> None:
        super().__init__()
        self.x_dim, self.context_dim, self.scale = x_dim, context_dim, scale
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and dtype

    def energy(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            return (x**2).sum(-1) / (2 * self.scale**2) + 0 * self.dummy
        extra = [1] * (x.dim() - context.dim())
        mu = context.reshape(*context.shape[:-1], *extra, context.shape[-1])
        return ((x - mu) ** 2).sum(-1) / (2 * self.scale**2) + 0 * self.dummy


def eight_gaussians(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    angle = torch.randint(8, (n,), generator=g) * (2 * math.pi / 8)
    centres = 2 * torch.stack([angle.cos(), angle.sin()], -1)
    return centres + 0.1 * torch.randn(n, 2, generator=g), centres


@pytest.fixture(scope="module")
def cd_energy() -> MLPEnergy:
    """An MLP energy trained by persistent CD on 8 Gaussians (about 5 s on one thread)."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, (32, 32))
    x, _ = eight_gaussians(2000, seed=0)
    obj = ContrastiveDivergence(Langevin(n_steps=10, step_size=0.02, bounds=(-3, 3)), l2_reg=0.1)
    fit(energy, x, obj, n_steps=800, lr=3e-3, generator=torch.Generator().manual_seed(1))
    return energy


def test_generator_covers_all_eight_modes(cd_energy: MLPEnergy) -> None:
    """Known answer: 8 modes of equal weight. Tolerances: every mode holds >= 5 % of 800 samples
    (1/8 = 12.5 % expected) and >= 50 % of samples lie within 0.5 of a centre (uniform samples on
    the box: 17 %; the data: 100 %; this short CD run, whose L2 regulariser bounds how sharp the
    modes get, reaches about 63 %)."""
    gen = Generator(cd_energy, Langevin(n_steps=200, step_size=0.005, bounds=(-3, 3)))
    s = gen.sample(800, generator=torch.Generator().manual_seed(2))
    assert s.shape == (800, 2)
    k = torch.round(torch.atan2(s[:, 1], s[:, 0]) / (2 * math.pi / 8)).long() % 8
    centres = 2 * torch.stack([(k * 2 * math.pi / 8).cos(), (k * 2 * math.pi / 8).sin()], -1)
    counts = torch.bincount(k, minlength=8)
    assert counts.min() >= 0.05 * 800, counts.tolist()
    assert float(((s - centres).norm(dim=-1) < 0.5).float().mean()) >= 0.5
    assert "sampler/energy_drop" in gen.last_result.diagnostics()


def test_generator_conditional_chains_thinning_and_seed() -> None:
    """MALA on E(x|c) = |x - c|^2 / (2 * 0.3^2): per-context sample mean c and std 0.3 (tolerance
    0.05 for both over 400 samples from 40 chains thinned every 2 calls)."""
    energy = GaussianEnergy(2, scale=0.3, context_dim=2)
    ctx = torch.tensor([[0.5, -0.5], [-1.0, 1.0]])
    gen = Generator(energy, MALA(n_steps=20, step_size=0.05, bounds=(-3, 3)), n_chains=40, burn_in=2, thin=2)
    s = gen.sample(400, context=ctx, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 400, 2)
    assert torch.allclose(s.mean(1), ctx, atol=0.05)
    assert torch.allclose(s.std(1), torch.full((2, 2), 0.3), atol=0.05)
    again = gen.sample(400, context=ctx, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)
    one = gen.sample(10, context=ctx[0], generator=torch.Generator().manual_seed(0))
    assert one.shape == (10, 2)


class FakeRBM:
    """The duck-typed surface of ebrl.boltzmann_machines: free_energy(v), n_visible, sample(n)."""

    n_visible = 3

    def __init__(self) -> None:
        self.bias = torch.tensor([2.0, -2.0, 0.0])

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        return -(v * self.bias).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        p = torch.sigmoid(self.bias).expand(n, 3)
        return torch.bernoulli(p, generator=generator)


def test_heads_accept_an_rbm_like_object_without_adapter() -> None:
    rbm = FakeRBM()
    s = Generator(rbm).sample(2000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2000, 3)
    assert torch.allclose(s.mean(0), torch.sigmoid(rbm.bias), atol=0.03)
    scorer = AnomalyScorer(rbm)
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.allclose(scorer.score(v), torch.tensor([-2.0, 2.0]))
    with pytest.raises(ValueError, match="x"):
        scorer.score(torch.zeros(2, 4))


def test_denoiser_tweedie_and_descent_on_a_known_gaussian() -> None:
    """x ~ N(0, I), sigma = 0.5. The noisy density is N(0, 1.25 I), so Tweedie with its exact
    energy gives the posterior mean x_noisy / 1.25 and MSE sigma^2/(1 + sigma^2) = 0.2 per dim
    (vs 0.25 noisy). MAP descent on the clean energy |x|^2/2 reaches the same point. Tolerance
    0.02 on MSE over 4000 points; 1e-4 between descent and the closed form."""
    sigma = 0.5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g)
    noisy = x + sigma * torch.randn(4000, 2, generator=g)
    before = noisy.clone()
    tweedie = Denoiser(GaussianEnergy(2, scale=math.sqrt(1 + sigma**2))).denoise(noisy, sigma)
    assert torch.equal(noisy, before)
    assert torch.allclose(tweedie, noisy / (1 + sigma**2), atol=1e-6)
    assert float(((tweedie - x) ** 2).mean()) == pytest.approx(0.2, abs=0.02)
    descent = Denoiser(GaussianEnergy(2), "descent", n_steps=200, step_scale=0.5).denoise(noisy, sigma)
    assert torch.allclose(descent, noisy / (1 + sigma**2), atol=1e-4)


def test_denoiser_after_noise_conditional_dsm_lowers_mse() -> None:
    """One noise-conditional MLP trained at sigma in {0.2, 0.5} on 8 Gaussians, then Tweedie at
    each level: MSE at most 75 % of the noisy MSE. Known answers: the linear-Gaussian (LMMSE)
    denoiser of this data (per-dim variance about 2) keeps 98 % (sigma 0.2) and 89 % (sigma 0.5)
    of the noisy MSE, the exact posterior mean 20 % and 4 %; this short run reaches about 60 %."""
    torch.manual_seed(0)
    x, _ = eight_gaussians(2000, seed=0)
    energy = MLPEnergy(2, (64, 64), context_dim=1)
    fit(energy, x, DenoisingScoreMatching([0.2, 0.5], noise_conditional=True), n_steps=800, lr=3e-3,
        generator=torch.Generator().manual_seed(1))
    den = Denoiser(energy, noise_conditional=True)
    test, _ = eight_gaussians(1000, seed=5)
    for sigma in (0.2, 0.5):
        noisy = test + sigma * torch.randn(test.shape, generator=torch.Generator().manual_seed(6))
        mse_noisy = float(((noisy - test) ** 2).mean())
        mse = float(((den.denoise(noisy, sigma) - test) ** 2).mean())
        assert mse <= 0.75 * mse_noisy, (sigma, mse, mse_noisy)


def test_anomaly_scorer_auroc_threshold_and_predict(cd_energy: MLPEnergy) -> None:
    """Normal: fresh 8-Gaussian samples; outliers: points at radius 0 and 3.5 (far from all modes).
    AUROC >= 0.99; with fpr = 0.1 the flagged share of normal data is 0.1 +- 0.04."""
    normal, _ = eight_gaussians(1000, seed=3)
    g = torch.Generator().manual_seed(4)
    angle = 2 * math.pi * torch.rand(200, generator=g)
    radius = torch.where(torch.rand(200, generator=g) < 0.5, 0.1, 3.5)
    outliers = radius[:, None] * torch.stack([angle.cos(), angle.sin()], -1)
    scorer = AnomalyScorer(cd_energy)
    scores = torch.cat([scorer.score(normal), scorer.score(outliers)])
    labels = torch.cat([torch.zeros(1000), torch.ones(200)])
    assert roc_auc_score(labels.numpy(), scores.numpy()) >= 0.99
    fit_normal, _ = eight_gaussians(2000, seed=7)
    scorer.fit_threshold(fit_normal, fpr=0.1)
    assert float(scorer.predict(normal).float().mean()) == pytest.approx(0.1, abs=0.04)
    assert float(scorer.predict(outliers).float().mean()) >= 0.95


def test_anomaly_scorer_ensemble_is_the_mean_energy() -> None:
    a, b = GaussianEnergy(2, scale=1.0), GaussianEnergy(2, scale=0.5)
    x = torch.randn(10, 2)
    assert torch.allclose(AnomalyScorer([a, b]).score(x), (a.energy(x) + b.energy(x)) / 2)


def test_anomaly_scorer_state_action_scores() -> None:
    """score = E(s, a); score_states = -alpha log Z(s); score_normalized = -log pi(a|s), so that
    exp(-score_normalized) integrates to 1 over the action box (checked by a uniform average on
    [-1, 1]^2 times the volume 4; tolerance 0.05 with 20 000 points)."""
    torch.manual_seed(0)
    energy = StateActionEnergy(3, 2, (32,))
    states = torch.randn(4, 3)
    actions = torch.rand(4, 2) * 2 - 1
    alpha = 0.5
    scorer = AnomalyScorer(energy, temperature=alpha, n_partition=20_000)
    with torch.no_grad():
        assert torch.allclose(scorer.score(actions, context=states), energy(states, actions))
    f = scorer.score_states(states, generator=torch.Generator().manual_seed(0))
    log_z, _ = BoltzmannPolicy(energy, temperature=alpha).log_partition(
        states, n=20_000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(f, -alpha * log_z)
    grid = torch.rand(4, 20_000, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    nll = scorer.score_normalized(grid, states, torch.Generator().manual_seed(2))
    assert nll.shape == (4, 20_000)
    mass = 4 * torch.exp(-nll).mean(1)
    assert torch.allclose(mass, torch.ones(4), atol=0.05)


class SpreadEnergy(Energy):
    """E(a | s) = (a - s_0)^2 / (2 w(s)^2), w(s) = 0.1 + 0.3 |s_1|: a 1-D Boltzmann policy (at
    alpha = 1) whose mode and spread both change with the state, truncated to [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.x_dim, self.context_dim = 1, 2
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def energy(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        assert context is not None
        c = context.reshape(*context.shape[:-1], *[1] * (x.dim() - context.dim()), 2)
        width = 0.1 + 0.3 * c[..., 1].abs()
        return (x[..., 0] - c[..., 0]) ** 2 / (2 * width**2) + 0 * self.dummy


def test_score_quantile_matches_the_exact_energy_cdf_and_is_uniform_for_policy_draws() -> None:
    """score_quantile(a, s) = P_pi[E(s, a') < E(s, a)]. Against the exact value from a 20 001-point
    grid of pi (tolerance 0.02 with 20 000 uniform particles); and for exact draws of pi at four
    states of different spread, the quantiles are uniform: pooled KS distance to U(0, 1) < 0.04
    (4000 draws; the 1 % critical value is 0.026)."""
    energy = SpreadEnergy()
    states = torch.tensor([[0.0, 0.0], [0.5, 1.0], [-0.9, 0.2], [0.2, 2.0]])
    scorer = AnomalyScorer(energy, temperature=1.0, n_partition=20_000)
    grid = torch.linspace(-1, 1, 20_001)[:, None]
    e_grid = energy.energy(grid[None].expand(4, -1, -1), states)  # (4, 20001)
    pi = torch.softmax(-e_grid, dim=-1)
    actions = torch.tensor([[0.0, 0.3, -0.5], [0.5, 0.6, 1.0], [-0.95, -0.6, 0.0], [0.2, -0.4, 0.9]])
    actions = actions[..., None]
    with torch.no_grad():
        e = energy.energy(actions, states)
    exact = ((e_grid[:, None, :] < e[..., None]) * pi[:, None, :]).sum(-1)
    got = scorer.score_quantile(actions, states, torch.Generator().manual_seed(0))
    assert got.shape == (4, 3)
    assert torch.allclose(got, exact, atol=0.02)
    assert float(got[0, 0]) < 0.01  # the mode

    g = torch.Generator().manual_seed(1)
    idx = torch.multinomial(pi, 1000, replacement=True, generator=g)  # exact draws on the grid
    draws = grid[idx]  # (4, 1000, 1)
    q = scorer.score_quantile(draws, states, torch.Generator().manual_seed(2)).flatten().sort().values
    ks = (q - torch.arange(1, len(q) + 1) / len(q)).abs().max()
    assert float(ks) < 0.04


def test_score_quantile_bad_actions_raise_clear_errors() -> None:
    scorer = AnomalyScorer(SpreadEnergy(), temperature=1.0, n_partition=64)
    states = torch.zeros(3, 2)
    for bad in (torch.zeros(3, 2), torch.zeros(4, 1), torch.zeros(3, 2, 2, 1)):
        with pytest.raises(ValueError, match="actions"):
            scorer.score_quantile(bad, states)
    with pytest.raises(ValueError, match="actions"):
        scorer.score_quantile(torch.full((3, 1), math.nan), states)
    with pytest.raises(ValueError, match="temperature"):
        AnomalyScorer(SpreadEnergy()).score_quantile(torch.zeros(3, 1), states)


def test_bad_inputs_raise_clear_errors_and_change_nothing() -> None:
    energy = GaussianEnergy(2)
    den = Denoiser(energy)
    noisy = torch.randn(5, 2)
    before = noisy.clone()
    for sigma in (0.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="sigma"):
            den.denoise(noisy, sigma)
    with pytest.raises(ValueError, match="x_noisy"):
        den.denoise(torch.randn(5, 3), 0.1)
    with pytest.raises(ValueError, match="x_noisy"):
        den.denoise(torch.tensor([[0.0, math.nan]]), 0.1)
    assert torch.equal(noisy, before)
    with pytest.raises(ValueError, match="method"):
        Denoiser(energy, "magic")

    scorer = AnomalyScorer(energy)
    with pytest.raises(ValueError, match="x_normal"):
        scorer.fit_threshold(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="x_normal"):
        scorer.fit_threshold(torch.tensor([[0.0, 1.0], [math.nan, 0.0]]))
    with pytest.raises(ValueError, match="fpr"):
        scorer.fit_threshold(torch.randn(10, 2), fpr=1.0)
    assert scorer.threshold is None
    with pytest.raises(RuntimeError, match="fit_threshold"):
        scorer.predict(noisy)
    with pytest.raises(ValueError, match="temperature"):
        AnomalyScorer(StateActionEnergy(3, 2, (8,))).score_states(torch.randn(2, 3))
    with pytest.raises(TypeError, match="StateActionEnergy"):
        AnomalyScorer(energy, temperature=1.0).score_states(torch.randn(2, 3))

    gen = Generator(energy, bounds=(-2, 2))
    with pytest.raises(ValueError, match="n"):
        gen.sample(0)
    with pytest.raises(ValueError, match="init"):
        gen.sample(4, init=torch.zeros(1, 3, 2))
    with pytest.raises(TypeError, match="energy"):
        Generator(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="energy"):
        AnomalyScorer([])


def test_heads_plug_into_the_real_rbm() -> None:
    """The RBM of ebrl.boltzmann_machines plugs in with no adapter (skipped where it is absent)."""
    bm = pytest.importorskip("ebrl.boltzmann_machines")
    rbm = bm.RBM(n_hidden=4, n_visible=6)
    s = Generator(rbm).sample(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 6)
    assert torch.allclose(AnomalyScorer(rbm).score(s), rbm.free_energy(s))
