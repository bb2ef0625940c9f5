"""Graph counts and causal validity, against the published counts and a slow rule-by-rule oracle."""

from __future__ import annotations

import pytest

from circuitviz.attribution.hooks import dest_hooks, source_hooks
from circuitviz.graph.topology import build_graph, parse_edge, parse_node


def test_gpt2_small_counts_match_eap_ig_and_the_paper():
    assert build_graph(12, 12).n_edges == 32_491
    paper = build_graph(12, 12, paper=True)
    assert paper.n_edges == 31_890
    assert (paper.n_src, paper.n_dst) == (156, 444)


def reads(src: str, dst: str, n_layers: int) -> bool:
    """The validity rule written out: q/k/v of layer L read input and everything before layer L;
    m{L} also reads the heads of layer L; logits read everything."""
    s, d = parse_node(src, n_layers), parse_node(dst, n_layers)
    if d.kind == "logits" or s.kind == "input":
        return True
    if d.kind == "mlp":
        return s.layer < d.layer or (s.layer == d.layer and s.kind == "head")
    return s.layer < d.layer


@pytest.mark.parametrize("shape", [(2, 4, 2), (3, 3, 3)])
@pytest.mark.parametrize("paper", [False, True])
def test_valid_mask_follows_the_rule(shape, paper):
    graph = build_graph(*shape, paper=paper)
    for i, src in enumerate(graph.src_names):
        for j, dst in enumerate(graph.dst_names):
            assert bool(graph.valid_mask[i, j]) == reads(src, dst, graph.n_layers), (src, dst)
    assert [parse_edge(e) for e in graph.edge_names()][0][0] == graph.src_names[0]


def test_grouped_query_attention_has_one_key_value_reader_per_group():
    graph = build_graph(2, 4, 2)
    assert [n for n in graph.dst_names if n.startswith("a1.") and "<k>" in n] == [
        "a1.h0<k>",
        "a1.h1<k>",
    ]


def test_every_node_maps_to_one_bridge_hook_slice():
    for paper in (False, True):
        graph = build_graph(3, 4, 2, paper=paper)
        covered = sorted(
            i for h in source_hooks(graph) for i in range(h.src_slice.start, h.src_slice.stop)
        )
        assert covered == list(range(graph.n_src))
        readers = [j for h in dest_hooks(graph) for j in range(h.dst_slice.start, h.dst_slice.stop)]
        with_sources = [j for j in range(graph.n_dst) if bool(graph.valid_mask[:, j].any())]
        assert readers == with_sources
