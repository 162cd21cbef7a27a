"""exact_log_z and ais_log_z against brute-force enumeration of tiny models."""

import itertools
import math

import pytest
import torch

from ebrl.boltzmann_machines import RBM, BoltzmannMachine, GaussianBernoulliRBM
from ebrl.partition import AISResult, ais_log_z, beta_schedule, exact_log_z, small_batch_threads

torch.set_num_threads(1)


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_rbm(n_visible: int, n_hidden: int, seed: int, scale: float = 1.0, dtype=torch.float64) -> RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_hidden, n_visible, init_std=scale, dtype=dtype, generator=g)
    with torch.no_grad():
        rbm.visible_bias.normal_(generator=g)
        rbm.hidden_bias.normal_(generator=g)
    return rbm


def brute_log_z_rbm(rbm: RBM) -> float:
    """Sum exp(-E(v, h)) over every joint state, written independently of the library."""
    v, h = all_states(rbm.n_visible), all_states(rbm.n_hidden)
    W, b, c = (p.double() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    neg_energy = (v @ b)[:, None] + (h @ c)[None, :] + v @ W @ h.T
    return torch.logsumexp(neg_energy.flatten(), 0).item()


@pytest.mark.parametrize(("n_visible", "n_hidden"), [(6, 3), (3, 7), (5, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_log_z_matches_brute_force_rbm(n_visible, n_hidden, dtype):
    rbm = random_rbm(n_visible, n_hidden, seed=n_visible, dtype=dtype)
    assert exact_log_z(rbm) == pytest.approx(brute_log_z_rbm(rbm), abs=1e-9)
    # Chunks smaller than the state count exercise the running logsumexp.
    assert exact_log_z(rbm, chunk_size=3) == pytest.approx(brute_log_z_rbm(rbm), abs=1e-9)


def test_exact_log_z_gaussian_rbm_matches_numerical_integration():
    g = torch.Generator().manual_seed(0)
    gb = GaussianBernoulliRBM(3, 2, sigma=0.7, init_std=0.5, dtype=torch.float64, generator=g)
    with torch.no_grad():
        gb.visible_bias.copy_(torch.tensor([0.3, -0.2]))
        gb.hidden_bias.copy_(torch.tensor([0.5, -1.0, 0.2]))
    grid = torch.linspace(-8.0, 8.0, 641, dtype=torch.float64)
    step = (grid[1] - grid[0]).item()
    points = torch.cartesian_prod(grid, grid)
    numeric = (torch.logsumexp(-gb.free_energy(points), 0) + 2 * math.log(step)).item()
    assert exact_log_z(gb) == pytest.approx(numeric, abs=1e-6)


@pytest.mark.parametrize(("vv", "hh"), [(True, True), (False, True), (True, False), (False, False)])
def test_exact_log_z_boltzmann_machine_matches_brute_force(vv, hh):
    g = torch.Generator().manual_seed(1)
    bm = BoltzmannMachine(
        4, 3, visible_visible=vv, hidden_hidden=hh, init_std=1.0, dtype=torch.float64, generator=g
    )
    with torch.no_grad():
        bm.bias.normal_(generator=g)
    x = all_states(7)
    brute = torch.logsumexp(0.5 * ((x @ bm.couplings) * x).sum(-1) + x @ bm.bias, 0).item()
    assert exact_log_z(bm) == pytest.approx(brute, abs=1e-9)
    for layer in bm.log_z_layers():  # every enumerable layer gives the same log Z
        states = all_states(bm.log_z_layers()[layer])
        value = torch.logsumexp(bm.log_marginal(layer, states), 0).item()
        assert value == pytest.approx(brute, abs=1e-9)


def test_exact_log_z_refuses_too_many_units_and_leaves_model_unchanged():
    rbm = RBM(30, 40)
    before = {k: v.clone() for k, v in rbm.state_dict().items()}
    with pytest.raises(ValueError, match="max_units") as err:
        exact_log_z(rbm)
    assert "2**30" in str(err.value) and "ais_log_z" in str(err.value)
    with pytest.raises(ValueError, match="max_units"):
        exact_log_z(random_rbm(5, 5, 0), max_units=4)
    assert all(torch.equal(before[k], v) for k, v in rbm.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"max_units": 0}, ValueError, "max_units"),
        ({"max_units": 2.5}, ValueError, "max_units"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"dtype": torch.int64}, TypeError, "dtype"),
    ],
)
def test_exact_log_z_bad_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        exact_log_z(random_rbm(3, 3, 0), **kwargs)


def test_partition_functions_reject_non_models():
    with pytest.raises(TypeError, match="model"):
        exact_log_z(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        ais_log_z("rbm")


def test_beta_schedules():
    sm = beta_schedule()
    assert len(sm) == 14501 and sm[0] == 0.0 and sm[-1] == 1.0
    steps = sm.diff()
    assert steps[:500] == pytest.approx(torch.full((500,), 1e-3, dtype=torch.float64))
    assert steps[500:4500] == pytest.approx(torch.full((4000,), 1e-4, dtype=torch.float64))
    assert steps[4500:] == pytest.approx(torch.full((10000,), 1e-5, dtype=torch.float64))
    short = beta_schedule("salakhutdinov-murray", 1450)
    assert len(short) == 1451 and (short.diff() >= 0).all() and short[50] == pytest.approx(0.5)
    for kind in ("linear", "sigmoid"):
        b = beta_schedule(kind, 100)
        assert len(b) == 101 and b[0] == 0.0 and b[-1] == 1.0 and (b.diff() > 0).all()
    with pytest.raises(ValueError, match="kind"):
        beta_schedule("cosine")
    with pytest.raises(ValueError, match="n_betas"):
        beta_schedule("linear", 0)


def test_ais_matches_exact_on_small_rbm_with_bounds_and_reverse():
    rbm = random_rbm(12, 8, seed=3, scale=0.5)
    exact = exact_log_z(rbm)
    g = torch.Generator().manual_seed(0)
    result = ais_log_z(
        rbm, n_runs=200, betas=beta_schedule("salakhutdinov-murray", 2000), reverse=True, generator=g
    )
    assert isinstance(result, AISResult) and float(result) == result.log_z
    assert abs(result.log_z - exact) < 0.05
    assert result.log_z_lower <= result.log_z <= result.log_z_upper
    assert result.log_z_lower - 0.02 <= exact <= result.log_z_upper + 0.02
    assert abs(result.reverse_log_z - exact) < 0.1
    assert result.log_weights.shape == (200,) and result.n_betas == 2000
    assert 1.0 <= result.effective_sample_size <= 200.0


def test_ais_is_reproducible_and_uses_data_base_rates():
    rbm = random_rbm(8, 4, seed=5)
    data = (torch.rand(50, 8, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    runs = [
        ais_log_z(rbm, n_runs=20, betas=100, data=data, generator=torch.Generator().manual_seed(7))
        for _ in "ab"
    ]
    assert runs[0].log_z == runs[1].log_z
    p = data.mean(0).clamp(1e-3, 1 - 1e-3)
    assert runs[0].log_z_base == pytest.approx((-torch.log1p(-p)).sum().item() + 4 * math.log(2.0))


def test_ais_gaussian_rbm_and_boltzmann_machine_match_exact():
    g = torch.Generator().manual_seed(2)
    gb = GaussianBernoulliRBM(6, 5, init_std=0.3, dtype=torch.float64, generator=g)
    result = ais_log_z(gb, n_runs=200, betas=1000, generator=g, reverse=True)
    assert abs(result.log_z - exact_log_z(gb)) < 0.05
    assert abs(result.reverse_log_z - exact_log_z(gb)) < 0.1
    bm = BoltzmannMachine(5, 3, init_std=0.5, dtype=torch.float64, generator=g)
    result = ais_log_z(bm, n_runs=200, betas=300, generator=g, reverse=True)
    assert abs(result.log_z - exact_log_z(bm)) < 0.05
    assert abs(result.reverse_log_z - exact_log_z(bm)) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"n_runs": 0}, ValueError, "n_runs"),
        ({"betas": [0.0, 0.7, 0.5, 1.0]}, ValueError, "betas"),
        ({"betas": [0.1, 1.0]}, ValueError, "betas"),
        ({"betas": "cosine"}, ValueError, "kind"),
        ({"n_std": -1.0}, ValueError, "n_std"),
        ({"generator": 3}, TypeError, "generator"),
        ({"reverse": True, "reverse_init": torch.zeros(4, 5)}, ValueError, "reverse_init"),
        ({"data": torch.full((3, 6), 2.0)}, ValueError, "data"),
    ],
)
def test_ais_bad_arguments(kwargs, exc, name):
    rbm = random_rbm(6, 3, 0)
    with pytest.raises(exc, match=name):
        ais_log_z(rbm, **kwargs)


def test_small_batch_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with small_batch_threads(100):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with small_batch_threads(2**20):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), small_batch_threads(100):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
