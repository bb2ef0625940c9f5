"""The analyses of a run at each of its checkpoints, written into its store (``circuitviz analyse``).

For the untouched model (step 0) and every checkpoint of the run:

1. load the checkpoint's weights onto the untouched model (as ``rescore`` does);
2. on the run's fixed probe set (the first ``probe_size`` dev examples of its task and seed), and
   for the attention roles on random token sequences (``analysis.roles``):
   * ``dla``: each node's direct logit attribution (``analysis.dla``), plus the model's logit
     difference and what no node owns;
   * ``faithfulness``: at each edge budget (a fraction of the graph's edges), the faithfulness of
     the circuit the run held at that step (the top edges of its latest snapshot at or before the
     step) and of the circuit it started from (step 0's snapshot), both with this step's weights.
     The first separates "the circuit moved" from the second, "the old circuit stopped carrying
     the task": a falling own-circuit line means the circuit became less faithful; a falling
     initial-circuit line under a steady own-circuit line means it moved; and for both, MIB's CPR
     and CMD over the whole sweep of edge fractions (``cpr:own``, ``cmd:initial``, ...);
   * ``roles``: every head's previous-token, duplicate-token, induction and copying scores, whose
     top head per role, step by step, shows a role migrating;
   * ``attention``: every head's attention from the target position to the tagged tokens (where
     the clean and corrupted prompts differ), and every head's whole pattern on the probe's first
     prompt (kind ``pattern``);
   * ``bias`` (gender-pronoun): each occupation's prejudice risk on the dev set
     (``analysis.bias``);
   * ``ov``: every head's OV factors, turned after the last step into its OV trajectory (two
     principal components across the checkpoints) and the |cosine| of its change since step 0
     with the answer's unembedding direction, and its QK trajectory (kind ``qk``)
     (``analysis.ov``);
3. store each as rows ``(step, kind, key, value)`` (``Run.analyses``).

Faithfulness is measured as ``discover`` measures it (the run's baseline, positions and metric,
dead-end edges removed first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from circuitviz.analysis.attention import attention_patterns, attention_to_tagged, prompt_pattern
from circuitviz.analysis.bias import occupation_risks
from circuitviz.analysis.dla import direct_logit_attribution
from circuitviz.analysis.ov import (
    cosine_with,
    ov_factors,
    qk_factors,
    top_change_direction,
    trajectory,
)
from circuitviz.analysis.roles import attention_roles, copying_scores
from circuitviz.attribution.faithfulness import (
    DEFAULT_FRACTIONS,
    FaithfulnessConfig,
    area_under,
    evaluate_circuits,
)
from circuitviz.graph.select import top_n
from circuitviz.graph.topology import graph_for
from circuitviz.models import build_param_map
from circuitviz.runs import Run, RunWriter
from circuitviz.tasks import build_task_data
from circuitviz.tasks.catalog import task_kind
from circuitviz.tuning.rescore import load_checkpoint_weights
from circuitviz.tuning.storage import config_from_run

# What needs the model; ``--against`` adds the alignment.
KINDS = ("dla", "faithfulness", "roles", "attention", "ov", "bias")
DEFAULT_BUDGETS = (0.01, 0.1)


def check_budgets(budgets: Sequence[float]) -> None:
    """ValueError unless ``budgets`` are fractions of the graph's edges in (0, 1]."""
    bad = [b for b in budgets if math.isnan(b) or not (0 < b <= 1)]
    if bad or not budgets:
        raise ValueError(f"edge budgets are fractions in (0, 1], got {list(budgets)}")


def check_request(run: Run, kinds: Sequence[str], budgets: Sequence[float]) -> None:
    """ValueError, before anything is written, for analyses or budgets that cannot be run."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(
            f"unknown analyses {unknown or list(kinds)}: choose from {', '.join(KINDS)}"
        )
    check_budgets(budgets)
    if "bias" in kinds and run.task != "gender-pronoun":
        raise ValueError(
            f"bias (prejudice risk per occupation) is the gender-pronoun task's, not {run.task}'s"
        )


def analyse_run(
    model,
    run: Run,
    *,
    kinds: Sequence[str] | None = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    probe_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[int]:
    """Analyse ``run`` with ``model`` (the run's model, untouched) at step 0 and every checkpoint;
    returns the steps analysed. ``kinds`` None: every analysis the task allows (instruction tasks
    have no answer token: no DLA or attention). ``progress(done, total)`` after each step."""
    if kinds is None:
        pair = task_kind(run.task) == "pairs"
        kinds = KINDS if pair else tuple(k for k in KINDS if k not in ("dla", "attention"))
        kinds = tuple(k for k in kinds if k != "bias" or run.task == "gender-pronoun")
    check_request(run, kinds, budgets)
    config = config_from_run(run.config)
    graph = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups)
    if graph.edge_names() != run.edge_names():
        raise ValueError(f"run {run.id} was recorded on a different graph than {model.spec}'s")
    n = probe_size if probe_size is not None else config.n_probe
    if n < 1:
        raise ValueError(f"the probe size must be >= 1, got {n}")
    probe = build_task_data(
        run.task, model.tokenizer, split="dev", n=n, seed=config.seed, device=model.device
    ).batch
    pair_only = [k for k in ("dla", "attention") if k in kinds]
    if pair_only and getattr(probe, "answer_ids", None) is None:
        raise ValueError(
            f"{' and '.join(pair_only)} need a pair task (an answer, a wrong token and a corrupted "
            f"prompt); {run.task} has none: analyse it with --only faithfulness,roles"
        )
    circuits = _circuits_by_step(run, graph) if "faithfulness" in kinds else None
    bias_data = None
    if "bias" in kinds:  # per occupation, on the dev set (more prompts than the probe)
        bias_data = build_task_data(
            run.task,
            model.tokenizer,
            split="dev",
            n=max(config.n_dev, 64),
            seed=config.seed,
            device=model.device,
        )
    steps = [0] + [step for step, _ in run.checkpoints()]
    params = build_param_map(model, graph).params
    merger = None
    if config.adapters:
        from circuitviz.tuning.lora import AdapterMerger

        merger = AdapterMerger(model, config.lora_alpha / config.lora_rank)
    faith_config = FaithfulnessConfig.from_attribution(config.attribution)
    factors: dict[int, dict] = {}  # step -> every head's OV factors ("ov", after the loop)
    qk: dict[int, dict] = {}  # and its QK factors
    # The unembedding directions of the untouched model (a tied unembedding moves during tuning).
    directions = _answer_directions(model, probe) if "ov" in kinds else None
    writer = RunWriter.resume(run.dir, mark_running=False)
    try:
        # No row of an earlier analysis stays beside the new ones ("ov" writes "qk" too).
        extra = (["qk"] if "ov" in kinds else []) + (["pattern"] if "attention" in kinds else [])
        writer.clear_analyses([*kinds, *extra])
        for done, step in enumerate(steps, start=1):
            if step > 0:
                load_checkpoint_weights(params, run, step, merger)
            if "ov" in kinds:
                factors[step] = ov_factors(model)
                qk[step] = qk_factors(model)
            if "dla" in kinds:
                dla = direct_logit_attribution(model, graph, probe)
                values = dla.as_dict()
                values["logit_diff"] = float(dla.logit_diff.mean())
                values["rest"] = float(dla.rest.mean())
                writer.add_analysis(step, "dla", values)
            if "roles" in kinds:
                writer.add_analysis(step, "roles", _roles(model, probe))
            if "attention" in kinds:
                patterns = attention_patterns(model, probe.clean_ids, probe.attention_mask)
                grid = attention_to_tagged(model, probe, patterns)
                writer.add_analysis(step, "attention", _by_head(grid))
                writer.add_analysis(step, "pattern", _pattern_rows(model, probe, patterns))
            if "bias" in kinds:
                writer.add_analysis(step, "bias", occupation_risks(model, bias_data))
            if circuits is not None:
                writer.add_analysis(
                    step,
                    "faithfulness",
                    _faithfulness(model, graph, probe, circuits, step, budgets, faith_config),
                )
            if progress is not None:
                progress(done, len(steps))
        if factors:
            for step, values in _ov_rows(factors, directions).items():
                writer.add_analysis(step, "ov", values)
            for step, values in _ov_rows(qk, None).items():
                writer.add_analysis(step, "qk", values)
    finally:
        writer.close()
    return steps


def _by_head(grid: torch.Tensor, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}a{layer}.h{head}": float(grid[layer, head])
        for layer in range(grid.shape[0])
        for head in range(grid.shape[1])
    }


def _pattern_rows(model, probe, patterns) -> dict[str, float]:
    """The probe's first prompt: every head's whole pattern, ``aL.hH:query:key`` -> weight, and
    its tokens, ``token:position:text`` -> position (``patterns``: the probe's own)."""
    patterns, tokens = prompt_pattern(model, probe, 0, patterns)
    rows: dict[str, float] = {f"token:{i}:{text}": float(i) for i, text in enumerate(tokens)}
    n = len(tokens)
    for layer in range(patterns.shape[0]):
        for head in range(patterns.shape[1]):
            grid = patterns[layer, head].double().cpu()
            for q in range(n):
                for k in range(q + 1):  # causal: nothing above the diagonal
                    rows[f"a{layer}.h{head}:{q}:{k}"] = float(grid[q, k])
    return rows


def _roles(model, probe) -> dict[str, float]:
    """Every head's score for each role (``analysis.roles``): ``role:aL.hH`` -> score. Copying is
    measured on the probe set's prompts where it is a pair task, else skipped."""
    scores = attention_roles(model)
    if getattr(probe, "target_pos", None) is not None:
        scores["copying"] = copying_scores(
            model, probe.clean_ids, probe.target_pos, probe.attention_mask
        )
    values: dict[str, float] = {}
    for role, grid in scores.items():
        values |= _by_head(grid, f"{role}:")
    return values


def _answer_directions(model, probe) -> torch.Tensor | None:
    """``[n, d_model]``: each probe example's ``W_U[answer] - W_U[wrong]`` (None without answers).
    Kept per example: answer and wrong swap between examples (a plural subject, the other name),
    so their mean would mostly cancel."""
    if getattr(probe, "answer_ids", None) is None:
        return None
    weight = model.bridge.unembed.original_component.weight.detach().double().cpu()
    return weight[probe.answer_ids.cpu()] - weight[probe.wrong_ids.cpu()]


def _ov_rows(factors: dict[int, dict], directions) -> dict[int, dict[str, float | None]]:
    """step -> ``aL.hH:pc1``, ``:pc2`` (the head's OV trajectory) and ``:cos_unembed`` (|cos| of
    its change since step 0 with each probe example's answer direction, averaged) for every head
    (``analysis.ov``)."""
    steps = sorted(factors)
    rows: dict[int, dict] = {step: {} for step in steps}
    for head in factors[steps[0]]:
        path = [factors[step][head] for step in steps]
        coords = trajectory(path)
        for i, step in enumerate(steps):
            rows[step][f"{head}:pc1"] = float(coords[i, 0])
            rows[step][f"{head}:pc2"] = float(coords[i, 1])
            if directions is not None and i > 0:
                change = top_change_direction(path[0], path[i])
                rows[step][f"{head}:cos_unembed"] = cosine_with(change, directions)
    return rows


def _circuits_by_step(run: Run, graph) -> dict[int, np.ndarray]:
    """step -> that step's snapshot scores ``[n_edges]`` of the run's own task (the last snapshot
    recorded at that step)."""
    frame, matrix = run.score_matrix(task=run.task)
    if not len(frame):
        raise ValueError(f"run {run.id} has no snapshot of its task {run.task}: nothing to measure")
    return {int(step): matrix[i] for i, step in enumerate(frame["step"])}


def _scores_at(circuits: dict[int, np.ndarray], step: int) -> np.ndarray:
    """The latest snapshot at or before ``step``."""
    return circuits[max(s for s in circuits if s <= step)]


def _faithfulness(model, graph, probe, circuits, step, budgets, config) -> dict[str, float]:
    """``own@B`` / ``initial@B``: faithfulness of the run's circuit at ``step`` and of its initial
    circuit at each edge budget B; ``cpr:own`` / ``cmd:own`` (and ``:initial``): MIB's areas over
    the sweep of ``DEFAULT_FRACTIONS`` (the area under the faithfulness curve and the area between
    it and 1, ``attribution.faithfulness.area_under``); all from one set of ablated forwards."""
    fractions = tuple(sorted(set(DEFAULT_FRACTIONS) | {float(b) for b in budgets}))
    vectors = {"own": _scores_at(circuits, step), "initial": _scores_at(circuits, 0)}
    chosen = []
    for which, vector in vectors.items():
        scores = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.float32)
        scores[graph.valid_mask] = torch.from_numpy(np.asarray(vector, dtype=np.float32))
        for fraction in fractions:
            k = max(1, round(fraction * graph.n_edges))
            chosen.append(((which, fraction), top_n(scores, graph, k)))
    metrics = evaluate_circuits(model, graph, [probe], [c for _, c in chosen], config)
    faith = dict(zip([key for key, _ in chosen], metrics.faithfulness()))
    values: dict[str, float | None] = {}
    for which in vectors:
        for budget in budgets:
            value = faith[(which, float(budget))]
            # Undefined where the full model and the empty circuit score alike: missing, not 0.
            values[f"{which}@{budget:g}"] = None if math.isnan(value) else value
        curve = [faith[(which, f)] for f in fractions]
        if any(math.isnan(v) for v in curve):
            values[f"cpr:{which}"] = values[f"cmd:{which}"] = None
        else:
            x, y = (0.0, *fractions), (0.0, *curve)
            values[f"cpr:{which}"] = area_under(x, y)
            values[f"cmd:{which}"] = area_under(x, [abs(1 - v) for v in y])
    values["m_full"], values["m_empty"] = metrics.m_full, metrics.m_empty
    return values


def store_alignment(run: Run, other: Run, budgets: Sequence[float] = DEFAULT_BUDGETS) -> None:
    """``alignment.circuit_alignment`` of ``run`` with ``other``, into ``run``'s store (kind
    ``alignment:<other's id>``, keys ``edge_iou@B`` and ``node_iou@B``)."""
    from circuitviz.analysis.alignment import circuit_alignment

    table = circuit_alignment(run, other, budgets)
    writer = RunWriter.resume(run.dir, mark_running=False)
    try:
        writer.clear_analyses([f"alignment:{other.id}"])
        for step, rows in table.groupby("step"):
            values = {}
            for row in rows.itertuples():
                values[f"edge_iou@{row.budget:g}"] = row.edge_iou
                values[f"node_iou@{row.budget:g}"] = row.node_iou
            writer.add_analysis(int(step), f"alignment:{other.id}", values)
    finally:
        writer.close()


ROLE_FLOOR = 0.3  # below this score no head holds an attention role (uniform attention is ~1/pos)


def summarise_analyses(run: Run, *, flip_share: float = 0.1, top: int = 10) -> dict:
    """What ``analyse --json`` prints: the steps analysed; for DLA the largest nodes at the last
    step with their first-step values, and the nodes whose sign flips between the first and last
    step (those with |DLA| at least ``flip_share`` of the largest at either end); faithfulness of
    the own and the initial circuit at each budget and step."""
    frame = run.analyses()
    own = frame[frame["kind"].isin(KINDS)]
    out: dict = {"run_id": run.id, "steps": sorted({int(s) for s in own["step"]})}
    dla = frame[frame["kind"] == "dla"]
    if len(dla):
        table = dla.pivot(index="key", columns="step", values="value")
        first, last = table.columns.min(), table.columns.max()
        nodes = table.drop(index=["logit_diff", "rest"], errors="ignore")
        scale = max(float(nodes[first].abs().max()), float(nodes[last].abs().max()), 1e-12)
        big = (nodes[first].abs() >= flip_share * scale) | (nodes[last].abs() >= flip_share * scale)
        flips = nodes[big & (np.sign(nodes[first]) * np.sign(nodes[last]) < 0)]
        largest = nodes[last].abs().sort_values(ascending=False).index[:top]
        out["dla"] = {
            "first_step": int(first),
            "last_step": int(last),
            "logit_diff": {int(s): float(v) for s, v in table.loc["logit_diff"].items()},
            "largest_at_last_step": {
                name: {"first": float(nodes.at[name, first]), "last": float(nodes.at[name, last])}
                for name in largest
            },
            "sign_flips": {
                name: {"first": float(row[first]), "last": float(row[last])}
                for name, row in flips.iterrows()
            },
        }
    roles = frame[frame["kind"] == "roles"]
    if len(roles):
        out["roles"] = {}
        parts = roles["key"].str.split(":", expand=True)
        roles = roles.assign(role=parts[0], head=parts[1])
        for role, rows in roles.groupby("role"):
            by_step = []
            for step, at in rows.dropna(subset=["value"]).groupby("step"):
                best = at.loc[at["value"].idxmax()]
                held = role == "copying" or float(best["value"]) >= ROLE_FLOOR
                by_step.append(
                    {
                        "step": int(step),
                        "head": best["head"] if held else None,
                        "best": best["head"],
                        "score": float(best["value"]),
                    }
                )
            first, last = by_step[0]["head"], by_step[-1]["head"]
            out["roles"][role] = {
                "holder_first": first,
                "holder_last": last,
                "migrated": first is not None and last is not None and first != last,
                "by_step": by_step,
            }
    attention = frame[frame["kind"] == "attention"]
    if len(attention):
        table = attention.pivot(index="key", columns="step", values="value")
        first, last = table.columns.min(), table.columns.max()
        top_heads = table[last].sort_values(ascending=False).index[:top]
        out["attention_to_tagged"] = {
            name: {"first": float(table.at[name, first]), "last": float(table.at[name, last])}
            for name in top_heads
        }
    ov = frame[(frame["kind"] == "ov") & frame["key"].str.endswith(":cos_unembed")]
    if len(ov):
        last = ov[ov["step"] == ov["step"].max()].dropna(subset=["value"])
        best = last.sort_values("value", ascending=False).head(top)
        out["ov_change_toward_answer"] = {
            key.removesuffix(":cos_unembed"): float(value)
            for key, value in zip(best["key"], best["value"])
        }
    bias = frame[frame["kind"] == "bias"]
    if len(bias):
        by_step = bias.groupby("step")["value"]
        first, last = min(by_step.groups), max(by_step.groups)
        out["prejudice_risk"] = {
            "mean_first": float(by_step.get_group(first).mean()),
            "mean_last": float(by_step.get_group(last).mean()),
            "occupations": int(by_step.get_group(last).size),
        }
    faith = frame[frame["kind"] == "faithfulness"]
    if len(faith):
        series: dict = {}
        for key in sorted({k for k in faith["key"] if "@" in k}):
            which, budget = key.split("@")
            rows = faith[faith["key"] == key].sort_values("step")
            for step, value in zip(rows["step"], rows["value"]):
                entry = series.setdefault(budget, {}).setdefault(int(step), {"step": int(step)})
                entry[which] = None if value is None or value != value else float(value)
        out["faithfulness_over_time"] = {
            budget: list(by_step.values()) for budget, by_step in series.items()
        }
        areas: dict[int, dict] = {}
        for key, step, value in zip(faith["key"], faith["step"], faith["value"]):
            if key.startswith(("cpr:", "cmd:")):
                measure, which = key.split(":")
                entry = areas.setdefault(int(step), {"step": int(step)})
                entry[f"{measure}_{which}"] = None if value is None or value != value else value
        if areas:
            out["faithfulness_areas"] = [areas[s] for s in sorted(areas)]
    aligned = frame[frame["kind"].str.startswith("alignment:")]
    if len(aligned):
        out["alignment"] = {}
        for kind, rows in aligned.groupby("kind"):
            by_budget: dict = {}
            for step, key, value in zip(rows["step"], rows["key"], rows["value"]):
                measure, budget = key.split("@")
                entry = by_budget.setdefault(budget, {}).setdefault(int(step), {"step": int(step)})
                entry[measure] = float(value)
            out["alignment"][kind.removeprefix("alignment:")] = {
                budget: [by_step[s] for s in sorted(by_step)]
                for budget, by_step in by_budget.items()
            }
    return out
