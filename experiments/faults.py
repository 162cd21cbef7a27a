"""What keeps an `ebrl train` run alive: periodic checkpoints, SIGINT/SIGTERM, failing environments.

- :class:`CheckpointCallback` writes a resumable checkpoint every ``every`` env steps and when a stop
  is requested. It saves at the start of a rollout (after the previous update, before the next env
  step), the one point where model, replay buffer, envs and RNGs are mutually consistent, so a run
  resumed from it repeats exactly what the uninterrupted run would have done.
- :func:`stop_on_signals` turns the first SIGINT/SIGTERM into a stop request (checkpoint at the next
  safe point, then a clean exit); a second SIGINT interrupts at once.
- :class:`EnvFailureReporter` wraps each env so that an exception in ``step``/``reset`` becomes an
  :class:`EnvFailure` naming the env, its step count and the exception.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback

from ebrl.experiments.checkpoints import CheckpointDir, save_training_checkpoint


class EnvFailure(RuntimeError):
    """An environment raised during ``step`` or ``reset``."""

    def __init__(self, env_index: int, env_id: str, method: str, env_step: int, exc: BaseException) -> None:
        self.env_index, self.env_id, self.method, self.env_step, self.exc = (
            env_index,
            env_id,
            method,
            env_step,
            exc,
        )
        super().__init__(
            f"env {env_index} ({env_id}) raised {type(exc).__name__}: {exc} in {method}() "
            f"at its step {env_step}"
        )


class EnvFailureReporter(gym.Wrapper):
    """Re-raise any exception of the wrapped env's ``step``/``reset`` as an :class:`EnvFailure`."""

    def __init__(self, env: gym.Env, env_index: int, env_id: str) -> None:
        super().__init__(env)
        self.env_index, self.env_id, self.env_steps = env_index, env_id, 0

    def step(self, action: Any) -> Any:
        try:
            out = self.env.step(action)
        except Exception as exc:
            raise EnvFailure(self.env_index, self.env_id, "step", self.env_steps, exc) from exc
        self.env_steps += 1
        return out

    def reset(self, **kwargs: Any) -> Any:
        try:
            return self.env.reset(**kwargs)
        except Exception as exc:
            raise EnvFailure(self.env_index, self.env_id, "reset", self.env_steps, exc) from exc


class StopRequest:
    """A flag set by a signal handler (or by code) and read by :class:`CheckpointCallback`."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[StopRequest]:
    """Within the block the first SIGINT/SIGTERM sets ``stop``; a second SIGINT raises KeyboardInterrupt.
    Outside the main thread (e.g. a sweep trial) signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signal = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class CheckpointCallback(BaseCallback):
    """Resumable checkpoints every ``every`` env steps (0: only on a stop request).

    Args:
        directory: the run's checkpoint folder.
        every: env steps between checkpoints.
        stop: a :class:`StopRequest`; once set, the next safe point writes a checkpoint and stops.
        extra: returns JSON-able data stored with each checkpoint (other callbacks' state, W&B id).
    """

    def __init__(
        self,
        directory: CheckpointDir,
        every: int,
        stop: StopRequest,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.directory, self.every, self.stop, self.extra = directory, every, stop, extra
        self.last: Path | None = None
        self.last_step = -1
        self.stopped = False

    def _init_callback(self) -> None:
        self.last_step = self.model.num_timesteps  # the state we started from is already on disk

    def save(self, env_state: bool = True) -> Path:
        self.last = save_training_checkpoint(
            self.model, self.directory, self.extra() if self.extra else None, env_state=env_state
        )
        self.last_step = self.model.num_timesteps
        return self.last

    def _on_rollout_start(self) -> None:
        steps = self.model.num_timesteps
        due = self.every > 0 and steps // self.every > self.last_step // self.every
        if self.stop:
            if steps != self.last_step or self.last is None:
                self.save()
            self.stopped = True
        elif due:
            self.save()

    def _on_step(self) -> bool:
        return not self.stopped
