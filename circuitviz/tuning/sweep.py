"""A sweep over the circuit size N: the paper's node-level intrinsic-dimension curve.

1. Keep a copy of the loaded model's weights.
2. For each N, in order: put the copy back, run ``run_tuning`` with ``top_n = N`` as its own run
   (kind "tune"), every run sharing one ``sweep_id``.
3. Return one row per N: final task metric and accuracy, mean circuit nodes, mean tuned-parameter
   ratio, final held-out LM loss, and the run id.

``run_sweep_ray`` runs the same runs as Ray tasks instead, in parallel (``sweep --ray``): each task
asks for one CPU (and one GPU on CUDA), loads the model itself from its spec, and writes its run to
the same runs directory under the same sweep id, with run ids chosen up front; the rows are the
same as a sequential sweep's. Without an address a local Ray starts with this machine's CPUs; with
one, the cluster's workers must see the runs directory (a shared file system).
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
    configs = sweep_configs(model.info, config, top_ns)
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
        rows.append(_row(n, result.run_id, result.summary))
    with torch.no_grad():
        for name, param in model.bridge.named_parameters():
            param.copy_(initial[name])
    return sweep_id, rows


def sweep_configs(info, config: TuneConfig, top_ns: list[int]) -> list[TuneConfig]:
    """One config per N, every one checked against the model's graph before anything runs."""
    if not top_ns:
        raise ValueError("a sweep needs at least one N")
    if not config.discovers:
        raise ValueError(
            f"a sweep varies the circuit size N, which --method {config.method} does not use "
            "(it trains everything): use --method circuit, random or circuit-lora"
        )
    configs = [dataclasses.replace(config, top_n=n) for n in top_ns]  # validates every N first
    n_edges = graph_for(info, paper=config.paper_graph, mlp_groups=config.mlp_groups).n_edges
    for run_config in configs:
        check_sizes(run_config, n_edges)
    return configs


def _row(n: int, run_id: str, summary: dict) -> dict:
    return {"top_n": n, **{key: summary.get(key) for key in SWEEP_KEYS}, "run_id": run_id}


def run_sweep_ray(
    model,
    task: str,
    config: TuneConfig,
    top_ns: list[int],
    root: str | Path,
    *,
    address: str | None = None,
    sweep_id: str | None = None,
    on_start: Callable[[int, str, Path], None] | None = None,
) -> tuple[str, list[dict]]:
    """``run_sweep`` with each run a Ray task (module docstring). ``model`` is the loaded model:
    its spec, device and dtype are what each task loads, and it checks every N up front."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError(
            "sweep --ray needs Ray: pip install 'circuitviz[ray]' (or pip install ray)"
        ) from exc
    configs = sweep_configs(model.info, config, top_ns)
    sweep_id = sweep_id or new_sweep_id(task)
    root = Path(root).resolve()
    started = not ray.is_initialized()  # a Ray this call starts, it also stops
    if started:
        if address is None:
            from circuitviz.threads import available_cpus

            ray.init(num_cpus=available_cpus(), include_dashboard=False, log_to_driver=False)
        else:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=False)
    try:
        return sweep_id, _run_tasks(ray, model, task, configs, top_ns, root, sweep_id, on_start)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """Raise ValueError unless something answers at a ``HOST:PORT`` (or ``ray://HOST:PORT``) Ray
    address: ``ray.init`` would otherwise retry for minutes. ``auto`` is left to Ray."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=seconds):
            return
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"no Ray cluster answers at {address!r} ({exc}): start one there (ray start --head), "
            "or give --ray without an address for a local Ray"
        ) from exc


def _run_tasks(ray, model, task, configs, top_ns, root, sweep_id, on_start) -> list[dict]:
    run_ids = [run_fields.new_run_id(run_fields.task_slug(task), c.method) for c in configs]
    device = str(model.device)
    dtype = str(model.dtype).removeprefix("torch.")
    tune_task = ray.remote(_tune_one).options(
        num_cpus=1, num_gpus=1 if device.startswith("cuda") else 0
    )
    refs = []
    for n, run_config, run_id in zip(top_ns, configs, run_ids):
        refs.append(
            tune_task.remote(
                model.spec, device, dtype, task, run_config.to_dict(), str(root), run_id, sweep_id
            )
        )
        if on_start is not None:
            on_start(n, run_id, root / run_id)
    rows, failed = [], []
    for n, run_id, ref in zip(top_ns, run_ids, refs):
        try:
            rows.append(_row(n, run_id, ray.get(ref)))
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            failed.append(f"N={n} (run {run_id}): {type(cause).__name__}: {cause}")
    if failed:
        raise ValueError("sweep runs failed on Ray: " + "; ".join(failed))
    return rows


def _tune_one(spec, device, dtype, task, config_dict, root, run_id, sweep_id) -> dict:
    """One sweep run inside a Ray task: load, create the run, tune; returns its summary."""
    torch.set_num_threads(1)
    from circuitviz.models import load_model

    config = TuneConfig.from_dict(config_dict)
    model = load_model(spec, device=device, dtype=dtype, runs_dir=root)
    writer = create_run(model, task, config, root, run_id=run_id, sweep_id=sweep_id)
    with writer:
        return run_tuning(model, task, config, writer).summary
