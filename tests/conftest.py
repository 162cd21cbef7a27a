"""Suite-wide settings: one torch thread (small networks on 2 cores are fastest and most
repeatable that way) and W&B kept off the network."""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
