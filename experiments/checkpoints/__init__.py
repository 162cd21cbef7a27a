"""Resumable checkpoints of an ``ebrl train`` run, the one place for run persistence.

- :mod:`ebrl.experiments.checkpoints.directory`: the run's ``checkpoints/`` folder (:class:`CheckpointDir`:
  atomic checkpoint directories, the ``latest`` pointer, ``state.json``'s format);
- :mod:`ebrl.experiments.checkpoints.state`: what goes in a checkpoint so that a run continues bit for
  bit (model, optimisers, replay buffer, RNG states, counters, envs) and how it is put back.

Written by :class:`ebrl.experiments.faults.CheckpointCallback`, read by ``ebrl train --resume``
(:func:`ebrl.experiments.train.resume`). The model file ``model.zip`` is the agents' own format
(:mod:`ebrl.agents.common.safe_load`).
"""

from ebrl.experiments.checkpoints.directory import CheckpointDir, CheckpointError
from ebrl.experiments.checkpoints.state import load_training_checkpoint, restore, save_training_checkpoint

__all__ = [
    "CheckpointDir",
    "CheckpointError",
    "load_training_checkpoint",
    "restore",
    "save_training_checkpoint",
]
