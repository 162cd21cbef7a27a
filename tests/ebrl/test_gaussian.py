"""GaussianResidualEnergy: the Gaussian base is exact (Tweedie = the Wiener/LMMSE denoiser, the
class is chosen by its one-hot), the residual learns what is not Gaussian, bad input is refused."""

from __future__ import annotations

import math

import pytest
import torch

from ebrl.gaussian import GaussianResidualEnergy
from ebrl.heads import Denoiser
from ebrl.training import DenoisingScoreMatching, fit


def gaussian_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.tensor([1.0, -2.0, 0.5])
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.3, 0.2]])
    return mu + torch.randn(n, 3, generator=g) @ a.T, mu, a @ a.T


def test_from_data_fits_mean_and_covariance() -> None:
    x, _, _ = gaussian_data(500)
    energy = GaussianResidualEnergy.from_data(x, hidden_sizes=(8,))
    cov = energy.u[0] @ torch.diag(energy.lam[0]) @ energy.u[0].T
    torch.testing.assert_close(energy.mu[0], x.mean(0))
    torch.testing.assert_close(cov, torch.cov(x.T), atol=1e-5, rtol=1e-5)


def test_tweedie_on_the_base_is_the_wiener_denoiser() -> None:
    x, mu, cov = gaussian_data(2000)
    energy = GaussianResidualEnergy(mu[None], cov[None], hidden_sizes=(8,))  # residual is zero at init
    sigma = 0.5
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = Denoiser(energy, noise_conditional=True).denoise(noisy, sigma=sigma)
    # E[x | x_noisy] = mu + Sigma (Sigma + sigma^2 I)^-1 (x_noisy - mu) for Gaussian x.
    wiener = mu + (noisy - mu) @ torch.linalg.solve(cov + sigma**2 * torch.eye(3), cov)
    torch.testing.assert_close(out, wiener, atol=1e-4, rtol=1e-4)
    assert ((out - x) ** 2).mean() < 0.7 * ((noisy - x) ** 2).mean()


def test_the_one_hot_context_picks_the_class() -> None:
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    covs = torch.eye(2).expand(2, 2, 2)
    energy = GaussianResidualEnergy(means, covs, hidden_sizes=(8,))
    x = torch.tensor([[5.0, 5.0]])
    log_sigma = torch.tensor([[math.log(1e-3)]])
    e0 = energy.energy(x, torch.cat([torch.tensor([[1.0, 0.0]]), log_sigma], -1))
    e1 = energy.energy(x, torch.cat([torch.tensor([[0.0, 1.0]]), log_sigma], -1))
    assert e1.item() == pytest.approx(0.0, abs=1e-5) and e0.item() == pytest.approx(25.0, rel=1e-3)


def test_the_residual_learns_what_is_not_gaussian() -> None:
    # Two clusters fitted by one Gaussian: the base denoiser pulls points toward the middle; the
    # residual, trained by denoising score matching, learns the two modes.
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    x = centers[torch.randint(2, (2000,), generator=g)] + 0.2 * torch.randn(2000, 2, generator=g)
    energy = GaussianResidualEnergy.from_data(x, hidden_sizes=(64, 64))
    noisy = x + 0.5 * torch.randn(x.shape, generator=g)
    denoiser = Denoiser(energy, noise_conditional=True)
    before = ((denoiser.denoise(noisy, sigma=0.5) - x) ** 2).mean()
    fit(energy, x, DenoisingScoreMatching([0.5], noise_conditional=True), n_steps=400, lr=3e-3,
        batch_size=256, progress=False)
    after = ((denoiser.denoise(noisy, sigma=0.5) - x) ** 2).mean()
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("make, match", [
    (lambda: GaussianResidualEnergy(torch.zeros(2), torch.eye(2)[None]), "means must have shape"),
    (lambda: GaussianResidualEnergy(torch.zeros(1, 2), torch.eye(3)[None]), "covariances"),
    (lambda: GaussianResidualEnergy(torch.full((1, 2), math.nan), torch.eye(2)[None]), "finite"),
    (lambda: GaussianResidualEnergy.from_data(torch.zeros(1, 2)), "n >= 2"),
    (lambda: GaussianResidualEnergy.from_data(torch.randn(5, 2), shrinkage=2.0), "shrinkage"),
    (lambda: GaussianResidualEnergy.from_data(torch.randn(5, 2), torch.tensor([0, 0, 0, 0, 1])),
     "class 1 has 1 examples"),
    (lambda: GaussianResidualEnergy(torch.zeros(1, 2), torch.eye(2)[None]).energy(torch.zeros(3, 2)),
     "context is required"),
])
def test_bad_input_is_refused(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()
