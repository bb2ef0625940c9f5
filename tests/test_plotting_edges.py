"""Edge selection and circuit diffs, each against a slow obviously-correct oracle."""

import numpy as np
import pytest

from circuitviz.plotting.edges import (
    DIFF_CATEGORIES,
    diff_edges,
    edge_ranks,
    rank_order,
    select_edges,
)


def oracle_select(scores, threshold=0.0, top_n=None, within=None):
    rows = []
    for e, s in enumerate(scores.tolist()):
        if not np.isfinite(s) or abs(s) < threshold or s == 0:
            continue
        if within is not None and not within[e]:
            continue
        rows.append((-abs(s), e))
    rows.sort()  # by strength, ties by edge index
    chosen = [e for _, e in rows]
    return chosen if top_n is None else chosen[:top_n]


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(500).astype(np.float32)
    values[::17] = values[1::17][: len(values[::17])]  # ties
    values[5] = np.nan
    values[6] = np.inf
    values[7] = 0.0
    return values


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.5])
@pytest.mark.parametrize("top_n", [None, 1, 37, 10_000])
def test_select_matches_oracle(scores, threshold, top_n):
    got = select_edges(scores, threshold=threshold, top_n=top_n)
    assert got.tolist() == oracle_select(scores, threshold, top_n)


def test_select_within_mask(scores):
    within = np.arange(len(scores)) % 3 == 0
    got = select_edges(scores, top_n=20, within=within)
    assert got.tolist() == oracle_select(scores, 0.0, 20, within)
    assert within[got].all()


def test_top_n_keeps_exactly_n_and_threshold_is_monotone(scores):
    assert len(select_edges(scores, top_n=100)) == 100
    sizes = [len(select_edges(scores, threshold=t)) for t in np.linspace(0, 3, 13)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == np.isfinite(scores).sum() - 1  # every finite non-zero edge


def test_ranks_are_positions_in_rank_order(scores):
    order = rank_order(scores)
    ranks = edge_ranks(order)
    assert sorted(ranks.tolist()) == list(range(1, len(scores) + 1))
    assert ranks[order[0]] == 1
    assert np.nanargmax(np.where(np.isfinite(scores), np.abs(scores), -1)) == order[0]


def test_bad_arguments_name_the_problem(scores):
    with pytest.raises(ValueError, match="threshold"):
        select_edges(scores, threshold=-1)
    with pytest.raises(ValueError, match="top_n"):
        select_edges(scores, top_n=-3)
    with pytest.raises(ValueError, match="shape"):
        diff_edges(scores, scores[:10])


def oracle_diff(a, b, threshold, top_n, rel_tol, std, k):
    in_a = set(oracle_select(a, threshold, top_n))
    in_b = set(oracle_select(b, threshold, top_n))
    out = {}
    for e in sorted(in_a | in_b):
        x, y = float(np.nan_to_num(a[e])), float(np.nan_to_num(b[e]))
        if e not in in_a:
            cat = "added"
        elif e not in in_b:
            cat = "removed"
        elif x * y < 0:
            cat = "flipped"
        elif abs(y) - abs(x) > rel_tol * max(abs(x), abs(y)):
            cat = "strengthened"
        elif abs(x) - abs(y) > rel_tol * max(abs(x), abs(y)):
            cat = "weakened"
        else:
            cat = "unchanged"
        if std is not None and abs(y - x) < k * std[e]:
            cat = "noise"
        out[e] = cat
    return out, in_a, in_b


@pytest.mark.parametrize("with_noise", [False, True])
def test_diff_matches_oracle(with_noise):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(300)
    b = a + 0.6 * rng.standard_normal(300)
    std = np.abs(rng.standard_normal(300)) * 0.2 if with_noise else None
    src = rng.integers(0, 20, 300)
    dst = rng.integers(0, 20, 300)
    diff = diff_edges(
        a,
        b,
        top_n=60,
        rel_tol=0.1,
        noise_std=std,
        noise_k=2.0,
        edge_src_node=src,
        edge_dst_node=dst,
    )
    expected, in_a, in_b = oracle_diff(a, b, 0.0, 60, 0.1, std, 2.0)
    got = {int(e): DIFF_CATEGORIES[c] for e, c in zip(diff.edges, diff.category)}
    assert got == expected
    assert diff.edge_iou == pytest.approx(len(in_a & in_b) / len(in_a | in_b))
    nodes_a = {int(src[e]) for e in in_a} | {int(dst[e]) for e in in_a}
    nodes_b = {int(src[e]) for e in in_b} | {int(dst[e]) for e in in_b}
    assert diff.node_iou == pytest.approx(len(nodes_a & nodes_b) / len(nodes_a | nodes_b))
    assert sum(diff.counts().values()) == len(in_a | in_b)
    assert (diff.n_a, diff.n_b) == (60, 60)


def test_identical_steps_are_unchanged_with_iou_one():
    a = np.linspace(-1, 1, 50)
    diff = diff_edges(a, a.copy(), top_n=10)
    assert diff.counts()["unchanged"] == 10
    assert diff.edge_iou == 1.0
