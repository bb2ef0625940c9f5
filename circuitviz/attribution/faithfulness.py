"""Faithfulness: how much of the model's behaviour a circuit alone carries (Hanna et al. 2024; MIB).

Edge-level ablation, one forward per circuit:

1. Baseline activations of every source (corrupted prompt, data mean or zero), as for attribution.
2. During the forward, each source hook stores ``delta_u = a_u(this forward) - a_u(baseline)``
   node-major, at the ablated positions (every position, or the target position).
3. At each destination hook, the edges outside the circuit are removed with one einsum over the
   complement mask: ``x_d <- x_d - sum_{u -> d not in circuit} delta_u``. The destination then sees
   the baseline value along every ablated edge and the live value along every kept edge.
4. faithfulness = (m_circuit - m_empty) / (m_full - m_empty), with the metric averaged over all
   examples first. m_full is the unablated model; m_empty ablates every edge (with the EAP-IG graph
   and the corrupted baseline that is exactly the corrupted run). Where the two are equal up to
   rounding (``SPAN_TOLERANCE``) the ratio measures noise: it is NaN, and ``CircuitMetrics.
   check_span`` turns that into an error for a command or a caller that wants one number.

A sweep over edge budgets (top-N by |score| at log-spaced fractions of all edges) gives MIB's
summaries: CPR, the area under the faithfulness curve, and CMD, the area between it and 1, both
over the edge fraction in [0, 1] by the trapezoid rule, with the empty circuit at fraction 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from circuitviz.attribution.activations import (
    BaselineActivations,
    baseline_activations,
    source_means,
)
from circuitviz.attribution.config import (
    AttributionConfig,
    Baseline,
    MetricName,
    Positions,
    check_batch,
    check_sft_choices,
)
from circuitviz.attribution.hooks import edge_ablation_hooks
from circuitviz.graph.select import Circuit, empty_circuit, prune_dead_ends, random_circuit, top_n
from circuitviz.graph.topology import Graph
from circuitviz.options import check_options, option
from circuitviz.tasks.base import METRICS

DEFAULT_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True, kw_only=True)
class FaithfulnessConfig:
    """How ablated edges are replaced (``baseline``), where (``positions``: every position or only
    the target position) and which metric is compared: the ablation half of an
    ``AttributionConfig`` (``from_attribution`` takes it from one).

    >>> import circuitviz as cv
    >>> cv.FaithfulnessConfig.from_attribution(cv.AttributionConfig(baseline="mean")).baseline
    'mean'
    """

    baseline: Baseline = option("corrupted", help="the value an ablated edge carries")
    positions: Positions = option("all", help="where edges are ablated")
    metric: MetricName = option("logit_diff", help="the metric compared")
    keep_dead_ends: bool = option(
        False,
        help="measure circuits as given; by default edges on no input -> logits path are removed "
        "first, as the reference EAP-IG/MIB evaluation does",
    )

    def __post_init__(self) -> None:
        check_options(self)
        check_sft_choices("FaithfulnessConfig", self.metric, self.baseline, self.positions)

    @classmethod
    def from_attribution(
        cls, config: AttributionConfig, *, keep_dead_ends: bool = False
    ) -> FaithfulnessConfig:
        return cls(
            baseline=config.baseline,
            positions=config.positions,
            metric=config.metric,
            keep_dead_ends=keep_dead_ends,
        )


# m_full - m_empty at or below this fraction of the metric's size is rounding of the two means, not
# an effect: an ablated forward that ablates nothing reproduces the clean one bit for bit, and
# float32 values carry about 1e-7 relative error, ten times below this.
SPAN_TOLERANCE = 1e-6


@dataclass(frozen=True, kw_only=True)
class CircuitMetrics:
    """Mean metric over ``n_examples`` of the full model, the empty circuit and each circuit."""

    m_full: float
    m_empty: float
    m_circuits: tuple[float, ...]
    n_examples: int

    @property
    def span_is_defined(self) -> bool:
        """Whether m_full - m_empty is an effect of the ablation rather than rounding: larger than
        ``SPAN_TOLERANCE`` times the larger of the two in size (and finite)."""
        span = self.m_full - self.m_empty
        scale = max(abs(self.m_full), abs(self.m_empty))
        return math.isfinite(span) and abs(span) > SPAN_TOLERANCE * scale

    def faithfulness(self) -> tuple[float, ...]:
        """(m_circuit - m_empty) / (m_full - m_empty) of each circuit; NaN for every one where the
        span is not defined (``span_is_defined``): a missing value, never a ratio of rounding."""
        if not self.span_is_defined:
            return tuple(float("nan") for _ in self.m_circuits)
        span = self.m_full - self.m_empty
        return tuple((m - self.m_empty) / span for m in self.m_circuits)

    def check_span(self) -> None:
        """Raise ``ValueError`` naming the two means where faithfulness is not defined."""
        if not self.span_is_defined:
            raise ValueError(
                "faithfulness is undefined on these examples: the full model's mean metric "
                f"({self.m_full:.6g}) and the empty circuit's ({self.m_empty:.6g}, every edge "
                f"ablated) are equal to rounding over {self.n_examples} examples, so no circuit "
                "can be measured between them; measure on examples where ablating every edge "
                "changes the metric (another baseline, or other examples)"
            )


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Faithfulness of the top-N circuits at each edge fraction, and MIB's CPR and CMD."""

    fractions: tuple[float, ...]
    n_edges: tuple[int, ...]
    faithfulness: tuple[float, ...]
    cpr: float
    cmd: float
    metrics: CircuitMetrics = field(repr=False)


def _ablation_weights(batch, positions: str, device, dtype) -> torch.Tensor:
    """``[batch, pos]``: 1 where edges are ablated."""
    mask = batch.attention_mask.to(device)
    if positions == "all":
        return torch.ones(mask.shape, device=device, dtype=dtype)
    rows = torch.arange(mask.shape[0], device=device)
    weights = torch.zeros(mask.shape, device=device, dtype=dtype)
    weights[rows, batch.target_pos.to(device)] = 1
    return weights


def run_with_ablated_edges(
    model, graph: Graph, batch, circuit: Circuit, base: BaselineActivations, positions: str = "all"
) -> torch.Tensor:
    """Logits ``[batch, pos, d_vocab]`` of the clean prompt with every edge outside ``circuit``
    replaced by its baseline (no grad)."""
    device, dtype = model.device, model.dtype
    ids = batch.clean_ids.to(device)
    weights = _ablation_weights(batch, positions, device, dtype)[None, :, :, None]
    ablated = (graph.valid_mask & ~circuit.edge_mask).to(device, dtype)
    n_batch, n_pos = ids.shape
    delta = torch.zeros(graph.n_src, n_batch, n_pos, model.info.d_model, device=device, dtype=dtype)

    def record(spec, rows):
        delta[spec.src_slice] = (rows - base.sources[spec.src_slice]) * weights

    fwd, fired = edge_ablation_hooks(graph, ablated, record, lambda n_up: delta[:n_up], model)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=fwd):
        logits = model.bridge(ids, attention_mask=batch.attention_mask.to(device))
    fired.verify("edge ablation forward")
    return logits


def evaluate_circuits(
    model,
    graph: Graph,
    batches: Iterable,
    circuits: Sequence[Circuit],
    config: FaithfulnessConfig,
    *,
    metric: Callable | None = None,
) -> CircuitMetrics:
    """Mean metric of the full model, of the empty circuit and of every circuit, over all batches
    (one baseline forward, one clean forward and 1 + len(circuits) ablated forwards per batch).
    Dead-end edges (on no input -> logits path) are removed from each circuit first unless
    ``config.keep_dead_ends``: they cannot carry anything from the input to the logits. With
    ``positions="target"`` a dead end is an edge that reaches no logits (``prune_dead_ends``)."""
    if not config.keep_dead_ends:
        # Ablating the target position only leaves every other position intact: a node there
        # reads the task through them, so only edges that reach no logits are dead ends.
        from_input = config.positions != "target"
        circuits = [prune_dead_ends(circuit, from_input=from_input) for circuit in circuits]
    batches = list(batches)
    for batch in batches:
        check_batch(batch, config.metric, config.baseline, custom_metric=metric is not None)
    metric = metric if metric is not None else METRICS[config.metric]
    means = source_means(model, graph, batches) if config.baseline == "mean" else None
    empty = empty_circuit(graph)
    totals = torch.zeros(2 + len(circuits), dtype=torch.float64)
    n_examples = 0
    for batch in batches:
        base = baseline_activations(model, graph, batch, config.baseline, means)
        with torch.no_grad():
            clean = model.bridge(
                batch.clean_ids.to(model.device),
                attention_mask=batch.attention_mask.to(model.device),
            )
        values = [metric(clean, batch).sum()]
        for circuit in (empty, *circuits):
            logits = run_with_ablated_edges(model, graph, batch, circuit, base, config.positions)
            values.append(metric(logits, batch).sum())
        totals += torch.stack(values).double().cpu()
        n_examples += int(batch.clean_ids.shape[0])
    if n_examples == 0:
        raise ValueError("evaluate_circuits needs at least one example; the batches were empty")
    means_ = (totals / n_examples).tolist()
    return CircuitMetrics(
        m_full=means_[0], m_empty=means_[1], m_circuits=tuple(means_[2:]), n_examples=n_examples
    )


def area_under(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area of ``values`` over ``fractions`` (sorted, in [0, 1])."""
    x = torch.tensor(fractions, dtype=torch.float64)
    y = torch.tensor(values, dtype=torch.float64)
    return float(torch.trapezoid(y, x))


def faithfulness_sweep(
    model,
    graph: Graph,
    batches: Iterable,
    scores: torch.Tensor,
    config: FaithfulnessConfig,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    metric: Callable | None = None,
) -> SweepResult:
    """Faithfulness of the top-N edges (by |score|) at each fraction of all edges, plus CPR/CMD."""
    fractions = tuple(sorted(float(f) for f in fractions))
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    counts = tuple(max(1, round(f * graph.n_edges)) for f in fractions)
    circuits = [top_n(scores, graph, n) for n in counts]
    metrics = evaluate_circuits(model, graph, batches, circuits, config, metric=metric)
    faith = metrics.faithfulness()
    x = (0.0, *fractions)
    y = (0.0, *faith)
    return SweepResult(
        fractions=fractions,
        n_edges=counts,
        faithfulness=faith,
        cpr=area_under(x, y),
        cmd=area_under(x, [abs(1 - v) for v in y]),
        metrics=metrics,
    )


def circuit_and_random_faithfulness(
    model,
    graph: Graph,
    batches: Iterable,
    circuit: Circuit,
    config: FaithfulnessConfig,
    *,
    seed: int = 0,
    metric: Callable | None = None,
) -> tuple[float, float, CircuitMetrics]:
    """Faithfulness of ``circuit`` and of a random circuit with as many edges (seeded)."""
    contrast = random_circuit(graph, circuit.n_edges, seed=seed)
    metrics = evaluate_circuits(model, graph, batches, [circuit, contrast], config, metric=metric)
    faith, random_faith = metrics.faithfulness()
    return faith, random_faith, metrics
