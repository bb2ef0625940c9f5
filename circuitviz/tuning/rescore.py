"""Re-scoring a finished (or stopped) run's checkpoints, with a noise floor for its edge scores.

The paper's "Hebbian" analysis re-discovers circuits at saved checkpoints. For each checkpoint
(and the untouched model as step 0):

1. load its weights on top of the untouched model (a checkpoint holds every tensor the run trains;
   the rest never moved);
2. score every edge on one fixed probe set of ``probe_size`` dev examples, and store it as a
   "during" snapshot (note "rescore") together with its selection at the run's N;
3. score the edges on ``resamples`` probe sets of the same size drawn at random from a larger dev
   pool; their per-edge standard deviation is the noise floor: score changes smaller than it are
   indistinguishable from the choice of probe examples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map
from circuitviz.runs import Run, RunWriter
from circuitviz.runs.checkpoints import load_tensors
from circuitviz.tasks import build_task_data
from circuitviz.tuning.records import snapshot_scores
from circuitviz.tuning.storage import config_from_run

log = logging.getLogger(__name__)


def rescore_run(
    model,
    run: Run,
    *,
    probe_size: int | None = None,
    resamples: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Rescore every checkpoint of ``run`` with ``model`` (the run's model, untouched). Returns the
    steps rescored. ``progress(done, total)`` after each one."""
    config = config_from_run(run.config)
    n = probe_size if probe_size is not None else config.n_probe
    if n < 1 or resamples < 0:
        raise ValueError(f"probe size must be >= 1 and resamples >= 0, got {n}, {resamples}")
    graph = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups)
    if graph.edge_names() != run.edge_names():
        raise ValueError(f"run {run.id} was recorded on a different graph than {model.spec}'s")
    params = build_param_map(model, graph).params
    pool = build_task_data(
        run.task,
        model.tokenizer,
        split="dev",
        n=max(config.n_dev, 4 * n),
        seed=config.seed,
        device=model.device,
    )
    fixed = pool.batch.select(torch.arange(min(n, len(pool)), device=model.device))
    generator = torch.Generator().manual_seed(config.seed + 1)
    resampled = [
        pool.batch.select(torch.randperm(len(pool), generator=generator)[:n].to(model.device))
        for _ in range(resamples)
    ]
    steps = [0] + [step for step, _ in run.checkpoints()]
    merger = None
    if config.adapters:
        from circuitviz.tuning.lora import AdapterMerger

        merger = AdapterMerger(model, config.lora_alpha / config.lora_rank)
    writer = RunWriter.resume(run.dir, mark_running=False)
    try:
        for done, step in enumerate(steps, start=1):
            if step > 0:
                load_checkpoint_weights(params, run, step, merger)
            scores, selected = snapshot_scores(model, graph, fixed, config.top_n, config)
            writer.add_snapshot(step, "during", run.task, scores, selected, note="rescore")
            writer.add_noise_floor(step, "fixed", scores)
            if resamples:
                stack = torch.stack(
                    [snapshot_scores(model, graph, b, config.top_n, config)[0] for b in resampled]
                )
                writer.add_noise_floor(
                    step,
                    f"resample-{resamples}",
                    stack.mean(0),
                    stack.std(0, unbiased=resamples > 1),
                )
            if progress is not None:
                progress(done, len(steps))
    finally:
        writer.close()
    return steps


def load_checkpoint_weights(params: dict, run: Run, step: int, merger=None) -> None:
    """A checkpoint's tensors onto the model; a LoRA run's adapters merged onto the untouched
    weights by ``merger`` (``lora.AdapterMerger``, which keeps them)."""
    from circuitviz.tuning.lora import split_adapters

    paths = dict(run.checkpoints())
    tensors, pairs = split_adapters(
        {
            k.removeprefix("param/"): v
            for k, v in load_tensors(paths[step]).items()
            if k.startswith("param/")
        }
    )
    with torch.no_grad():
        for key, value in tensors.items():
            params[key].copy_(value)
    if pairs:
        merger.apply(pairs)
