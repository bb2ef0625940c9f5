"""Edge ablation and faithfulness on tiny float64 models.

Checks: ablating every edge reproduces the corrupted run; keeping every edge reproduces the clean
model bit for bit; ablating one edge matches the exact-patching oracle; the faithfulness ratio and
the CPR/CMD areas follow their definitions.
"""

from __future__ import annotations

import pytest
import torch
from support.batches import random_batch as shared_random_batch

from circuitviz.attribution import (
    AttributionConfig,
    FaithfulnessConfig,
    attribute,
    circuit_and_random_faithfulness,
    edge_effects,
    evaluate_circuits,
    faithfulness_sweep,
    run_with_ablated_edges,
)
from circuitviz.attribution.activations import baseline_activations
from circuitviz.attribution.faithfulness import area_under
from circuitviz.graph.select import Circuit, empty_circuit, full_circuit, top_n
from circuitviz.graph.topology import graph_for
from circuitviz.tasks.base import logit_diff


def random_batch(n: int = 5, seed: int = 0):
    return shared_random_batch(n, 7, seed=seed, corrupt_at=2, min_len=4, full_first=False)


@pytest.fixture(params=["gpt2", "llama"])
def model(request, tiny_gpt2, tiny_llama):
    return tiny_gpt2 if request.param == "gpt2" else tiny_llama


def forward(model, ids, mask):
    with torch.no_grad():
        return model.bridge(ids, attention_mask=mask)


def test_ablating_every_edge_reproduces_the_corrupted_run(model):
    graph = graph_for(model.info)
    batch = random_batch()
    base = baseline_activations(model, graph, batch, "corrupted")
    ablated = run_with_ablated_edges(model, graph, batch, empty_circuit(graph), base)
    corrupted = forward(model, batch.corrupt_ids, batch.attention_mask)
    clean = forward(model, batch.clean_ids, batch.attention_mask)
    real = batch.attention_mask.bool()
    assert (corrupted - clean)[real].abs().max() > 1e-3  # the two runs do differ
    torch.testing.assert_close(ablated[real], corrupted[real], rtol=0, atol=1e-10)


@pytest.mark.parametrize("baseline", ["corrupted", "mean", "zero"])
def test_keeping_every_edge_reproduces_the_clean_model_exactly(model, baseline):
    graph = graph_for(model.info)
    batch = random_batch()
    base = baseline_activations(model, graph, batch, baseline)
    kept = run_with_ablated_edges(model, graph, batch, full_circuit(graph), base)
    assert torch.equal(kept, forward(model, batch.clean_ids, batch.attention_mask))


@pytest.mark.parametrize("positions", ["all", "target"])
def test_ablating_one_edge_equals_exact_patching(model, positions):
    graph = graph_for(model.info)
    batch = random_batch(n=3)
    config = AttributionConfig(positions=positions)
    edges = graph.edge_index()[:: max(1, graph.n_edges // 12)].tolist()
    oracle = edge_effects(model, graph, batch, config, edges)
    base = baseline_activations(model, graph, batch, "corrupted")
    clean = logit_diff(forward(model, batch.clean_ids, batch.attention_mask), batch)
    for (i, j), expected in zip(edges, oracle.tolist()):
        keep = graph.valid_mask.clone()
        keep[i, j] = False
        circuit = Circuit.from_edge_mask(graph, keep)
        logits = run_with_ablated_edges(model, graph, batch, circuit, base, positions)
        effect = float((logit_diff(logits, batch) - clean).mean())
        assert effect == pytest.approx(expected, rel=1e-8, abs=1e-12)
    assert max(abs(v) for v in oracle.tolist()) > 1e-4


def test_faithfulness_is_the_normalised_metric(tiny_gpt2):
    graph = graph_for(tiny_gpt2.info)
    batches = [random_batch(seed=3), random_batch(n=2, seed=4)]
    config = FaithfulnessConfig()
    scores = attribute(tiny_gpt2, graph, batches, AttributionConfig()).scores
    circuit = top_n(scores, graph, 40)
    metrics = evaluate_circuits(
        tiny_gpt2, graph, batches, [circuit, full_circuit(graph), empty_circuit(graph)], config
    )
    faith, full, empty = metrics.faithfulness()
    assert full == pytest.approx(1.0, abs=1e-12) and empty == pytest.approx(0.0, abs=1e-9)
    m_circuit = metrics.m_circuits[0]
    assert faith == pytest.approx(
        (m_circuit - metrics.m_empty) / (metrics.m_full - metrics.m_empty)
    )
    clean = torch.cat(
        [logit_diff(forward(tiny_gpt2, b.clean_ids, b.attention_mask), b) for b in batches]
    )
    assert metrics.m_full == pytest.approx(float(clean.mean()), rel=1e-12)
    assert metrics.n_examples == 7
    same, random_faith, _ = circuit_and_random_faithfulness(
        tiny_gpt2, graph, batches, circuit, config, seed=1
    )
    assert same == pytest.approx(faith, rel=1e-9)
    assert random_faith != pytest.approx(faith)


def test_sweep_reports_cpr_and_cmd_as_areas(tiny_llama):
    graph = graph_for(tiny_llama.info)
    batches = [random_batch(seed=5)]
    scores = attribute(tiny_llama, graph, batches, AttributionConfig()).scores
    sweep = faithfulness_sweep(
        tiny_llama, graph, batches, scores, FaithfulnessConfig(), fractions=(0.1, 0.5, 1.0)
    )
    assert sweep.n_edges == (round(0.1 * graph.n_edges), round(0.5 * graph.n_edges), graph.n_edges)
    assert sweep.faithfulness[-1] == pytest.approx(1.0)
    x, y = (0.0, 0.1, 0.5, 1.0), (0.0, *sweep.faithfulness)
    expected_cpr = sum((x[k + 1] - x[k]) * (y[k] + y[k + 1]) / 2 for k in range(3))
    expected_cmd = sum(
        (x[k + 1] - x[k]) * (abs(1 - y[k]) + abs(1 - y[k + 1])) / 2 for k in range(3)
    )
    assert sweep.cpr == pytest.approx(expected_cpr) and sweep.cmd == pytest.approx(expected_cmd)


def test_area_under_and_config_validation():
    assert area_under([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positions"):
        FaithfulnessConfig(positions="some")


def test_target_position_ablation_keeps_edges_no_input_edge_feeds(tiny_gpt2):
    """Ablated at the target position only, a circuit without any edge from the input still
    carries the task (the other positions feed it intact): only edges that reach no logits are
    dropped, so the measure equals the unpruned one there, and is not the empty circuit's."""
    graph = graph_for(tiny_gpt2.info)
    batches = [random_batch(seed=5)]
    src = graph.src_index()
    mask = graph.valid_mask.clone()
    mask[src["input"]] = False  # no edge from the input at all
    circuit = Circuit.from_edge_mask(graph, mask)
    pruned, kept = (
        evaluate_circuits(
            tiny_gpt2,
            graph,
            batches,
            [circuit],
            FaithfulnessConfig(positions="target", keep_dead_ends=keep),
        )
        for keep in (False, True)
    )
    assert pruned.m_circuits == pytest.approx(kept.m_circuits, rel=1e-12)
    assert pruned.faithfulness()[0] != pytest.approx(0.0, abs=1e-3)
    every = FaithfulnessConfig(positions="all")  # ablated everywhere: nothing reaches the input
    assert evaluate_circuits(tiny_gpt2, graph, batches, [circuit], every).faithfulness()[0] == (
        pytest.approx(0.0, abs=1e-9)
    )


def test_faithfulness_is_undefined_where_ablation_changes_the_metric_by_rounding_only(tiny_gpt2):
    import math

    import circuitviz as cv

    graph = graph_for(tiny_gpt2.info)
    batches = [random_batch(seed=3)]
    circuit = top_n(attribute(tiny_gpt2, graph, batches, AttributionConfig()).scores, graph, 40)

    def offset_metric(weight: float, offset: float = 1000.0):
        return lambda logits, batch: offset + weight * logit_diff(logits, batch)

    def measured(weight: float, offset: float = 1000.0):
        metric = offset_metric(weight, offset)
        return evaluate_circuits(
            tiny_gpt2, graph, batches, [circuit], FaithfulnessConfig(), metric=metric
        )

    real = measured(1.0, offset=0.0)
    assert real.span_is_defined
    real.check_span()
    assert math.isfinite(real.faithfulness()[0])
    # The same circuit under a metric whose span is 1e-13 of its size: not exactly zero, so a
    # plain ratio would report a number, but one made of rounding.
    rounding = measured(1e-10)
    assert rounding.m_full != rounding.m_empty and not rounding.span_is_defined
    assert math.isnan(rounding.faithfulness()[0])
    with pytest.raises(ValueError, match="undefined on these examples.*1000"):
        rounding.check_span()
    with pytest.raises(ValueError, match="undefined on these examples"):
        cv.faithfulness(tiny_gpt2, graph, batches, circuit, metric=offset_metric(1e-10))
    assert cv.faithfulness(
        tiny_gpt2, graph, batches, circuit, metric=offset_metric(1.0, offset=0.0)
    ) == pytest.approx(real.faithfulness()[0], rel=1e-12)
