"""What a tuning run measures and records besides its per-step rows.

* ``evaluate``: dev accuracy, mean logit difference (the task metric) and the task's own figures,
  plus the held-out language-model loss; all with the hook flags off (they change nothing but cost).
* ``snapshot_scores``: a circuit snapshot on a fixed probe batch (edge scores in valid-edge order and
  the selection at the current N).
* ``head_changes``: ``||W_t - W_0|| / ||W_0||`` per node's exclusive slices (q/k/v/o of each head,
  each MLP), from the node mask bank's unit ownership, without a loop over heads.
* ``summarise``: the run's summary from its stored rows.
"""

from __future__ import annotations

import math

import torch

from circuitviz.graph.topology import parse_node
from circuitviz.models import shards
from circuitviz.tasks import get_task, lm_loss, score_task
from circuitviz.tasks.base import no_report
from circuitviz.tasks.data import is_task_file
from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.data import TuningData
from circuitviz.tuning.discovery import hook_flags, score_edges, select_edges
from circuitviz.tuning.masks import NodeMaskBank

_REPORT_SKIP = ("task", "split", "n_examples", "n_dropped_multitoken", "n_dropped_identical")


def evaluate(
    model,
    data: TuningData,
    config: TuneConfig | None = None,
    *,
    exact_match: bool = True,
    batch_size: int = 128,
) -> dict[str, float | None]:
    """``accuracy``, ``task_metric``, ``lm_loss`` (held-out text) and the task's extras.

    Pair tasks: accuracy and the mean logit difference on the dev examples. Instruction tasks:
    ``task_metric`` is the dev response loss (nats per response token, lower is better) and
    ``accuracy`` the exact match of greedy answers, which costs a generation per example and so
    runs only when ``exact_match`` is asked for (None otherwise).
    """
    if data.kind == "sft":
        return _evaluate_sft(model, data, config or TuneConfig(), exact_match=exact_match)
    report = no_report if is_task_file(data.task) else get_task(data.task).report
    with hook_flags(model.bridge, False):
        scored = score_task(model.bridge, data.dev, report=report, batch_size=batch_size)
        heldout = lm_loss(model, list(data.heldout), batch_size=batch_size)
    out = {"accuracy": scored["accuracy"], "task_metric": scored["logit_diff"], "lm_loss": heldout}
    for key, value in scored.items():
        if key in _REPORT_SKIP or key in (
            "accuracy",
            "logit_diff",
            "n_length_mismatch",
            "n_too_long",
        ):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def _evaluate_sft(model, data: TuningData, config: TuneConfig, *, exact_match: bool) -> dict:
    from circuitviz.tasks.sft_evaluate import SFTEvalConfig, exact_match_report, response_loss

    with hook_flags(model.bridge, False):
        loss = response_loss(model, data.dev, batch_size=16)
        heldout = lm_loss(model, list(data.heldout), batch_size=32)
    out: dict[str, float | None] = {
        "accuracy": None,
        "task_metric": loss,
        "lm_loss": heldout,
        "response_loss": loss,
        "n_dev_examples": len(data.dev),
    }
    if exact_match:
        eval_config = SFTEvalConfig(max_new_tokens=config.max_new_tokens, n_samples=0)
        report = exact_match_report(model, data.dev, eval_config)
        out["accuracy"] = report.get("exact_match")
        out.update({k: v for k, v in report.items() if isinstance(v, int | float)})
    return out


def snapshot_scores(model, graph, batch, n: int, config: TuneConfig):
    """(scores ``[n_edges]`` in valid-edge order, selected ``[n_edges]`` bool) on ``batch``."""
    scores = score_edges(model, graph, batch, config)
    selected = select_edges(scores, n, config)
    return scores.edge_vector(), selected[graph.valid_mask]


class HeadChangeMeter:
    """Relative weight change per node slice against the weights at construction time."""

    def __init__(self, bank: NodeMaskBank, params: dict[str, torch.nn.Parameter]) -> None:
        self.bank = bank
        self.params = {name: params[name] for name in bank.param_names}
        self.initial = {name: p.detach().clone() for name, p in self.params.items()}
        # Units owned by exactly one node: a shared output bias belongs to no single head.
        exclusive = bank.owner * (bank.owner.sum(dim=0, keepdim=True) == 1)
        self.exclusive = exclusive.double()
        self.rows = []
        for idx, name in enumerate(bank.node_names):
            if float(exclusive[idx].sum()) == 0:
                continue
            ref = parse_node(name)
            kind = "mlp" if ref.kind == "mlp" else (ref.qkv or "o")
            # An MLP neuron group's row carries its group index where a head's carries the head.
            self.rows.append((idx, ref.layer, ref.group if kind == "mlp" else ref.head, kind))
        self._w0_sq = self._unit_sq(self.initial)

    def _unit_sq(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of squares per unit, ``[n_units]`` float64."""
        parts = []
        for i, name in enumerate(self.bank.param_names):
            t = tensors[name]
            per_row = shards.row_sums_of_squares(t, self.bank.param_dims[i] if t.ndim else 0)
            lo, hi = self.bank.unit_offsets[i], self.bank.unit_offsets[i + 1]
            unit_of_row = torch.repeat_interleave(
                torch.arange(hi - lo), self.bank.unit_rows[lo:hi]
            ).to(per_row.device)
            parts.append(
                torch.zeros(hi - lo, dtype=torch.float64, device=per_row.device)
                .index_add_(0, unit_of_row, per_row)
                .cpu()
            )
        return torch.cat(parts)

    def rows_now(self) -> list[dict]:
        diff = {name: p.detach() - self.initial[name] for name, p in self.params.items()}
        num = (self.exclusive @ self._unit_sq(diff)).sqrt()
        den = (self.exclusive @ self._w0_sq).sqrt()
        rel = num / den.clamp_min(1e-30)
        return [
            {"layer": layer, "head": head, "kind": kind, "rel_change": float(rel[idx])}
            for idx, layer, head, kind in self.rows
        ]


def summarise(run, base: dict, final: dict, seconds: float) -> dict:
    """The run summary from its stored steps (all of them, resumed ones included)."""
    steps = run.steps()
    summary = {
        "final_accuracy": final["accuracy"],
        "final_task_metric": final["task_metric"],
        "final_lm_loss": final["lm_loss"],
        "base_accuracy": base["accuracy"],
        "base_task_metric": base["task_metric"],
        "base_lm_loss": base["lm_loss"],
        "lm_loss_increase": final["lm_loss"] / base["lm_loss"] - 1.0,
        "tuned_param_ratio": _mean(steps, "tuned_ratio"),
        "mean_nodes": _mean(steps, "n_nodes"),
        "mean_edges": _mean(steps, "n_edges"),
        "n_steps": int(len(steps)),
        "seconds": seconds,
    }
    for key, value in final.items():
        if key not in ("accuracy", "task_metric", "lm_loss"):
            summary[f"final_{key}"] = value
            if key in base:
                summary[f"base_{key}"] = base[key]
    return summary


def _mean(frame, column: str) -> float:
    if column not in frame or len(frame) == 0:
        return math.nan
    return float(frame[column].astype(float).mean())
