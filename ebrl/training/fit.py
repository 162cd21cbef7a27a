"""The training loop: batching, optimiser, progress bar, metrics hook, checkpoints, divergence guard."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ebrl.atomic import atomic_write
from ebrl.errors import NonFiniteError, first_non_finite
from ebrl.validation import check_finite, check_int, check_positive_float, check_tensor

MetricsHook = Callable[[int, dict[str, float]], bool | None]


class Objective(Protocol):
    """What :func:`fit` needs: named loss terms for a batch (``"loss"`` is minimised)."""

    diagnostics: dict[str, float]

    def loss(
        self, energy: Any, x: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Loss terms for one batch (``terms["loss"]`` is minimised) of data ``x`` with optional
        ``context``; ``generator`` drives any sampling."""
        ...


def _check_data(energy: nn.Module, data: Any, context: Any) -> tuple[Tensor, Tensor | None]:
    data = check_tensor("data", data, min_dim=2)
    if data.dim() != 2:
        raise ValueError(f"data must have shape (n, dim), got {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise ValueError("data must hold at least one row, got an empty tensor of shape "
                         f"{tuple(data.shape)}")
    x_dim = getattr(energy, "x_dim", None) or getattr(energy, "n_visible", None)
    if x_dim is not None and data.shape[1] != x_dim:
        raise ValueError(
            f"data must have {x_dim} columns (the energy's x_dim), got shape {tuple(data.shape)}"
        )
    check_finite("data", data)
    if context is not None:
        context = check_tensor("context", context, min_dim=2)
        if context.dim() != 2 or context.shape[0] != data.shape[0]:
            raise ValueError(
                f"context must have shape ({data.shape[0]}, c), one row per data row, "
                f"got {tuple(context.shape)}"
            )
        check_finite("context", context)
    return data, context


def _check_fit(
    energy: nn.Module,
    data: Tensor,
    objective: Any,
    context: Tensor | None,
    optimizer: torch.optim.Optimizer | None,
    lr: float,
    weight_decay: float,
) -> tuple[Tensor, Tensor | None, torch.optim.Optimizer]:
    """Checked data and context, and the optimiser (AdamW(lr, weight_decay) when none is given)."""
    if not isinstance(energy, nn.Module) or not any(True for _ in energy.parameters()):
        raise TypeError(f"energy must be an nn.Module with parameters, got {type(energy).__name__}")
    if not callable(getattr(objective, "loss", None)):
        raise TypeError(
            f"objective must have a loss(energy, x, context, generator) method, got {objective!r}"
        )
    data, context = _check_data(energy, data, context)
    if optimizer is None:
        lr = check_positive_float("lr", lr)
        weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
        optimizer = torch.optim.AdamW(energy.parameters(), lr=lr, weight_decay=weight_decay)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch Optimizer or None, got {type(optimizer).__name__}")
    return data, context, optimizer


def _batches(
    n: int, batch_size: int, generator: torch.Generator | None, device: torch.device
) -> Iterator[Tensor]:
    """Row indices of minibatches, as epochs of random permutations (the rest of an epoch that
    no longer fills a batch is skipped)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for pos in range(0, n - batch_size + 1, batch_size):
            yield perm[pos : pos + batch_size].to(device)


def _step(
    energy: nn.Module,
    objective: Any,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    context: Tensor | None,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """One gradient step on a batch; raises NonFiniteError (nothing stepped) on a non-finite loss."""
    terms = objective.loss(energy, x, context, generator)
    loss = terms["loss"]
    if first_non_finite(loss=loss) is not None:
        raise NonFiniteError(f"the loss is {float(loss.detach())}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return terms


def _snapshot(energy: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> tuple[int, dict, dict]:
    """The last good state: (step, parameters, optimiser state), deep copies."""
    return step, copy.deepcopy(energy.state_dict()), copy.deepcopy(optimizer.state_dict())


def _restored(
    energy: nn.Module, optimizer: torch.optim.Optimizer, good: tuple[int, dict, dict], what: str
) -> NonFiniteError:
    """Put back the last good parameters and optimiser state; the error to raise, naming both."""
    energy.load_state_dict(good[1])
    optimizer.load_state_dict(good[2])
    return NonFiniteError(
        f"{what}. Parameters and optimiser state were restored from step {good[0]}, the last good snapshot"
    )


def _save(path: str | Path, energy: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """``{"energy", "optimizer", "step"}`` by torch.save, atomically: a crash while saving leaves the
    previous checkpoint, never a truncated file."""
    state = {"energy": energy.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    atomic_write(path, lambda f: torch.save(state, f))


def fit(
    energy: nn.Module,
    data: Tensor,
    objective: Objective,
    *,
    context: Tensor | None = None,
    n_steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    callback: MetricsHook | None = None,
    log_every: int = 10,
    guard_every: int = 10,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``energy`` on ``data`` with ``objective`` by minibatch Adam(W).

    Divergence guard: every ``guard_every`` good steps the parameters and optimiser state are
    snapshotted; when the objective raises :class:`~ebrl.errors.NonFiniteError` (energies too
    large or NaN, a sampler chain gone non-finite) or the loss is not finite, both are restored
    from the last snapshot and a ``NonFiniteError`` naming the step is raised.

    Args:
        energy: the energy module E_theta to train (its parameters are optimised).
        data: training inputs x, ``(n, dim)``, finite.
        objective: e.g. :class:`ContrastiveDivergence` or :class:`DenoisingScoreMatching`.
        context: optional conditioning c, ``(n, c)`` aligned with ``data`` (e.g. one-hot labels).
        n_steps: number of gradient steps.
        batch_size: rows per step (sampled as epochs of random permutations).
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        weight_decay: AdamW decoupled weight decay (ignored when ``optimizer`` is given).
        optimizer: an optimiser over ``energy``'s parameters, to resume or customise training.
        generator: random generator for batches, noise and chains (same seed, same run on CPU).
        callback: metrics hook ``callback(step, metrics)`` called every ``log_every`` steps with
            namespaced scalars (``train/...``, ``sampler/...``), e.g. a W&B logger; returning
            True stops training (early stopping).
        log_every: steps between metrics records.
        guard_every: steps between snapshots of the last good state.
        checkpoint: path where ``{"energy", "optimizer", "step"}`` is saved by ``torch.save``, atomically.
        checkpoint_every: steps between checkpoints (None: only at the end).
        progress: show a tqdm progress bar (on by default; it clears itself when done).

    Returns:
        The list of recorded metrics dicts (each with ``"step"``).
    """
    data, context, optimizer = _check_fit(energy, data, objective, context, optimizer, lr, weight_decay)
    n_steps, batch_size, log_every, guard_every = (check_int(k, v, minimum=1) for k, v in dict(
        n_steps=n_steps, batch_size=batch_size, log_every=log_every, guard_every=guard_every).items())
    every = check_int("checkpoint_every", n_steps if checkpoint_every is None else checkpoint_every,
                      minimum=1)
    good, history = _snapshot(energy, optimizer, 0), []
    batches = _batches(data.shape[0], min(batch_size, data.shape[0]), generator, data.device)
    desc = f"fit {type(objective).__name__}"
    with tqdm(total=n_steps, desc=desc, leave=False, disable=not progress) as bar:
        for step, idx in zip(range(1, n_steps + 1), batches, strict=False):
            try:
                terms = _step(energy, objective, optimizer, data[idx],
                              None if context is None else context[idx], generator)
            except NonFiniteError as err:
                what = f"training stopped at step {step} of {n_steps}: {err}"
                raise _restored(energy, optimizer, good, what) from err
            if step % guard_every == 0:
                good = _snapshot(energy, optimizer, step)
            stop = False
            if step % log_every == 0 or step == n_steps:
                metrics = {"step": float(step), **{f"train/{k}": float(v.detach()) for k, v in terms.items()},
                           **(getattr(objective, "diagnostics", {}) or {})}
                history.append(metrics)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4g}")
                stop = callback is not None and bool(callback(step, metrics))
            bar.update(1)
            if checkpoint is not None and (stop or step % every == 0 or step == n_steps):
                _save(checkpoint, energy, optimizer, step)
            if stop:
                break
    return history
