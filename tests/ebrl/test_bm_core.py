"""The Boltzmann machines on the shared core: free energy as an ebrl.Energy, Gibbs sampling by
ebrl.samplers.GibbsSampler, argument checks from ebrl.validation."""

from __future__ import annotations

import pytest
import torch

from ebrl import Energy
from ebrl.boltzmann_machines import RBM, BoltzmannMachine, FreeEnergy, GaussianBernoulliRBM
from ebrl.partition import exact_log_z
from ebrl.samplers import GibbsModel, GibbsSampler, SampleResult
from ebrl.validation import check_bool, check_device, check_float, check_float_dtype, check_generator


def all_states(n: int) -> torch.Tensor:
    index = torch.arange(2**n)
    return ((index[:, None] >> torch.arange(n)) & 1).double()


def tiny_rbm(seed: int = 3) -> RBM:
    """4 visible, 3 hidden units with weights and biases of order 1 (a far from uniform p(v))."""
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(3, 4, init_std=1.0, dtype=torch.float64, generator=g)
    with torch.no_grad():
        rbm.visible_bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))
        rbm.hidden_bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    return rbm


def tiny_bm() -> BoltzmannMachine:
    """3 visible, 2 hidden units with every coupling allowed (visible-visible and hidden-hidden)."""
    g = torch.Generator().manual_seed(1)
    bm = BoltzmannMachine(3, 2, init_std=1.0, dtype=torch.float64, generator=g)
    with torch.no_grad():
        bm.bias.copy_(torch.randn(5, generator=g, dtype=torch.float64) * 0.5)
    return bm


def exact_visible_probabilities(model: RBM | BoltzmannMachine) -> torch.Tensor:
    v = all_states(model.n_visible)
    return torch.exp(-model.free_energy(v) - exact_log_z(model))


@pytest.mark.parametrize("make", [tiny_rbm, tiny_bm])
def test_free_energy_as_energy_normalises_with_exact_log_z(make):
    model = make()
    energy = model.as_energy()
    assert isinstance(energy, Energy) and isinstance(energy, FreeEnergy)
    assert energy.x_dim == model.n_visible and energy.context_dim == 0
    assert energy.dtype == torch.float64
    v = all_states(model.n_visible)
    assert torch.equal(energy.energy(v), model.free_energy(v))
    assert torch.equal(energy.condition(None)(v[None]), model.free_energy(v[None]))  # what samplers call
    # exp(-F(v)) / Z with Z summed exactly over all states is a distribution over the visible states.
    p = torch.exp(-energy(v) - exact_log_z(model))
    assert abs(p.sum().item() - 1.0) < 1e-12
    assert p.min().item() > 0.0 and p.max().item() > 2.0 / len(v)  # not the uniform distribution
    with pytest.raises(ValueError, match="context"):
        energy(v, torch.zeros(len(v), 1))


def test_free_energy_as_energy_of_a_gaussian_rbm_and_an_unfitted_model():
    g = torch.Generator().manual_seed(0)
    gb = GaussianBernoulliRBM(3, 2, sigma=0.5, dtype=torch.float64, generator=g)
    v = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(gb.as_energy()(v), gb.free_energy(v))
    with pytest.raises(RuntimeError, match="fit"):
        RBM(3).as_energy()


def test_gibbs_sampler_matches_exact_probabilities_of_a_tiny_rbm():
    """20,000 chains, 30 sweeps from all-zero states (seed 0): total variation to the exact p(v)
    over the 16 visible states < 0.03 (the sampling noise alone is about 0.01)."""
    rbm = tiny_rbm()
    exact = exact_visible_probabilities(rbm)
    x0 = torch.zeros(20_000, 4, dtype=torch.float64)
    assert isinstance(rbm, GibbsModel)
    result = GibbsSampler(n_steps=30).run_chains(rbm, x0, torch.Generator().manual_seed(0))
    assert isinstance(result, SampleResult) and result.samples.shape == (1, 20_000, 4)
    assert x0.abs().sum() == 0  # the start states are not modified
    assert torch.equal(result.energy[0], rbm.free_energy(result.samples[0]))
    assert result.acceptance is None and result.grad_norm is None
    index = (result.samples[0] * 2 ** torch.arange(4, dtype=torch.float64)).sum(-1).long()
    empirical = torch.bincount(index, minlength=16).double() / len(index)
    assert 0.5 * (empirical - exact).abs().sum().item() < 0.03
    # The chains started at all zeros (energy F(0)) and moved to where p is high.
    assert result.energy_drop.item() == pytest.approx((rbm.free_energy(x0[:1]) - result.energy).mean().item())


def test_gibbs_sampler_runs_a_boltzmann_machine_with_lateral_couplings():
    """Full states (v, h), single-unit updates in lateral layers: the visible marginal of 20,000
    chains after 30 sweeps (seed 0) is within total variation 0.03 of the exact p(v)."""
    bm = tiny_bm()
    g = torch.Generator().manual_seed(0)
    x0 = bm._start_states(torch.zeros(20_000, 3, dtype=torch.float64), 0, g)
    result = GibbsSampler(n_steps=30).run_chains(bm, x0, g)
    v = result.samples[0, :, :3]
    index = (v * 2 ** torch.arange(3, dtype=torch.float64)).sum(-1).long()
    empirical = torch.bincount(index, minlength=8).double() / len(index)
    assert 0.5 * (empirical - exact_visible_probabilities(bm)).abs().sum().item() < 0.03


@pytest.mark.parametrize("make", [tiny_rbm, tiny_bm])
def test_model_gibbs_and_sample_are_the_sampler(make):
    """The models' own gibbs/sample draw exactly what the sampler draws from the same seed."""
    model = make()
    v = torch.zeros(50, model.n_visible, dtype=torch.float64)
    ours = model.gibbs(v, k=3, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    if isinstance(model, BoltzmannMachine):
        x0 = model._start_states(v, 0, g)
        expected = GibbsSampler(3).run_chains(model, x0, g).samples[0, :, : model.n_visible]
    else:
        expected = GibbsSampler(3).run_chains(model, v, g).samples[0]
    assert torch.equal(ours, expected)


def test_gibbs_sampler_refuses_bad_arguments():
    rbm = tiny_rbm()
    with pytest.raises(ValueError, match="n_steps"):
        GibbsSampler(0)
    with pytest.raises(TypeError, match="gibbs_sweep"):
        GibbsSampler().run_chains(torch.nn.Linear(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x0"):
        GibbsSampler().run_chains(rbm, torch.zeros(4))
    with pytest.raises(TypeError, match="generator"):
        GibbsSampler().run_chains(rbm, torch.zeros(3, 4, dtype=torch.float64), generator=1)


def test_validation_checkers_added_for_the_boltzmann_machines():
    assert check_float("x", 0.5, low=0.0, high=1.0) == 0.5
    with pytest.raises(ValueError, match=r"x must be a finite number in \(0.0, 1.0\], got 0.0"):
        check_float("x", 0.0, low=0.0, high=1.0, low_open=True)
    with pytest.raises(TypeError, match="x must be a real number, got True"):
        check_float("x", True)
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match="flag must be a bool, got 1 of type int"):
        check_bool("flag", 1)
    g = torch.Generator()
    assert check_generator("generator", g) is g and check_generator("generator", None) is None
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        check_generator("generator", 0)
    assert check_float_dtype("dtype", torch.float64) == torch.float64
    with pytest.raises(TypeError, match=r"dtype must be torch\.float32 or torch\.float64"):
        check_float_dtype("dtype", torch.int32)
    assert check_device("device", None) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be None, 'auto'"):
        check_device("device", "gpu0")
