"""A plausible complete run written through the public ``RunWriter`` API, for tests, the dashboard
and benchmarks: nothing here trains a model, and every number is made up (but shaped like the real
thing: a falling loss, rising accuracy, and edge scores drifting smoothly from a "before" circuit to
a different "after" circuit, plus batch noise).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from circuitviz.runs.writer import RunWriter

D_HEAD = 64
D_VOCAB = 50257


def write_synthetic_run(
    root: str | Path,
    *,
    n_steps: int = 200,
    graph=None,
    seed: int = 0,
    run_id: str | None = None,
    task: str = "sv",
    method: str = "circuit",
    snapshot_every: int = 50,
    eval_every: int = 20,
    checkpoint_every: int | None = None,
    noise_floor: bool = False,
    status: str = "finished",
) -> str:
    """Write a finished synthetic run under ``root`` and return its id.

    ``graph`` is a ``circuitviz.graph.topology.Graph`` (default: 2 layers x 4 heads). Snapshots:
    "before" at step 0, "during" every ``snapshot_every`` steps, "after" at ``n_steps``. Steps are
    1..n_steps; evals at step 0 and every ``eval_every`` steps. ``checkpoint_every`` adds tiny
    checkpoints, ``noise_floor`` adds rescoring results (fixed and resample-5) per snapshot step.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if graph is None:
        from circuitviz.graph.topology import build_graph

        graph = build_graph(2, 4)
    rng = np.random.default_rng(seed)
    edge_names = graph.edge_names()
    n_edges = len(edge_names)
    d_model = D_HEAD * graph.n_heads
    n_model_params = graph.n_layers * 12 * d_model**2 + D_VOCAB * d_model
    top_n = max(1, n_edges // 20)
    drift = _ScoreDrift(rng, n_edges)
    config = {
        "task": task,
        "method": method,
        "n_steps": n_steps,
        "lr": 1e-4,
        "top_n": top_n,
        "snapshot_every": snapshot_every,
        "eval_every": eval_every,
        "synthetic": True,
    }
    graph_meta = {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "n_kv_heads": graph.n_kv_heads,
        "paper": graph.paper,
        "mlp_groups": graph.mlp_groups,
        "edge_names": edge_names,
        "n_model_params": n_model_params,
    }
    with RunWriter.create(
        root,
        run_id,
        config=config,
        model_spec="synthetic",
        task=task,
        method=method,
        seed=seed,
        graph_meta=graph_meta,
    ) as writer:
        _write_snapshot(writer, drift, 0, "before", task, top_n, 0.0)
        writer.log_eval(0, **_eval_values(0.0, rng))
        for step in range(1, n_steps + 1):
            progress = step / n_steps
            head_share = 0.1 + 0.05 * math.sin(step / 7)
            whole = int(head_share * n_model_params)
            writer.log_step(
                step,
                loss=2.5 * math.exp(-4 * progress) + 0.3 + 0.05 * rng.standard_normal(),
                lr=1e-4 * min(1.0, step / 10) * 0.5 * (1 + math.cos(math.pi * progress)),
                top_n=top_n,
                n_nodes=max(2, int(top_n**0.5) + 3),
                n_edges=top_n,
                tuned_params_whole=whole,
                tuned_params_exact=int(whole * 0.4),
                tuned_ratio=whole / n_model_params,
                discovered=(step - 1) % 10 == 0,
                grad_norm=abs(1.0 + 0.3 * rng.standard_normal()),
            )
            if step % eval_every == 0:
                writer.log_eval(step, **_eval_values(progress, rng))
            if step % snapshot_every == 0 and step < n_steps:
                _write_snapshot(writer, drift, step, "during", task, top_n, progress)
                writer.add_head_changes(step, _head_changes(graph, progress, rng))
                if noise_floor:
                    _write_noise_floor(writer, drift, step, progress)
            if checkpoint_every and step % checkpoint_every == 0:
                _write_checkpoint(writer, step, rng)
        _write_snapshot(writer, drift, n_steps, "after", task, top_n, 1.0)
        writer.add_head_changes(n_steps, _head_changes(graph, 1.0, rng))
        final = _eval_values(1.0, rng)
        writer.set_summary(
            {
                "final_accuracy": final["accuracy"],
                "final_lm_loss": final["lm_loss"],
                "base_lm_loss": 3.2,
                "tuned_param_ratio": 0.1,
            }
        )
        writer.set_status(status, None if status == "finished" else "synthetic run")
        return writer.run_id


class _ScoreDrift:
    """Scores move smoothly from a "before" vector to an "after" vector that shares most edges but
    reorders a few strongly (a circuit reorganising), plus per-snapshot batch noise."""

    def __init__(self, rng: np.random.Generator, n_edges: int) -> None:
        self.rng = rng
        magnitude = np.exp(rng.normal(-4.0, 1.5, n_edges))  # heavy-tailed, like EAP scores
        self.before = magnitude * rng.choice([-1.0, 1.0], n_edges, p=[0.3, 0.7])
        movers = rng.random(n_edges) < 0.05
        self.after = self.before.copy()
        self.after[movers] = rng.normal(0.0, 3.0 * magnitude.max() / 10, int(movers.sum()))

    def scores(self, progress: float) -> np.ndarray:
        weight = 1 / (1 + math.exp(-10 * (progress - 0.5)))  # smooth S-curve between the two
        noise = 0.02 * np.abs(self.before) * self.rng.standard_normal(self.before.shape)
        return ((1 - weight) * self.before + weight * self.after + noise).astype(np.float32)


def _write_snapshot(writer, drift, step, label, task, top_n, progress) -> None:
    scores = drift.scores(progress)
    selected = np.zeros(scores.shape, dtype=bool)
    selected[np.argsort(-np.abs(scores))[:top_n]] = True
    writer.add_snapshot(step, label, task, scores, selected, note=f"synthetic top-{top_n}")


def _write_noise_floor(writer, drift, step, progress) -> None:
    samples = np.stack([drift.scores(progress) for _ in range(5)])  # [5, n_edges]
    writer.add_noise_floor(step, "fixed", samples[0])
    writer.add_noise_floor(step, "resample-5", samples.mean(axis=0), samples.std(axis=0))


def _eval_values(progress: float, rng: np.random.Generator) -> dict:
    accuracy = 0.45 + 0.5 / (1 + math.exp(-10 * (progress - 0.4)))
    return {
        "accuracy": float(min(1.0, accuracy + 0.01 * rng.standard_normal())),
        "task_metric": float(-1.0 + 5.0 * accuracy + 0.05 * rng.standard_normal()),
        "lm_loss": float(3.2 + 0.15 * progress + 0.01 * rng.standard_normal()),
    }


def _head_changes(graph, progress: float, rng: np.random.Generator) -> list[dict]:
    rows = []
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            involvement = rng.random() ** 3
            for kind in ("q", "k", "v", "o"):
                change = involvement * 0.05 * math.sqrt(progress) + 1e-4 * rng.random()
                rows.append({"layer": layer, "head": head, "kind": kind, "rel_change": change})
        rows.append({"layer": layer, "head": None, "kind": "mlp", "rel_change": 0.01 * progress})
    return rows


def _write_checkpoint(writer, step: int, rng: np.random.Generator) -> None:
    import torch

    tensors = {"w": torch.from_numpy(rng.standard_normal((4, 4)).astype(np.float32))}
    writer.save_checkpoint(step, tensors, {"step": step, "data_position": step * 8})


def write_synthetic_analyses(run_dir, graph, against: str) -> None:
    """What ``circuitviz analyse --against`` stores: at three checkpoints DLA per source (head a2.h1
    flips sign), faithfulness (with CPR/CMD), every head's role scores (the previous-token role moves from a0.h0
    to a1.h2) and attention to the tagged tokens; IoU with another run at every snapshot step."""
    writer = RunWriter.resume(run_dir)
    heads = [
        f"a{layer}.h{head}" for layer in range(graph.n_layers) for head in range(graph.n_heads)
    ]
    for i, step in enumerate((0, 40, 80)):
        dla = {name: 0.1 * (j % 5 - 2) for j, name in enumerate(graph.src_names)}
        dla["a2.h1"] = 1.0 - i
        writer.add_analysis(step, "dla", dla | {"logit_diff": 2.0 - i, "rest": 0.01})
        faith = {"own@0.01": 0.5, "initial@0.01": 0.5 - 0.2 * i, "own@0.1": 0.9}
        areas = {"cpr:own": 0.8, "cmd:own": 0.2, "cpr:initial": 0.8 - 0.1 * i}
        areas["cmd:initial"] = None if i == 1 else 0.2 + 0.1 * i  # undefined at one step
        faith |= {"initial@0.1": 0.9 - 0.1 * i} | areas
        writer.add_analysis(step, "faithfulness", faith)
        holder = "a0.h0" if i < 2 else "a1.h2"
        roles = {f"previous_token:{h}": 0.9 if h == holder else 0.1 for h in heads}
        roles |= {f"induction:{h}": 0.05 for h in heads}
        writer.add_analysis(step, "roles", roles)
        attention = {h: 0.1 * ((k + i) % 4) for k, h in enumerate(heads)}
        writer.add_analysis(step, "attention", attention)
        tokens = {"token:0:The": 0.0, "token:1: keys": 1.0, "token:2: are": 2.0}
        pattern = {
            f"{h}:{q}:{k}": 1.0 / (q + 1) for h in heads for q in range(3) for k in range(q + 1)
        }
        pattern["a0.h1:2:0"], pattern["a0.h1:2:1"], pattern["a0.h1:2:2"] = (
            0.1 * i,
            0.9 - 0.1 * i,
            0.1,
        )
        writer.add_analysis(step, "pattern", tokens | pattern)
        ov = {f"{h}:pc1": float(i * (k + 1)) for k, h in enumerate(heads)}
        ov |= {f"{h}:pc2": float(-i) for h in heads}
        if i:
            ov |= {f"{h}:cos_unembed": 0.9 if h == "a2.h1" else 0.2 for h in heads}
        writer.add_analysis(step, "ov", ov)
        qk = {f"{h}:pc1": float(-i * (k + 1)) for k, h in enumerate(heads)}
        writer.add_analysis(step, "qk", qk | {f"{h}:pc2": 0.0 for h in heads})
    for step in (0, 20, 40, 60, 80):
        iou = {"edge_iou@0.1": 1 - step / 200, "node_iou@0.1": 1 - step / 400}
        writer.add_analysis(step, f"alignment:{against}", iou)
    writer.set_status("finished")
    writer.close()


def write_analysed_run(root, *, seed: int = 0) -> str:
    """A 3 x 3 run snapshotted every 20 of 80 steps and analysed at steps 0, 40 and 80
    (``write_synthetic_analyses``, compared with a run "other"); returns its id."""
    from circuitviz.graph.topology import build_graph

    graph = build_graph(3, 3)
    run_id = write_synthetic_run(root, n_steps=80, graph=graph, snapshot_every=20, seed=seed)
    write_synthetic_analyses(Path(root) / run_id, graph, against="other")
    return run_id
