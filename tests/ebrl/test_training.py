"""ebrl.training: contrastive divergence, denoising score matching, the fit loop and its guard."""

from __future__ import annotations

import math

import pytest
import torch

from ebrl import MLPEnergy, NonFiniteError
from ebrl.samplers import Langevin
from ebrl.training import ContrastiveDivergence, DenoisingScoreMatching, fit

torch.set_num_threads(1)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_dsm_learns_the_score_of_a_gaussian() -> None:
    """Data N(0, I) noised at sigma: the optimal energy is |x|^2 / (2 (1 + sigma^2)), whose
    gradient at x is x / (1 + sigma^2). Tolerance: 0.1 on the mean slope after 800 steps."""
    torch.manual_seed(0)
    sigma = 0.5
    energy = MLPEnergy(2, (32, 32))
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    fit(energy, x, DenoisingScoreMatching(sigma), n_steps=800, lr=3e-3, generator=gen)
    probe = torch.randn(500, 2, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    (g,) = torch.autograd.grad(energy(probe).sum(), probe)
    probe = probe.detach()
    slope = float((g * probe).sum() / (probe * probe).sum().detach())
    assert slope == pytest.approx(1 / (1 + sigma**2), abs=0.1)


def test_dsm_loss_touches_only_its_energy_and_not_the_batch() -> None:
    torch.manual_seed(0)
    energy, other = MLPEnergy(2, (8,)), MLPEnergy(2, (8,))
    x = torch.randn(16, 2)
    x_before = x.clone()
    terms = DenoisingScoreMatching([0.1, 0.5]).loss(energy, x, generator=torch.Generator().manual_seed(0))
    terms["loss"].backward()
    assert torch.equal(x, x_before)
    # Every weight matrix gets a gradient (the output bias cannot: it does not move the score).
    assert all(p.grad is not None for p in energy.parameters() if p.dim() == 2)
    assert all(p.grad is None for p in other.parameters())
    assert set(terms) == {"loss", "energy", "score_norm"}


def test_cd_is_reproducible_and_reports_namespaced_metrics() -> None:
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        energy = MLPEnergy(2, (16,))
        obj = ContrastiveDivergence(Langevin(n_steps=5, step_size=0.01, bounds=(-3, 3)), buffer_size=64)
        hist = fit(energy, x, obj, n_steps=20, log_every=10, generator=torch.Generator().manual_seed(3))
        runs.append((_params(energy), hist))
    assert _same(runs[0][0], runs[1][0])
    assert [h["step"] for h in runs[0][1]] == [10.0, 20.0]
    keys = set(runs[0][1][-1])
    assert {"train/loss", "train/energy_pos", "train/energy_neg", "sampler/energy_drop"} <= keys


def test_divergence_guard_restores_last_good_state() -> None:
    """No L2 regulariser and a huge learning rate: the energies explode within a few steps. The
    guard must raise NonFiniteError naming the quantity and the step, and leave parameters and
    optimiser state exactly as they were after the last good step (guard_every=1)."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, (16,))
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(energy.parameters(), lr=0.5)
    snapshots: dict[int, list[torch.Tensor]] = {0: _params(energy)}

    def record(step: int, metrics: dict[str, float]) -> None:
        snapshots[step] = _params(energy)

    obj = ContrastiveDivergence(Langevin(n_steps=5, step_size=0.01), l2_reg=0.0, max_energy=100.0)
    with pytest.raises(NonFiniteError, match=r"energy .* step") as info:
        fit(energy, x, obj, n_steps=200, optimizer=opt, guard_every=1, log_every=1, callback=record,
            generator=torch.Generator().manual_seed(0))
    msg = str(info.value)
    step = int(msg.split("at step ")[1].split()[0])
    assert "max_energy" in msg and f"restored from step {step - 1}" in msg
    assert _same(_params(energy), snapshots[step - 1])
    assert all(s["step"] == step - 1 for s in opt.state_dict()["state"].values())
    with torch.no_grad():
        assert bool(torch.isfinite(energy(x)).all())


class _NaNAtStep:
    """An objective whose loss turns NaN at a given call: the guard must catch a non-finite loss."""

    def __init__(self, bad_call: int) -> None:
        self.diagnostics: dict[str, float] = {}
        self.calls, self.bad_call = 0, bad_call

    def loss(self, energy, x, context=None, generator=None):
        self.calls += 1
        loss = energy(x).pow(2).mean()
        return {"loss": loss * float("nan") if self.calls == self.bad_call else loss}


def test_guard_catches_nan_loss() -> None:
    torch.manual_seed(0)
    energy = MLPEnergy(2, (8,))
    x = torch.randn(32, 2)
    with pytest.raises(NonFiniteError, match=r"step 7 .*loss is nan.* step 5"):
        fit(energy, x, _NaNAtStep(7), n_steps=20, guard_every=5)
    assert all(torch.isfinite(p).all() for p in energy.parameters())


@pytest.mark.parametrize(
    ("data", "context", "argument"),
    [
        (torch.zeros(0, 2), None, "data"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), None, "data"),
        (torch.zeros(4, 3), None, "data"),
        (torch.zeros(4, 2), torch.zeros(3, 1), "context"),
        (torch.zeros(4), None, "data"),
    ],
)
def test_fit_rejects_bad_data_before_any_change(data, context, argument) -> None:
    torch.manual_seed(0)
    energy = MLPEnergy(2, (8,))
    before = _params(energy)
    with pytest.raises(ValueError, match=argument):
        fit(energy, data, DenoisingScoreMatching(0.1), context=context, n_steps=5)
    assert _same(before, _params(energy))


@pytest.mark.parametrize(("sigmas", "exc"), [(0.0, ValueError), (-1.0, ValueError), ([], ValueError),
                                              ([0.1, math.inf], ValueError), ("0.1", TypeError)])
def test_dsm_rejects_bad_sigmas(sigmas, exc) -> None:
    with pytest.raises(exc, match="sigmas"):
        DenoisingScoreMatching(sigmas)


def test_cd_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reinit_prob"):
        ContrastiveDivergence(reinit_prob=1.5)
    with pytest.raises(ValueError, match="l2_reg"):
        ContrastiveDivergence(l2_reg=-0.1)
    with pytest.raises(TypeError, match="sampler"):
        ContrastiveDivergence(sampler="langevin")  # type: ignore[arg-type]


def test_fit_checkpoint_and_early_stop(tmp_path) -> None:
    torch.manual_seed(0)
    energy = MLPEnergy(2, (8,))
    x = torch.randn(64, 2)
    path = tmp_path / "ckpt.pt"
    hist = fit(energy, x, DenoisingScoreMatching(0.3), n_steps=100, log_every=5, checkpoint=path,
               callback=lambda step, m: step >= 15)
    assert hist[-1]["step"] == 15.0
    state = torch.load(path)
    assert state["step"] == 15
    fresh = MLPEnergy(2, (8,))
    fresh.load_state_dict(state["energy"])
    assert _same(_params(fresh), _params(energy))
