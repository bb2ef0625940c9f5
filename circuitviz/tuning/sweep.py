"""A sweep over the circuit size N: the paper's node-level intrinsic-dimension curve.

1. Keep a copy of the loaded model's weights.
2. For each N, in order: put the copy back, run ``run_tuning`` with ``top_n = N`` as its own run
   (kind "tune"), every run sharing one ``sweep_id``.
3. Return one row per N: final task metric and accuracy, mean circuit nodes, mean tuned-parameter
   ratio, final held-out LM loss, and the run id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from circuitviz.graph.topology import graph_for
from circuitviz.runs import fields as run_fields
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.loop import Progress, run_tuning
from circuitviz.tuning.storage import check_sizes, create_run

SWEEP_KEYS = (
    "final_task_metric",
    "final_accuracy",
    "mean_nodes",
    "tuned_param_ratio",
    "final_lm_loss",
    "base_lm_loss",
)


def new_sweep_id(task: str) -> str:
    return run_fields.new_run_id("sweep", task)


def run_sweep(
    model,
    task: str,
    config: TuneConfig,
    top_ns: list[int],
    root: str | Path,
    *,
    sweep_id: str | None = None,
    progress: Callable[[int], Progress | None] | None = None,
    on_start: Callable[[int, str, Path], None] | None = None,
) -> tuple[str, list[dict]]:
    """Run one tuning run per N in ``top_ns``; returns (sweep_id, rows). ``progress(n)`` gives the
    step callback for N's run; ``on_start(n, run_id, run_dir)`` is called when N's run is created."""
    if not top_ns:
        raise ValueError("a sweep needs at least one N")
    if not config.discovers:
        raise ValueError(
            f"a sweep varies the circuit size N, which --method {config.method} does not use "
            "(it trains everything): use --method circuit, random or circuit-lora"
        )
    configs = [dataclasses.replace(config, top_n=n) for n in top_ns]  # validates every N first
    n_edges = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups).n_edges
    for run_config in configs:
        check_sizes(run_config, n_edges)
    sweep_id = sweep_id or new_sweep_id(task)
    initial = {name: p.detach().clone() for name, p in model.bridge.named_parameters()}
    rows = []
    for n, run_config in zip(top_ns, configs):
        with torch.no_grad():
            for name, param in model.bridge.named_parameters():
                param.copy_(initial[name])
        writer = create_run(model, task, run_config, root, sweep_id=sweep_id)
        if on_start is not None:
            on_start(n, writer.run_id, writer.dir)
        with writer:
            result = run_tuning(
                model, task, run_config, writer, progress=progress(n) if progress else None
            )
        rows.append(
            {
                "top_n": n,
                **{key: result.summary.get(key) for key in SWEEP_KEYS},
                "run_id": result.run_id,
            }
        )
    with torch.no_grad():
        for name, param in model.bridge.named_parameters():
            param.copy_(initial[name])
    return sweep_id, rows
