"""The tensors, gradients and masks of the sharded-optimizer test (``tests/test_shards.py``),
shared by the worker processes and the one-process oracle."""

from __future__ import annotations

import torch

from circuitviz.tuning.config import TuneConfig

CONFIG = TuneConfig(optimizer="adamw", lr=0.01, weight_decay=0.1)
STEPS = 3


def case() -> tuple[dict, dict, dict]:
    """(tensors, gradients per step, (mask dim, keep) per tensor). 7 rows split over 2 processes
    is uneven (4 + 3), 1 row leaves one process empty; one mask cuts rows (the split dimension),
    one cuts columns."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "weight": torch.randn(7, 5, generator=g),
        "proj": torch.randn(7, 6, generator=g),
        "tiny": torch.randn(1, 3, generator=g),  # one row: the second process holds none
    }
    grads = {
        name: [torch.randn(value.shape, generator=g) for _ in range(STEPS)]
        for name, value in tensors.items()
    }
    keeps = {
        "weight": (0, torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)),
        "proj": (1, torch.tensor([0, 1, 1, 0, 0, 1], dtype=torch.bool)),
        "tiny": (0, torch.tensor([1], dtype=torch.bool)),
    }
    return tensors, grads, keeps
