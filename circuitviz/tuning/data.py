"""The data of a tuning run and which batch each optimizer step reads.

* train: ``n_train`` examples of the task's train split; step t (1-based) reads batch
  ``(t - 1) % n_batches`` of epoch ``(t - 1) // n_batches``, in an order shuffled by (seed, epoch).
  A step's batch is therefore a pure function of the step number, which makes resuming exact.
  The last incomplete batch of an epoch is dropped so that every step sees ``batch_size`` rows.
* dev: ``n_dev`` examples of the dev split, for accuracy and the task metric every E steps.
* probe: the first ``n_probe`` dev examples, fixed for the whole run, so that circuit snapshots are
  comparable across steps; ``probe_original`` is the same for the task's original task (the
  "before" circuit, e.g. sv-agreement for sv-disagreement).
* heldout: general text no task uses, for the held-out language-model loss: real English (the
  Python documentation's prose) for real models, the demo corpus's filler for the demo model
  (``circuitviz.tasks.heldout_corpus``; ``heldout_source`` names which).

An instruction (SFT) task draws its train and dev examples with ``build_sft_data`` (through the
chat template, labels masked on the prompt); ``--eval`` may take the dev examples from another task
spec. It has no original task: its "before" circuit is its own on the untouched model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from circuitviz.tasks import TaskBatch, TaskData, build_task_data, get_task, heldout_corpus
from circuitviz.tasks.data import is_task_file
from circuitviz.tuning.config import TuneConfig


@dataclass(frozen=True, kw_only=True)
class TuningData:
    task: str
    original_task: str
    train: TaskData = field(repr=False)  # or SFTData for an instruction task
    dev: TaskData = field(repr=False)
    probe: TaskBatch = field(repr=False)  # or SFTBatch
    probe_original: TaskBatch = field(repr=False)
    heldout: tuple[str, ...] = field(repr=False)
    heldout_source: dict = field(default_factory=dict)  # which text (HeldoutCorpus.describe())
    batch_size: int

    @property
    def kind(self) -> str:
        """``pairs`` or ``sft``: which loss, evaluation and metric the run uses."""
        return getattr(self.train.batch, "kind", "pairs")

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
    """Draw and tokenize everything a run reads: a built-in task, a .jsonl file of the user's own
    pairs (whose "before" circuit is its own), or an instruction task (``arithmetic``,
    ``sft:FILE``, ``hf:DATASET``). Raises ValueError for an unknown task or too little data for
    one batch."""
    from circuitviz.tasks.catalog import task_kind

    if task_kind(task) == "sft":
        return _sft_data(model, task, config)
    if config.eval_task is not None:
        raise ValueError(
            "--eval takes an instruction task's dev data (sft:FILE, hf:...); a pair task is "
            "scored on its own dev split"
        )
    return _pair_data(model, task, config)


def _sft_data(model, task: str, config: TuneConfig) -> TuningData:
    """An instruction task: train and dev examples through the chat template, the probe batch the
    circuit snapshots score (answers located, for the ``outcome`` metric), the held-out text."""
    from circuitviz.tasks import build_sft_data

    _refuse_pair_options(config)
    common = {
        "seed": config.seed,
        "fmt": config.sft_format().within_context(model.info.n_ctx),
        "fields": config.sft_fields(),
        "device": model.device,
    }
    train = build_sft_data(task, model.tokenizer, split="train", n=config.n_train, **common)
    if config.eval_task is None:
        dev = build_sft_data(task, model.tokenizer, split="dev", n=config.n_dev, **common)
    else:
        dev = build_sft_data(
            config.eval_task, model.tokenizer, split="all", n=config.n_dev, **common
        )
    if config.attribution.metric == "outcome":
        train, dev = train.with_located_answers(), dev.with_located_answers()
    return _assemble(model, task, task, train, dev, None, config)


def _refuse_pair_options(config: TuneConfig) -> None:
    """Options that read a pair task's one answer token have nothing to read in an instruction
    task: refuse them by name rather than ignore them."""
    pair_only = {
        "answer_swap": config.answer_swap != 0.0,
        "debias_beta": config.debias_beta != 0.0,
        "loss": config.loss != "lm",
        "circuit_forward": config.circuit_forward,
    }
    used = [name for name, on in pair_only.items() if on]
    if used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise ValueError(
            f"{flags} read a pair task's answer token; an instruction task trains on its whole "
            "response (drop them, or use a pair task)"
        )


def _check_sizes(task: str, train, dev, config: TuneConfig) -> None:
    if len(train) < config.batch_size:
        raise ValueError(
            f"task {task!r} has {len(train)} usable training examples for this tokenizer, fewer "
            f"than one batch of {config.batch_size}; lower --batch-size"
            + (
                f" or raise --n-train (now {config.n_train})"
                if len(train) >= config.n_train
                else f" (only {len(train)} of the {config.n_train} asked for are usable: the task "
                "has no more, or this tokenizer cannot read the rest)"
            )
        )
    if len(dev) == 0:
        raise ValueError(f"task {task!r} has no usable dev examples for this tokenizer")


def _pair_data(model, task: str, config: TuneConfig) -> TuningData:
    """Draw and tokenize everything a run reads: a built-in task or a .jsonl file of the user's
    own pairs (whose "before" circuit is its own). Raises ValueError for an unknown task or too
    little data for one batch."""
    original = task if is_task_file(task) else (get_task(task).original_task or task)
    tokenizer, device = model.tokenizer, model.device
    common = {"seed": config.seed, "device": device, "max_length": model.info.n_ctx or None}
    train = build_task_data(task, tokenizer, split="train", n=config.n_train, **common)
    dev = build_task_data(task, tokenizer, split="dev", n=config.n_dev, **common)
    original_probe = None
    if original != task:
        original_dev = build_task_data(original, tokenizer, split="dev", n=config.n_probe, **common)
        original_probe = original_dev.batch
    return _assemble(model, task, original, train, dev, original_probe, config)


def _assemble(model, task, original, train, dev, original_probe, config: TuneConfig) -> TuningData:
    """The run's data once its examples are drawn: the size check, the fixed probe batch (the
    first ``n_probe`` dev examples) and the held-out text."""
    _check_sizes(task, train, dev, config)
    probe = dev.batch.select(torch.arange(min(config.n_probe, len(dev)), device=model.device))
    corpus = heldout_corpus(model.tokenizer, config.n_heldout, seed=config.seed)
    return TuningData(
        task=task,
        original_task=original,
        train=train,
        dev=dev,
        probe=probe,
        probe_original=probe if original_probe is None else original_probe,
        heldout=corpus.texts,
        heldout_source=corpus.describe(),
        batch_size=config.batch_size,
    )
