"""Suite-wide settings: one torch thread (small networks on 2 cores are fastest and most
repeatable that way) and W&B kept off the network."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one torch thread and leaves the setting as it found it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
