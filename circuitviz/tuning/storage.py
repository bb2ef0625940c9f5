"""How a tuning run is recorded: its stored config, its graph description and its creation.

The stored config is every ``TuneConfig`` field plus the task, model spec and dtype, so that
``tune --resume`` rebuilds exactly the same run from the store alone.
"""

from __future__ import annotations

from pathlib import Path

from circuitviz.graph.selection import check_fits
from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map
from circuitviz.runs import RunWriter
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.masks import build_mask_bank


def graph_meta(graph, n_model_params: int) -> dict:
    return {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "n_kv_heads": graph.n_kv_heads,
        "paper": graph.paper,
        "mlp_groups": graph.mlp_groups,
        "edge_names": graph.edge_names(),
        "n_model_params": n_model_params,
    }


def run_config(config: TuneConfig, model, task: str) -> dict:
    """What a run stores as its config: every TuneConfig field plus what resuming needs."""
    return {**config.to_dict(), "task": task, "model": model.spec, "dtype": str(model.dtype)}


def config_from_run(stored: dict) -> TuneConfig:
    fields = TuneConfig.__dataclass_fields__
    return TuneConfig.from_dict({key: value for key, value in stored.items() if key in fields})


def create_run(
    model,
    task: str,
    config: TuneConfig,
    root: str | Path,
    *,
    run_id: str | None = None,
    sweep_id: str | None = None,
) -> RunWriter:
    """Check the inputs against the model, then create the run's record (status "running")."""
    graph = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups)
    check_sizes(config, graph.n_edges)
    pmap = build_param_map(model, graph)
    return RunWriter.create(
        root,
        run_id,
        kind="tune",
        config=run_config(config, model, task),
        model_spec=model.spec,
        task=task,
        method=config.method,
        seed=config.seed,
        graph_meta=graph_meta(graph, build_mask_bank(pmap, graph).n_model_params),
        sweep_id=sweep_id,
    )


def check_sizes(config: TuneConfig, n_edges: int) -> None:
    """N (and a schedule's start) must fit in the graph; a threshold selection has no N."""
    scored = config.method in ("circuit", "circuit-lora")
    if not config.discovers or (scored and config.selection == "threshold"):
        return
    for name in ("top_n", "topn_start"):
        check_fits(name, getattr(config, name), n_edges)
