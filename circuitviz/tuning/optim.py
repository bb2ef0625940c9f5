"""An optimizer that updates only a trainable set of parameter entries and leaves every other entry
bit-identical, momentum and weight decay included.

Zeroing the gradient of frozen entries is not enough: SGD's momentum buffer keeps moving them and
weight decay shrinks them (the circuit-tuning paper's code leaks there). So each step:

1. tensors with nothing trainable get ``grad = None``, which PyTorch's optimizers skip entirely
   (no decay, no momentum, no state change);
2. for tensors that are partly trainable, the frozen rows of the parameter and of every optimizer
   state tensor of the same shape (momentum buffer, Adam moments) are copied aside;
3. the ordinary ``torch.optim`` step runs, weight decay and all;
4. the copied rows are written back. Frozen entries are therefore unchanged bit for bit, and their
   optimizer state is frozen with them (it resumes where it stopped when they are selected again).
   Adam's per-tensor step count is shared by a tensor's rows and keeps counting.

With every entry trainable, step 2 and 4 do nothing and the step *is* the plain ``torch.optim``
step, which is what the oracle test checks.

Sharded parameters (``--shard fsdp``) work the same way on each process's own rows
(``shards.local_rows``); the gradient norm for clipping is summed across processes.
"""

from __future__ import annotations

import math

import torch

from circuitviz.models import shards
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.masks import Masks


def build_torch_optimizer(params: list[torch.nn.Parameter], config: TuneConfig):
    """The plain optimizer ``config`` asks for (also the oracle of the masked one)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_at(step: int, config: TuneConfig) -> float:
    """Learning rate of optimizer step ``step`` (1-based): linear warm-up over ``warmup_steps``,
    reaching the full rate at step ``warmup_steps`` (unlike the paper, never 0 at the first step)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * step / config.warmup_steps
    return config.lr


class MaskedOptimizer:
    """``torch.optim`` SGD or AdamW over named parameters, stepping only a trainable set."""

    def __init__(self, params: dict[str, torch.nn.Parameter], config: TuneConfig) -> None:
        self.params = dict(params)
        self.inner = build_torch_optimizer(list(self.params.values()), config)

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    @torch.no_grad()
    def clip_grad_norm(self, masks: Masks, max_norm: float) -> float:
        """Zero the gradients of frozen entries, then clip the trainable ones' global norm."""
        grads = []
        for name, mask in masks.items():
            grad = self.params[name].grad
            if grad is None:
                continue
            if mask is not None:
                block, rows = shards.local_rows(grad, mask.dim)
                block.mul_(_keep_view(mask.keep[rows], mask.dim, block.ndim))
            grads.append(grad)
        if not grads:
            return 0.0
        if any(shards.is_sharded(g) for g in grads):  # summed across processes
            norm = float(shards.squared_norm(grads).sqrt())
        else:
            norm = float(
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            )
        scale = max_norm / (norm + 1e-6)
        if scale < 1.0:
            for grad in grads:
                grad.mul_(scale)
        return norm

    @torch.no_grad()
    def step(self, masks: Masks, lr: float) -> None:
        """One update of the entries in ``masks`` (see the module docstring)."""
        for group in self.inner.param_groups:
            group["lr"] = lr
        for name, param in self.params.items():
            if name not in masks:
                param.grad = None
        saved = []
        for name, mask in masks.items():
            if mask is None:
                continue
            param = self.params[name]
            if param.grad is None:
                continue
            # Plain tensors are their own block; a sharded one's block is this process's rows.
            block, rows = shards.local_rows(param, mask.dim)
            frozen = (~mask.keep[rows]).nonzero()[:, 0].to(block.device)
            state = {
                key: shards.local_rows(value, mask.dim)[0]
                for key, value in self.inner.state.get(param, {}).items()
                if torch.is_tensor(value) and value.shape == param.shape
            }
            kept_state = {key: value.index_select(mask.dim, frozen) for key, value in state.items()}
            saved.append(
                (param, mask.dim, frozen, block.index_select(mask.dim, frozen), kept_state)
            )
        self.inner.step()
        for param, dim, frozen, values, kept_state in saved:
            shards.local_rows(param, dim)[0].index_copy_(dim, frozen, values)
            for key, value in self.inner.state[param].items():
                if not (torch.is_tensor(value) and value.shape == param.shape):
                    continue
                block = shards.local_rows(value, dim)[0]
                if key in kept_state:
                    block.index_copy_(dim, frozen, kept_state[key])
                else:  # state created by this very step: frozen rows start from zero
                    block.index_fill_(dim, frozen, 0)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Optimizer state as flat tensors (``optim/<param>/<key>``) plus the non-tensor part."""
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, dict] = {}
        for name, param in self.params.items():
            for key, value in self.inner.state.get(param, {}).items():
                if torch.is_tensor(value):
                    tensors[f"optim/{name}/{key}"] = (
                        shards.whole(value, cpu=True).clone().contiguous()
                    )
                else:
                    scalars.setdefault(name, {})[key] = value
        return tensors, {"scalars": scalars}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        """Inverse of ``state_tensors``."""
        self.inner.state.clear()
        for key, value in tensors.items():
            if not key.startswith("optim/"):
                continue
            name, _, field = key.removeprefix("optim/").rpartition("/")
            if name not in self.params:
                raise ValueError(f"checkpoint has optimizer state for unknown parameter {name!r}")
            param = self.params[name]
            # Adam's step counter is a 0-dim tensor that PyTorch keeps on the CPU.
            if value.ndim:
                self.inner.state[param][field] = shards.like(param, value)
            else:
                self.inner.state[param][field] = value.clone()
        for name, values in extra.get("scalars", {}).items():
            self.inner.state[self.params[name]].update(values)


def _keep_view(keep: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """``keep`` (bool, one per row along ``dim``) shaped to broadcast over a tensor of ``ndim``."""
    view = [1] * ndim
    view[dim] = keep.numel()
    return keep.view(view)


def check_finite(value: float, what: str, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLoss(
            f"{what} became {value} at step {step}: training diverged. Lower --lr, set --grad-clip, "
            "or use --optimizer adamw; every step before this one is kept in the run."
        )


class NonFiniteLoss(ArithmeticError):
    """The training loss (or a gradient norm) became NaN or infinite."""
