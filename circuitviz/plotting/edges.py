"""Which edges a view shows, and how two views of a circuit differ.

All functions take per-edge vectors in the graph's canonical valid-edge order and return edge
indices into them. Scores are signed; "strength" means ``|score|``. Non-finite scores (a float16
overflow in a stored snapshot) are never shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circuitviz.graph import selection

DIFF_CATEGORIES = (
    "unchanged",
    "noise",
    "weakened",
    "strengthened",
    "removed",
    "added",
    "flipped",
)


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Edge indices by decreasing ``|score|``; ties keep edge order; non-finite scores last
    (``circuitviz.graph.selection``'s order, which discovery and tuning use too)."""
    return selection.rank_order(selection.edge_ranking(scores))


def edge_ranks(order: np.ndarray) -> np.ndarray:
    """``ranks[e]`` = 1-based rank of edge ``e`` in ``order`` (1 = strongest)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def select_edges(
    scores: np.ndarray,
    *,
    threshold: float = 0.0,
    top_n: int | None = None,
    within: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the edges a view shows, strongest first: the one selection rule of discovery
    and tuning (``circuitviz.graph.selection.select_edges``) with a view's leniency.

    An edge is shown when ``|score| >= threshold`` (and ``score != 0``: an edge with no score is
    not drawn), it is in ``within`` (a boolean mask, e.g. the run's stored circuit) when that is
    given, and it is among the ``top_n`` strongest of those (a ``top_n`` past the graph shows
    every edge). ``order`` is ``rank_order(scores)`` if the caller already has it.
    """
    if top_n is not None and top_n < 0:
        raise ValueError(f"top_n must be >= 0 or None, got {top_n!r}")
    scores = np.asarray(scores)
    return selection.select_edges(
        scores,
        top_n=None if top_n is None else min(int(top_n), len(scores)),
        threshold=threshold,
        within=within,
        drop_zero=True,
        order=order,
    )


@dataclass(frozen=True, eq=False)
class EdgeDiff:
    """How view B of a circuit differs from view A (same graph, e.g. two steps of one run).

    ``edges``: indices of every edge shown in A or B; ``category``: index into
    ``DIFF_CATEGORIES`` per entry of ``edges``. IoU is |A ∩ B| / |A ∪ B| over edges and over the
    boxes (heads, MLPs, input, logits) the edges touch.
    """

    edges: np.ndarray
    category: np.ndarray
    edge_iou: float
    node_iou: float
    n_a: int
    n_b: int

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.category, minlength=len(DIFF_CATEGORIES))
        return {name: int(n) for name, n in zip(DIFF_CATEGORIES, found)}


def diff_edges(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    threshold: float = 0.0,
    top_n: int | None = None,
    rel_tol: float = 0.1,
    noise_std: np.ndarray | None = None,
    noise_k: float = 2.0,
    edge_src_node: np.ndarray | None = None,
    edge_dst_node: np.ndarray | None = None,
) -> EdgeDiff:
    """Classify every edge shown in A or B.

    * ``added`` / ``removed``: shown only in B / only in A;
    * ``flipped``: shown in both with opposite signs;
    * ``strengthened`` / ``weakened``: shown in both, ``|b|`` above / below ``|a|`` by more than
      ``rel_tol`` of the larger;
    * ``unchanged``: the rest;
    * ``noise``: any of the above whose change ``|b - a|`` is below ``noise_k`` times the edge's
      rescoring standard deviation ``noise_std`` (when given): a change one cannot tell from noise.

    Node IoU needs ``edge_src_node``/``edge_dst_node`` (from the layout); without them it is NaN.
    """
    if not 0 <= rel_tol < 1:
        raise ValueError(f"rel_tol must be in [0, 1), got {rel_tol!r}")
    if noise_k <= 0:
        raise ValueError(f"noise_k must be positive, got {noise_k!r}")
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in shape: {a.shape} vs {b.shape}")
    in_a = np.zeros(a.shape, bool)
    in_a[select_edges(a, threshold=threshold, top_n=top_n)] = True
    in_b = np.zeros(b.shape, bool)
    in_b[select_edges(b, threshold=threshold, top_n=top_n)] = True
    union = np.flatnonzero(in_a | in_b)
    ua, ub = np.nan_to_num(a[union]), np.nan_to_num(b[union])
    both = in_a[union] & in_b[union]

    code = {name: i for i, name in enumerate(DIFF_CATEGORIES)}
    category = np.full(len(union), code["unchanged"], dtype=np.int64)
    larger = np.maximum(np.abs(ua), np.abs(ub))
    delta = np.abs(ub) - np.abs(ua)
    category[both & (delta > rel_tol * larger)] = code["strengthened"]
    category[both & (delta < -rel_tol * larger)] = code["weakened"]
    category[both & (np.sign(ua) * np.sign(ub) < 0)] = code["flipped"]
    category[~in_a[union]] = code["added"]
    category[~in_b[union]] = code["removed"]
    if noise_std is not None:
        std = np.asarray(noise_std, dtype=np.float64)[union]
        category[np.abs(ub - ua) < noise_k * np.nan_to_num(std)] = code["noise"]

    n_union = len(union)
    edge_iou = float(both.sum() / n_union) if n_union else 1.0
    node_iou = float("nan")
    if edge_src_node is not None and edge_dst_node is not None:
        node_iou = _node_iou(in_a, in_b, edge_src_node, edge_dst_node)
    return EdgeDiff(
        edges=union,
        category=category,
        edge_iou=edge_iou,
        node_iou=node_iou,
        n_a=int(in_a.sum()),
        n_b=int(in_b.sum()),
    )


def nodes_touched(shown: np.ndarray, edge_src_node: np.ndarray, edge_dst_node: np.ndarray):
    """Sorted unique node indices touched by the edges ``shown`` (indices)."""
    return np.union1d(edge_src_node[shown], edge_dst_node[shown])


def _node_iou(in_a, in_b, edge_src_node, edge_dst_node) -> float:
    nodes_a = nodes_touched(np.flatnonzero(in_a), edge_src_node, edge_dst_node)
    nodes_b = nodes_touched(np.flatnonzero(in_b), edge_src_node, edge_dst_node)
    union = len(np.union1d(nodes_a, nodes_b))
    return float(len(np.intersect1d(nodes_a, nodes_b)) / union) if union else 1.0
