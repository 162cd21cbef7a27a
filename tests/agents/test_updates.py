"""The shared update primitives: Polyak averaging and the optimiser factory."""

import pytest
import torch

from ebrl.agents.common.updates import make_optimizer, polyak


def test_polyak_matches_its_formula_and_copies_exactly_at_tau_one() -> None:
    torch.manual_seed(0)
    sources = [torch.randn(5, 3), torch.randn(3)]
    targets = [torch.randn(5, 3), torch.randn(3)]
    before = [t.clone() for t in targets]
    polyak(targets, sources, 0.3)
    for t, b, s in zip(targets, before, sources, strict=True):
        torch.testing.assert_close(t, 0.3 * s + 0.7 * b)
    polyak(targets, sources, 1.0)
    assert all(torch.equal(t, s) for t, s in zip(targets, sources, strict=True))
    frozen = [t.clone() for t in targets]
    polyak(targets, [s + 1 for s in sources], 0.0)
    assert all(torch.equal(t, f) for t, f in zip(targets, frozen, strict=True))


def test_polyak_rejects_unpaired_lists_before_changing_anything() -> None:
    targets = [torch.zeros(2), torch.zeros(2)]
    with pytest.raises(ValueError, match="2 target tensors for 1 sources"):
        polyak(targets, [torch.ones(2)], 0.5)
    assert all(torch.equal(t, torch.zeros(2)) for t in targets)


def test_make_optimizer_fuses_adam_unless_told_otherwise() -> None:
    params = [torch.nn.Parameter(torch.randn(4))]
    assert make_optimizer(torch.optim.Adam, params, 1e-3, {}).defaults["fused"] is True
    assert make_optimizer(torch.optim.AdamW, params, 1e-3, {}).defaults["fused"] is True
    plain = make_optimizer(torch.optim.Adam, params, 1e-3, {"foreach": False})
    assert not plain.defaults["fused"] and plain.defaults["foreach"] is False
    assert "fused" not in make_optimizer(torch.optim.RMSprop, params, 1e-3, {}).defaults or (
        not make_optimizer(torch.optim.RMSprop, params, 1e-3, {}).defaults["fused"]
    )


def test_fused_adam_takes_the_same_steps_as_the_default_kernel() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(8, 4)
    runs = []
    for kwargs in ({"foreach": False}, {}):
        w = torch.nn.Parameter(w0.clone())
        opt = make_optimizer(torch.optim.Adam, [w], 1e-2, kwargs)
        for _ in range(20):
            opt.zero_grad()
            (w.sin().sum() + (w**2).sum()).backward()
            opt.step()
        runs.append(w.detach())
    torch.testing.assert_close(runs[0], runs[1])
