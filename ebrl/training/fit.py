"""The training loop: batching, optimiser, progress bar, metrics hook, checkpoints, divergence guard."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ebrl._validation import check_finite, check_int, check_positive_float, check_tensor
from ebrl.atomic import atomic_write
from ebrl.errors import NonFiniteError, first_non_finite

MetricsHook = Callable[[int, dict[str, float]], bool | None]


class Objective(Protocol):
    """What :func:`fit` needs: named loss terms for a batch (``"loss"`` is minimised)."""

    diagnostics: dict[str, float]

    def loss(
        self, energy: Any, x: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]: ...


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
    progress: bool = False,
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
        progress: show a tqdm progress bar.

    Returns:
        The list of recorded metrics dicts (each with ``"step"``).
    """
    if not isinstance(energy, nn.Module) or not any(True for _ in energy.parameters()):
        raise TypeError(f"energy must be an nn.Module with parameters, got {type(energy).__name__}")
    if not callable(getattr(objective, "loss", None)):
        raise TypeError(
            f"objective must have a loss(energy, x, context, generator) method, got {objective!r}"
        )
    data, context = _check_data(energy, data, context)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    log_every = check_int("log_every", log_every, minimum=1)
    guard_every = check_int("guard_every", guard_every, minimum=1)
    if checkpoint_every is not None:
        checkpoint_every = check_int("checkpoint_every", checkpoint_every, minimum=1)
    if optimizer is None:
        lr = check_positive_float("lr", lr)
        weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
        optimizer = torch.optim.AdamW(energy.parameters(), lr=lr, weight_decay=weight_decay)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch Optimizer or None, got {type(optimizer).__name__}")

    n = data.shape[0]
    batch_size = min(batch_size, n)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"fit {type(objective).__name__}", leave=False)
    good = (0, copy.deepcopy(energy.state_dict()), copy.deepcopy(optimizer.state_dict()))
    history: list[dict[str, float]] = []
    perm, pos = torch.randperm(n, generator=generator), 0
    for step in range(1, n_steps + 1):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=generator), 0
        idx = perm[pos : pos + batch_size].to(data.device)
        pos += batch_size
        try:
            terms = objective.loss(energy, data[idx], None if context is None else context[idx], generator)
            loss = terms["loss"]
            if first_non_finite(loss=loss) is not None:
                raise NonFiniteError(f"the loss is {float(loss.detach())}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        except NonFiniteError as err:
            energy.load_state_dict(good[1])
            optimizer.load_state_dict(good[2])
            if bar is not None:
                bar.close()
            raise NonFiniteError(
                f"training stopped at step {step} of {n_steps}: {err}. Parameters and optimiser state "
                f"were restored from step {good[0]}, the last good snapshot"
            ) from err
        if step % guard_every == 0:
            good = (step, copy.deepcopy(energy.state_dict()), copy.deepcopy(optimizer.state_dict()))
        stop = False
        if step % log_every == 0 or step == n_steps:
            metrics = {"step": float(step)}
            metrics.update({f"train/{k}": float(v.detach()) for k, v in terms.items()})
            metrics.update(getattr(objective, "diagnostics", {}) or {})
            history.append(metrics)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['train/loss']:.4g}")
            if callback is not None:
                stop = bool(callback(step, metrics))
        if bar is not None:
            bar.update(1)
        due = stop or step == n_steps or (checkpoint_every is not None and step % checkpoint_every == 0)
        if checkpoint is not None and due:
            state = {"energy": energy.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            # Atomic: a crash while saving leaves the previous checkpoint, never a truncated file.
            atomic_write(checkpoint, lambda f, state=state: torch.save(state, f))
        if stop:
            break
    if bar is not None:
        bar.close()
    return history
