"""Annealed Langevin with a final Tweedie step, and weight averaging, against known answers."""

from __future__ import annotations

import pytest
import torch

from ebrl.gaussian import GaussianResidualEnergy
from ebrl.heads import annealed_langevin
from ebrl.training import DenoisingScoreMatching, WeightAverage, fit

torch.set_num_threads(1)

MU = torch.tensor([[0.5, -0.3]])
COV = torch.tensor([[[0.04, 0.012], [0.012, 0.01]]])
LEVELS = torch.logspace(0, -1.3, 8).tolist()  # 1.0 -> 0.05, geometric


def gaussian_energy() -> GaussianResidualEnergy:
    """One class, zero residual: E(x | sigma) is exactly the energy of N(MU, COV + sigma^2 I)."""
    torch.manual_seed(0)
    return GaussianResidualEnergy(MU, COV, (8,))


def test_annealing_from_one_point_reaches_the_blurred_gaussian_and_tweedie_shrinks_it() -> None:
    # Every chain starts at the same far point; annealing from sigma_0 = 1 must forget it. Without
    # the last step the chains sample N(mu, Sigma + sigma_L^2 I); the Tweedie step maps that to
    # N(mu, Sigma (Sigma + sigma_L^2 I)^-1 Sigma). Tolerances: 4000 chains (standard error of the
    # mean about 0.003) and the bias of 30 unadjusted steps per level (measured within 0.0025).
    energy, init = gaussian_energy(), torch.full((4000, 2), 1.5)
    kwargs = {"n_steps": 30, "step_scale": 0.2, "bounds": (-5.0, 5.0)}
    raw = annealed_langevin(energy, init, LEVELS, denoise=False, generator=torch.Generator().manual_seed(0),
                            **kwargs)
    den = annealed_langevin(energy, init, LEVELS, generator=torch.Generator().manual_seed(0), **kwargs)
    blurred = COV[0] + LEVELS[-1] ** 2 * torch.eye(2)
    shrunk = COV[0] @ torch.linalg.inv(blurred) @ COV[0]
    for x, cov in ((raw, blurred), (den, shrunk)):
        assert x.shape == (4000, 2)
        torch.testing.assert_close(x.mean(0), MU[0], atol=0.01, rtol=0)
        torch.testing.assert_close(torch.cov(x.T), cov, atol=0.004, rtol=0)
    # The Tweedie step is the linear (Wiener) map of the raw chains for a Gaussian energy.
    expected = MU[0] + (raw - MU[0]) @ (COV[0] @ torch.linalg.inv(blurred)).T
    torch.testing.assert_close(den, expected, atol=1e-4, rtol=0)


def test_annealed_langevin_seed_context_clip_and_bad_arguments() -> None:
    torch.manual_seed(0)
    means, covs = torch.tensor([[0.0, 0.0], [3.0, 3.0]]), torch.eye(2).repeat(2, 1, 1) * 0.01
    two = GaussianResidualEnergy(means, covs, (8,))
    init = torch.zeros(500, 2)
    run = lambda seed: annealed_langevin(  # noqa: E731
        two, init, [1.0, 0.3, 0.1], context=torch.tensor([0.0, 1.0]), n_steps=20,
        bounds=(-2.0, 5.0), generator=torch.Generator().manual_seed(seed))
    a, b = run(1), run(1)
    assert torch.equal(a, b) and not torch.equal(a, run(2))
    # The one-hot context picks class 1 (mean (3, 3), std 0.1).
    torch.testing.assert_close(a.mean(0), torch.tensor([3.0, 3.0]), atol=0.05, rtol=0)
    clipped = annealed_langevin(two, init, [1.0, 0.1], context=torch.tensor([0.0, 1.0]), clip=(0.0, 2.5),
                                bounds=(-2.0, 5.0), generator=torch.Generator().manual_seed(0))
    assert clipped.max() <= 2.5 and clipped.min() >= 0.0
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(two, init, [0.1, 1.0])
    with pytest.raises(ValueError, match="step_scale"):
        annealed_langevin(two, init, [1.0], step_scale=2.0)
    with pytest.raises(ValueError, match="init"):
        annealed_langevin(two, init[None], [1.0])
    with pytest.raises(ValueError, match="context"):
        annealed_langevin(two, init, [1.0], context=torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="bounds"):
        annealed_langevin(two, init, [1.0], bounds=(1.0, 0.0))


def test_weight_average_is_the_exact_exponential_average() -> None:
    module = torch.nn.Linear(2, 1)
    start = [p.detach().clone() for p in module.parameters()]
    average = WeightAverage(module, decay=0.9)
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(1.0)
    for step in range(5):
        assert average(step, {}) is False  # the fit hook never stops training
    # theta_bar_t = decay^t theta_0 + (1 - decay^t) c for constant parameters c = 1.
    for a, s in zip(average.average, start, strict=True):
        torch.testing.assert_close(a, 0.9**5 * s + (1 - 0.9**5), atol=1e-6, rtol=0)
    assert average.updates == 5
    other = torch.nn.Linear(2, 1)
    average.apply(other)
    for p, a in zip(other.parameters(), average.average, strict=True):
        assert torch.equal(p, a)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(module, decay=1.0)
    with pytest.raises(TypeError, match="module"):
        WeightAverage(torch.nn.ReLU())
    with pytest.raises(ValueError, match="parameter shapes"):
        average.apply(torch.nn.Linear(3, 1))


def test_weight_average_as_the_fit_hook_updates_every_step() -> None:
    energy = gaussian_energy()
    x = MU + torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * 0.2
    average = WeightAverage(energy, decay=0.5)
    fit(energy, x, DenoisingScoreMatching([0.3, 0.1], noise_conditional=True), n_steps=12, callback=average,
        log_every=1, progress=False, generator=torch.Generator().manual_seed(0))
    assert average.updates == 12
    last = [p.detach().clone() for p in energy.parameters()]
    average.apply()
    # The average differs from the last iterate (training moved the weights) and is now in place.
    assert any(not torch.equal(p, q) for p, q in zip(energy.parameters(), last, strict=True))
    for p, a in zip(energy.parameters(), average.average, strict=True):
        assert torch.equal(p, a)
