"""``run:RUN`` and ``run:RUN@STEP`` model specs: a tuning run's weights, wherever a model is taken.

1. Find the run (an id under the run roots: ``runs_dir``, else ``$CIRCUITVIZ_RUNS`` or ``./runs``,
   then the bundled demo runs; or a run directory's path).
2. Choose the checkpoint: ``@STEP`` names one; without it, the run's final weights, which a finished
   run checkpoints at its last step. An unfinished run, or a step without a checkpoint, is an error
   that lists the steps that have one.
3. Load the model the run tuned (its stored model spec, itself possibly a ``run:`` spec, and dtype),
   then copy the checkpoint's ``param/<name>`` tensors into it. A checkpoint holds the tensors the
   run could change (slimmed checkpoints only the changed ones); everything else is the base model's.
   A LoRA or circuit-LoRA run's checkpoint holds adapter factors instead (``<weight>:lora_A`` and
   ``:lora_B``): they are merged into the base weights at the run's scale, alpha / rank.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

PREFIX = "run:"
_STEP = re.compile(r"^(?P<run>.+?)@(?P<step>\d+)$")
MAX_DEPTH = 8


@dataclass(frozen=True, kw_only=True)
class RunWeights:
    """Where a ``run:`` spec's weights come from."""

    run_id: str
    run_dir: Path
    base_spec: str
    dtype: str | None
    step: int
    checkpoint: Path
    lora_scale: float | None = None  # alpha / rank of a LoRA or circuit-LoRA run


def _error(message: str):
    from circuitviz.models.loader import ModelLoadError

    return ModelLoadError(message)


def parse_run_spec(spec: str) -> tuple[str, int | None]:
    """``run:ID`` -> (ID, None); ``run:ID@STEP`` -> (ID, STEP)."""
    rest = spec.removeprefix(PREFIX).strip()
    if not rest:
        raise _error("empty run spec: use run:RUN_ID or run:RUN_ID@STEP (circuitviz runs list)")
    match = _STEP.match(rest)
    return (match["run"], int(match["step"])) if match else (rest, None)


def resolve_run_spec(spec: str, runs_dir: str | Path | None = None) -> RunWeights:
    """The run and checkpoint a ``run:`` spec names (see the module docstring)."""
    from circuitviz.runs import RunNotFound, RunStore, RunStoreError

    run_id, step = parse_run_spec(spec)
    try:
        run = RunStore.default(runs_dir).open(run_id)
    except RunNotFound as exc:
        raise _error(f"{spec}: {exc}") from exc
    except RunStoreError as exc:
        raise _error(f"{spec}: the run cannot be read ({exc})") from exc
    checkpoints = dict(run.checkpoints())
    steps = sorted(checkpoints)
    if not steps:
        raise _error(
            f"{spec}: run {run.id!r} (status {run.status!r}) has no checkpoint, so its weights "
            "cannot be loaded; runs save checkpoints every --checkpoint-every steps and at the end"
        )
    listing = f"steps with a checkpoint: {steps}"
    if step is None:
        last = run.summary.get("n_steps")
        if run.status != "finished" or (last is not None and steps[-1] != last):
            raise _error(
                f"{spec}: run {run.id!r} has no final weights (status {run.status!r}; {listing}); "
                f"name a checkpoint with run:{run_id}@STEP"
            )
        step = steps[-1]
    elif step not in checkpoints:
        raise _error(f"{spec}: run {run.id!r} has no checkpoint at step {step}; {listing}")
    base = run.config.get("model") or run.model_spec
    if not base:
        raise _error(f"{spec}: run {run.id!r} does not record which model it tuned")
    dtype = run.config.get("dtype")
    lora_scale = None
    if run.config.get("method") in ("lora", "circuit-lora"):
        lora_scale = float(run.config["lora_alpha"]) / float(run.config["lora_rank"])
    return RunWeights(
        run_id=run.id,
        run_dir=run.dir,
        base_spec=base,
        dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        step=step,
        checkpoint=checkpoints[step],
        lora_scale=lora_scale,
    )


def apply_checkpoint(model, checkpoint: Path, *, lora_scale: float | None = None) -> int:
    """Copy a checkpoint's ``param/<name>`` tensors into ``model`` (merging adapter factors at
    ``lora_scale``); returns how many tensors were read. A name the model does not have is an
    error (the checkpoint belongs to another architecture)."""
    from circuitviz.models.params import canonical_name
    from circuitviz.runs.checkpoints import load_tensors
    from circuitviz.tuning.lora import AdapterMerger, split_adapters

    if not Path(checkpoint).is_file():
        raise _error(f"checkpoint file {checkpoint} is missing")
    stored = load_tensors(Path(checkpoint))
    try:
        tensors, pairs = split_adapters(
            {k.removeprefix("param/"): v for k, v in stored.items() if k.startswith("param/")}
        )
    except ValueError as exc:
        raise _error(f"{checkpoint}: {exc}") from exc
    params = {canonical_name(name): p for name, p in model.bridge.named_parameters()}
    unknown = [name for name in tensors if name not in params]
    if unknown:
        raise _error(
            f"{checkpoint}: tensors {unknown[:3]} are not parameters of the model it names"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            param = params[name]
            if value.shape != param.shape:
                raise _error(
                    f"{checkpoint}: param/{name} has shape {tuple(value.shape)}, the model's "
                    f"{tuple(param.shape)}"
                )
            param.copy_(value.to(param.device, param.dtype))
    if pairs:
        if lora_scale is None:
            raise _error(
                f"{checkpoint} holds LoRA adapters but its run records no lora_alpha and lora_rank"
            )
        try:
            AdapterMerger(model, lora_scale).apply(pairs)
        except ValueError as exc:
            raise _error(f"{checkpoint}: {exc}") from exc
    return len(tensors) + 2 * len(pairs)
