"""Samplers against distributions whose answer is known.

Every statistical check uses a fixed seed and a stated tolerance. Chains start uniform on the box
and are independent, so the final states of C chains are C (approximately) independent draws.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebrl import StateActionEnergy
from ebrl.errors import NonFiniteError
from ebrl.samplers import MALA, DerivativeFree, Langevin, Sampler

# ---------------------------------------------------------------- targets with known answers


def gaussian_1d(mu: float, sigma: float):
    return lambda x: (x[..., 0] - mu) ** 2 / (2 * sigma**2)


def gaussian_2d(mean: torch.Tensor, cov: torch.Tensor):
    prec = torch.linalg.inv(cov)

    def energy(x):
        d = x - mean
        return 0.5 * torch.einsum("...i,ij,...j->...", d, prec, d)

    return energy


CENTERS = torch.tensor([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1])


def mixture_4(x, sigma=0.2):
    d2 = ((x[..., None, :] - CENTERS) ** 2).sum(-1)
    return -torch.logsumexp(WEIGHTS.log() - d2 / (2 * sigma**2), dim=-1)


def quadrant_weights(x):
    """Fraction of points in the quadrant of each mixture centre."""
    px, py = x[..., 0] > 0, x[..., 1] > 0
    return torch.stack([px & py, ~px & py, ~px & ~py, px & ~py]).float().mean(-1)


def exact_quadrant_weights(energy, n=801):
    """Mass of each quadrant of the box under exp(-E), by a dense grid."""
    g = torch.linspace(-1, 1, n)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx, yy], -1)
    p = torch.exp(-energy(grid))
    p = p / p.sum()
    px, py = xx > 0, yy > 0
    masks = torch.stack([px & py, ~px & py, ~px & ~py, px & ~py]).float()
    return (masks * p).sum((1, 2))


def draw(sampler, energy, chains, dim, seed=0, batch=1, temperature=1.0):
    g = torch.Generator().manual_seed(seed)
    return sampler.sample(energy, shape=(batch, chains, dim), generator=g, temperature=temperature)


# ---------------------------------------------------------------- exactness


def test_mala_matches_1d_gaussian():
    """N(0.2, 0.2^2): 6 sigma from the walls, so truncation is negligible. KS at 4000 draws."""
    r = draw(MALA(n_steps=200, step_size=0.05, adapt_steps=50), gaussian_1d(0.2, 0.2), 4000, 1)
    x = r.samples.flatten().numpy()
    assert abs(x.mean() - 0.2) < 0.01  # SE of the mean is 0.2/sqrt(4000) = 0.003
    assert abs(x.std() - 0.2) < 0.01
    assert stats.kstest(x, stats.norm(0.2, 0.2).cdf).pvalue > 0.01
    assert 0.4 < float(r.acceptance) < 0.8  # adapted toward 0.574 during warm-up


def test_mala_temperature_scales_variance():
    """exp(-E/T) with E = x^2/(2 s^2) is N(0, T s^2)."""
    r = draw(
        MALA(n_steps=200, step_size=0.05, adapt_steps=50), gaussian_1d(0.0, 0.1), 4000, 1, temperature=4.0
    )
    assert abs(float(r.samples.std()) - 0.2) < 0.01


def test_mala_matches_2d_correlated_gaussian():
    mean = torch.tensor([0.1, -0.2])
    cov = torch.tensor([[0.04, 0.024], [0.024, 0.04]])  # correlation 0.6
    r = draw(MALA(n_steps=300, step_size=0.02, adapt_steps=50), gaussian_2d(mean, cov), 4000, 2)
    x = r.samples[0]
    torch.testing.assert_close(x.mean(0), mean, atol=0.012, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.004, rtol=0)


def test_mala_is_exact_for_gaussian_truncated_to_box():
    """N(0.8, 0.5^2) cut at +1: a third of the mass would lie outside. Compared with scipy's truncnorm."""
    truth = stats.truncnorm((-1 - 0.8) / 0.5, (1 - 0.8) / 0.5, loc=0.8, scale=0.5)
    r = draw(MALA(n_steps=400, step_size=0.05, adapt_steps=50), gaussian_1d(0.8, 0.5), 4000, 1)
    x = r.samples.flatten().numpy()
    assert x.min() >= -1 and x.max() <= 1
    assert abs(x.mean() - truth.mean()) < 0.02
    assert abs(x.std() - truth.std()) < 0.02
    assert stats.kstest(x, truth.cdf).pvalue > 0.01


def test_mala_mode_weights_of_4_mode_mixture():
    """Mode weights 0.4/0.3/0.2/0.1 (as truncated to the box, by a dense grid) within 0.03."""
    exact = exact_quadrant_weights(mixture_4)
    r = draw(MALA(n_steps=600, step_size=0.05, adapt_steps=100), mixture_4, 2000, 2)
    torch.testing.assert_close(quadrant_weights(r.samples[0]), exact, atol=0.03, rtol=0)


def test_langevin_with_small_steps_is_close():
    """Unadjusted Langevin has an O(step) bias: looser tolerances than MALA's."""
    r = draw(Langevin(n_steps=300, step_size=0.002), gaussian_1d(0.2, 0.2), 4000, 1)
    x = r.samples.flatten().numpy()
    assert abs(x.mean() - 0.2) < 0.02
    assert abs(x.std() - 0.2) < 0.02
    truth = stats.truncnorm((-1 - 0.8) / 0.5, (1 - 0.8) / 0.5, loc=0.8, scale=0.5)
    r = draw(Langevin(n_steps=400, step_size=0.002), gaussian_1d(0.8, 0.5), 4000, 1, seed=1)
    x = r.samples.flatten().numpy()
    assert abs(x.mean() - truth.mean()) < 0.03  # reflection keeps the truncated target
    assert stats.kstest(x, truth.cdf).statistic < 0.05


def test_derivative_free_finds_global_minimum():
    """A multimodal energy (Rastrigin-like ripples on a bowl centred at (0.6, -0.3))."""
    opt = torch.tensor([0.6, -0.3])

    def energy(x):
        d = x - opt
        return (d**2).sum(-1) * 10 + (1 - torch.cos(6 * math.pi * d)).sum(-1)

    dfo = DerivativeFree(n_steps=6)
    for seed in range(3):
        r = draw(dfo, energy, 512, 2, seed=seed, batch=3)
        assert (r.best() - opt).abs().max() < 0.03
    # Deterministic mode: same answer whatever the caller's generator.
    a = dfo.sample(energy, shape=(2, 256, 2), deterministic=True, generator=torch.Generator().manual_seed(1))
    b = dfo.sample(energy, shape=(2, 256, 2), deterministic=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.samples, b.samples)
    assert (a.best() - opt).abs().max() < 0.03


def test_deterministic_langevin_descends_to_the_minimum():
    sampler = Langevin(n_steps=100, step_size=0.05)
    r = sampler.sample(gaussian_1d(0.3, 0.2), shape=(2, 8, 1), deterministic=True)
    torch.testing.assert_close(r.best(), torch.full((2, 1), 0.3), atol=1e-3, rtol=0)
    assert float(r.energy_drop) > 0
    # Noise-free and from a fixed initialisation: identical on repeat.
    assert torch.equal(
        sampler.sample(gaussian_1d(0.3, 0.2), shape=(2, 8, 1), deterministic=True).samples, r.samples
    )
    # A minimum outside the box is reached on the face (deterministic search clips).
    r = sampler.sample(gaussian_1d(1.5, 0.2), shape=(1, 4, 1), deterministic=True)
    torch.testing.assert_close(r.best(), torch.ones(1, 1))


# ---------------------------------------------------------------- the box and shapes

SAMPLERS = [
    pytest.param(lambda: Langevin(n_steps=10, step_size=0.5), id="langevin-reflect-big-steps"),
    pytest.param(lambda: Langevin(n_steps=10, step_size=0.5, boundary="clip"), id="langevin-clip"),
    pytest.param(
        lambda: Langevin(
            n_steps=10, step_size=0.1, step_size_final=1e-4, schedule="polynomial", move_clip=0.1
        ),
        id="langevin-ibc",
    ),
    pytest.param(
        lambda: Langevin(
            n_steps=10, step_size=0.1, step_size_final=1e-4, schedule="exponential", grad_clip=1.0
        ),
        id="langevin-exp",
    ),
    pytest.param(lambda: MALA(n_steps=10, step_size=0.5, adapt_steps=3), id="mala"),
    pytest.param(lambda: DerivativeFree(n_steps=3, noise_scale=2.0), id="dfo"),
]


@pytest.mark.parametrize("make", SAMPLERS)
@pytest.mark.parametrize(("batch", "act_dim"), [(1, 1), (1, 3), (4, 1), (4, 3)])
def test_samples_stay_in_box_with_right_shapes(make, batch, act_dim):
    torch.manual_seed(0)
    energy = StateActionEnergy(5, act_dim, hidden_sizes=(16,))
    # A steep linear pull toward a corner outside the box tests the walls.
    states = torch.randn(batch, 5)
    with torch.no_grad():
        energy.action_in.weight.mul_(50)
    r = make().sample(
        energy, shape=(batch, 7, act_dim), context=states, generator=torch.Generator().manual_seed(0)
    )
    assert r.samples.shape == (batch, 7, act_dim)
    assert r.energy.shape == (batch, 7)
    assert r.best().shape == (batch, act_dim)
    assert r.samples.min() >= -1 and r.samples.max() <= 1
    assert torch.isfinite(r.samples).all()
    assert set(r.diagnostics()) >= {"sampler/energy_drop", "sampler/energy"}


def test_custom_bounds():
    r = draw(MALA(n_steps=50, bounds=(0.0, 2.0)), gaussian_1d(1.0, 0.3), 500, 1)
    assert r.samples.min() >= 0 and r.samples.max() <= 2


# ---------------------------------------------------------------- side effects


@pytest.mark.parametrize("make", SAMPLERS)
def test_no_grad_left_no_input_mutated_and_works_under_no_grad(make):
    torch.manual_seed(0)
    energy = StateActionEnergy(5, 2, hidden_sizes=(16,))
    states = torch.randn(3, 5)
    init = torch.rand(3, 4, 2) * 2 - 1
    states_before, init_before = states.clone(), init.clone()
    params_before = [p.detach().clone() for p in energy.parameters()]
    with torch.no_grad():
        r = make().sample(energy, init, context=states)
    assert all(p.grad is None for p in energy.parameters())
    assert all(torch.equal(p, q) for p, q in zip(energy.parameters(), params_before, strict=True))
    assert torch.equal(states, states_before) and torch.equal(init, init_before)
    assert not r.samples.requires_grad


def test_inference_mode_is_refused_clearly():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        Langevin().sample(gaussian_1d(0, 1), shape=(1, 2, 1))


@pytest.mark.parametrize("make", SAMPLERS)
def test_same_generator_seed_same_samples(make):
    energy = StateActionEnergy(5, 2, hidden_sizes=(16,))
    states = torch.randn(3, 5)

    def run(seed):
        return make().sample(
            energy, shape=(3, 4, 2), context=states, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(0).samples, run(0).samples)
    assert not torch.equal(run(0).samples, run(1).samples)


def test_float64_energy_gives_float64_samples():
    energy = StateActionEnergy(5, 2, hidden_sizes=(16,)).double()
    r = MALA(n_steps=5).sample(energy, shape=(2, 3, 2), context=torch.randn(2, 5, dtype=torch.float64))
    assert r.samples.dtype == torch.float64


# ---------------------------------------------------------------- persistent chains


def test_persistent_chains_continue_and_reset_rows():
    sampler = Langevin(n_steps=1, step_size=1e-6)
    energy = gaussian_1d(0.0, 1.0)
    first = sampler.sample(energy, "persistent", shape=(3, 4, 1)).samples
    second = sampler.sample(energy, "persistent", shape=(3, 4, 1)).samples
    assert (second - first).abs().max() < 0.01  # tiny steps: the chains went on from where they were
    sampler.reset_chains(torch.tensor([False, True, False]))
    third = sampler.sample(energy, "persistent", shape=(3, 4, 1)).samples
    assert (third[[0, 2]] - second[[0, 2]]).abs().max() < 0.01
    assert (third[1] - second[1]).abs().max() > 0.05  # row 1 restarted uniformly
    # Another shape cannot continue: a fresh uniform start.
    assert sampler.sample(energy, "persistent", shape=(2, 4, 1)).samples.shape == (2, 4, 1)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: Langevin(step_size=0), ValueError, "step_size"),
        (lambda: Langevin(step_size=-1.0), ValueError, "step_size"),
        (lambda: Langevin(step_size=float("nan")), ValueError, "step_size"),
        (lambda: Langevin(n_steps=0), ValueError, "n_steps"),
        (lambda: Langevin(n_steps=2.5), TypeError, "n_steps"),
        (lambda: Langevin(schedule="cosine"), ValueError, "schedule"),
        (lambda: Langevin(schedule="polynomial"), ValueError, "step_size_final"),
        (lambda: Langevin(move_clip=1.5), ValueError, "move_clip"),
        (lambda: Langevin(boundary="wrap"), ValueError, "boundary"),
        (lambda: Langevin(bounds=(1.0, -1.0)), ValueError, "bounds"),
        (lambda: MALA(step_size=0.0), ValueError, "step_size"),
        (lambda: MALA(n_steps=10, adapt_steps=10), ValueError, "adapt_steps"),
        (lambda: MALA(target_accept=1.0), ValueError, "target_accept"),
        (lambda: DerivativeFree(noise_scale=0), ValueError, "noise_scale"),
        (lambda: DerivativeFree(noise_shrink=2.0), ValueError, "noise_shrink"),
    ],
)
def test_bad_constructor_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("sampler", [Langevin(), MALA(n_steps=3), DerivativeFree()], ids=type)
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"shape": (2, 0, 1)}, ValueError, "chains"),
        ({"shape": (0, 2, 1)}, ValueError, "batch"),
        ({"shape": (2, 1)}, ValueError, "shape"),
        ({}, ValueError, "shape"),
        ({"shape": (2, 2, 1), "temperature": 0.0}, ValueError, "temperature"),
        ({"shape": (2, 2, 1), "temperature": -1.0}, ValueError, "temperature"),
        ({"shape": (2, 2, 1), "init": "warm"}, ValueError, "init"),
        ({"init": torch.full((2, 2, 1), 3.0)}, ValueError, "init"),
        ({"init": torch.zeros(2, 1)}, ValueError, "init"),
    ],
)
def test_bad_sample_arguments(sampler, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sampler.sample(gaussian_1d(0, 1), **kwargs)


def test_state_action_mismatch_is_named():
    energy = StateActionEnergy(5, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="states"):
        Langevin().sample(energy, shape=(3, 4, 2), context=torch.randn(4, 5))  # batch mismatch
    with pytest.raises(ValueError, match="actions"):
        Langevin().sample(energy, shape=(3, 4, 3), context=torch.randn(3, 5))  # wrong action dim
    with pytest.raises(ValueError, match="energy must map"):
        Langevin().sample(lambda x: x.sum(-1, keepdim=True), shape=(3, 4, 3))


@pytest.mark.parametrize(
    "make", [lambda: Langevin(n_steps=6), lambda: MALA(n_steps=6), lambda: DerivativeFree()]
)
def test_non_finite_energy_stops_and_names_the_step(make):
    calls = {"n": 0}

    def energy(x):
        calls["n"] += 1
        e = (x**2).sum(-1)
        return e * float("nan") if calls["n"] >= 3 else e

    sampler = make()
    before = sampler.sample(gaussian_1d(0, 1), "persistent", shape=(2, 3, 1)).samples
    with pytest.raises(NonFiniteError, match=r"energy became NaN or infinite at step 2 of"):
        sampler.sample(energy, "persistent", shape=(2, 3, 1))
    # The failed call left the persistent chains as they were.
    assert torch.equal(sampler.chains, before)


def test_non_finite_gradient_is_named():
    def energy(x):  # finite values, infinite slope at 0
        return x[..., 0].abs().sqrt()

    with pytest.raises(NonFiniteError, match="gradient"):
        Langevin(n_steps=3).sample(energy, torch.zeros(1, 2, 1))


def test_sampler_interface_is_its_kernels():
    # A sampler is init/step/draw kernels with explicit state; the loop is shared (issue 12).
    assert Sampler.__abstractmethods__ == frozenset({"init", "step", "draw"})
    assert np.isclose(
        Langevin(n_steps=3, step_size=0.1, step_size_final=0.001, schedule="polynomial").step_sizes[-1], 0.001
    )


# ---------------------------------------------------------------- the compiled path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda c: MALA(n_steps=6, step_size=0.05, adapt_steps=2, compile=c), id="mala"),
        pytest.param(
            lambda c: Langevin(n_steps=6, step_size=0.1, step_size_final=1e-3, schedule="polynomial",
                               move_clip=0.1, compile=c),
            id="langevin",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices from inside torch.compile
def test_compiled_steps_give_the_eager_samples(make):
    # Same generator, same draws: the compiled kernels must reproduce the eager chain up to float
    # rounding of fused kernels (stated tolerance 1e-5 on positions in [-1, 1]), for the chain and
    # for the deterministic search, and keep doing so for a new state batch and a new temperature
    # (a temperature or state change must not need a recompile to be honoured).
    torch.manual_seed(0)
    energy = StateActionEnergy(5, 3, hidden_sizes=(32, 32))
    eager, compiled = make(False), make(True)
    for seed, temperature in [(0, 1.0), (1, 0.3)]:
        states = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed))
        kwargs = dict(shape=(4, 8, 3), context=states, temperature=temperature)
        a = eager.sample(energy, generator=torch.Generator().manual_seed(seed), **kwargs)
        b = compiled.sample(energy, generator=torch.Generator().manual_seed(seed), **kwargs)
        torch.testing.assert_close(b.samples, a.samples, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.energy, a.energy, atol=1e-4, rtol=1e-4)
        if a.acceptance is not None:
            torch.testing.assert_close(b.acceptance, a.acceptance)
        da = eager.sample(energy, deterministic=True, **kwargs)
        db = compiled.sample(energy, deterministic=True, **kwargs)
        torch.testing.assert_close(db.samples, da.samples, atol=1e-5, rtol=0)


def test_compile_flag_is_checked():
    with pytest.raises(ValueError, match=r"compile must be True, False or one of .*, got 'yes'"):
        MALA(compile="yes")


def test_deterministic_search_reports_no_acceptance_rate():
    # The noise-free search is not an MH chain: it must not report an acceptance of 0.0 that reads
    # like a broken sampler (issue 14), while the chain reports its real rate.
    sampler = MALA(n_steps=20, step_size=0.05, adapt_steps=5)
    chain = draw(sampler, gaussian_1d(0.0, 0.5), chains=64, dim=1, batch=2)
    search = sampler.sample(gaussian_1d(0.0, 0.5), shape=(2, 64, 1), deterministic=True)
    assert search.acceptance is None and "sampler/acceptance" not in search.diagnostics()
    assert 0.3 < float(chain.acceptance) <= 1.0


def test_persistent_state_round_trips_through_state_dict():
    # The sampler's state between calls is explicit: a fresh sampler loaded with it continues
    # exactly where the first one would have (same generator, same samples).
    energy = gaussian_1d(0.0, 0.5)
    first = Langevin(n_steps=3, step_size=1e-2)
    first.sample(energy, "persistent", shape=(3, 4, 1), generator=torch.Generator().manual_seed(0))
    first.reset_chains(torch.tensor([False, True, False]))
    state = first.state_dict()
    second = Langevin(n_steps=3, step_size=1e-2)
    second.load_state_dict(state)
    a = first.sample(energy, "persistent", shape=(3, 4, 1), generator=torch.Generator().manual_seed(1))
    b = second.sample(energy, "persistent", shape=(3, 4, 1), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.samples, b.samples)
    with pytest.raises(ValueError, match="unknown keys"):
        second.load_state_dict({"chain": None})
