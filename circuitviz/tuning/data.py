"""The data of a tuning run and which batch each optimizer step reads.

* train: ``n_train`` examples of the task's train split; step t (1-based) reads batch
  ``(t - 1) % n_batches`` of epoch ``(t - 1) // n_batches``, in an order shuffled by (seed, epoch).
  A step's batch is therefore a pure function of the step number, which makes resuming exact.
  The last incomplete batch of an epoch is dropped so that every step sees ``batch_size`` rows.
* dev: ``n_dev`` examples of the dev split, for accuracy and the task metric every E steps.
* probe: the first ``n_probe`` dev examples, fixed for the whole run, so that circuit snapshots are
  comparable across steps; ``probe_original`` is the same for the task's original task (the
  "before" circuit, e.g. sv-agreement for sv-disagreement).
* heldout: general text no task uses, for the held-out language-model loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.tasks import TaskBatch, TaskData, build_task_data, get_task, heldout_texts
from circuitviz.tasks.data import is_task_file
from circuitviz.tuning.config import TuneConfig


@dataclass(frozen=True, kw_only=True)
class TuningData:
    task: str
    original_task: str
    train: TaskData = field(repr=False)
    dev: TaskData = field(repr=False)
    probe: TaskBatch = field(repr=False)
    probe_original: TaskBatch = field(repr=False)
    heldout: tuple[str, ...] = field(repr=False)
    batch_size: int

    @property
    def n_batches(self) -> int:
        """Optimizer steps per epoch."""
        return len(self.train) // self.batch_size

    def total_steps(self, config: TuneConfig) -> int:
        return config.steps if config.steps is not None else config.epochs * self.n_batches

    def batch_for_step(self, step: int, seed: int) -> TaskBatch:
        """The training batch of optimizer step ``step`` (1-based)."""
        epoch, index = divmod(step - 1, self.n_batches)
        generator = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(self.train), generator=generator)
        rows = order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.train.batch.select(rows.to(self.train.batch.device))


def build_tuning_data(model, task: str, config: TuneConfig) -> TuningData:
    """Draw and tokenize everything a run reads: a built-in task or a .jsonl file of the user's
    own pairs (whose "before" circuit is its own). Raises ValueError for an unknown task or too
    little data for one batch."""
    original = task if is_task_file(task) else (get_task(task).original_task or task)
    tokenizer, device = model.tokenizer, model.device
    common = {"seed": config.seed, "device": device, "max_length": model.info.n_ctx or None}
    train = build_task_data(task, tokenizer, split="train", n=config.n_train, **common)
    dev = build_task_data(task, tokenizer, split="dev", n=config.n_dev, **common)
    if len(train) < config.batch_size:
        raise ValueError(
            f"task {task!r} has {len(train)} usable training examples for this tokenizer, fewer "
            f"than one batch of {config.batch_size}; lower --batch-size or raise --n-train"
        )
    if len(dev) == 0:
        raise ValueError(f"task {task!r} has no usable dev examples for this tokenizer")
    n_probe = min(config.n_probe, len(dev))
    probe = dev.batch.select(torch.arange(n_probe, device=device))
    if original == task:
        probe_original = probe
    else:
        original_dev = build_task_data(original, tokenizer, split="dev", n=config.n_probe, **common)
        probe_original = original_dev.batch
    return TuningData(
        task=task,
        original_task=original,
        train=train,
        dev=dev,
        probe=probe,
        probe_original=probe_original,
        heldout=tuple(heldout_texts(config.n_heldout, seed=config.seed)),
        batch_size=config.batch_size,
    )
