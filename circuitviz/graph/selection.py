"""Choosing edges from per-edge scores: the one selection rule of discovery, tuning and the dashboard.

Works on numpy vectors in the graph's canonical edge order (``names.NodeLists.edge_pairs``), and
imports no torch, so the dashboard filters with exactly the rule the engine uses.

1. Rank: ``|score|`` (or the signed score), or the circuit-tuning paper's node-weighted ranking
   (``top_nodes_new``): ``|s_e| * sum of |s| out of e's source * sum of |s| into e's destination``.
2. Order by decreasing rank, ties kept in edge order (a stable sort); non-finite scores never count.
3. Keep ranks ``>= threshold`` (when given), then the first ``top_n`` (when given).

``SelectionConfig`` names a rule for discovery and tuning (top-n, threshold, node-weighted) and
holds the one "N larger than the graph" check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from circuitviz.options import check_options, normalise_choices, option

Rule = Literal["top-n", "threshold", "node-weighted"]
RULE_ALIASES = {"top_n": "top-n", "node_weighted": "node-weighted"}


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """How a circuit is chosen from edge scores.

    >>> import numpy as np
    >>> import circuitviz as cv
    >>> rule = cv.SelectionConfig(top_n=2)
    >>> rule.select(np.array([0.1, -3.0, 2.0, 0.5]), np.zeros(4, int), np.arange(4)).tolist()
    [1, 2]
    """

    rule: Rule = option(
        "top-n",
        flag="--selection",
        aliases=RULE_ALIASES,
        help="top-n: the N edges with the largest |score|; threshold: every edge with |score| >= "
        "--threshold; node-weighted: the paper's ranking of |score| times the strength of both "
        "endpoints, top N",
    )
    top_n: int | None = option(100, low=0, metavar="N", help="edges to keep")
    threshold: float | None = option(None, low=0.0, help="for --selection threshold: |score| >= T")

    def __post_init__(self) -> None:
        normalise_choices(self)
        check_options(self)
        if self.rule == "threshold" and self.threshold is None:
            raise ValueError("SelectionConfig.threshold must be set when rule='threshold'")
        if self.rule != "threshold" and self.top_n is None:
            raise ValueError(f"SelectionConfig.top_n must be set when rule={self.rule!r}")

    def check_fits(self, n_edges: int, *, flag: str = "--top-n") -> None:
        """A ValueError when the rule asks for more edges than the graph has."""
        check_fits("top_n", None if self.rule == "threshold" else self.top_n, n_edges, flag=flag)

    def select(self, scores: np.ndarray, src_idx: np.ndarray, dst_idx: np.ndarray) -> np.ndarray:
        """Edge indices this rule keeps, strongest first (see the module docstring)."""
        if self.rule == "threshold":
            return select_edges(scores, threshold=self.threshold)
        weights = (src_idx, dst_idx) if self.rule == "node-weighted" else None
        return select_edges(scores, top_n=self.top_n, node_weights=weights)


def check_fits(name: str, value: int | None, n_edges: int, *, flag: str | None = None) -> None:
    """The one check that a circuit size fits the graph."""
    if value is not None and value > n_edges:
        flag = flag or "--" + name.replace("_", "-")
        raise ValueError(
            f"{name}={value} is larger than the graph, which has {n_edges} edges; "
            f"choose {flag} <= {n_edges} (a circuit never exceeds the graph)"
        )


def edge_ranking(
    scores: np.ndarray,
    *,
    absolute: bool = True,
    node_weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``[n_edges]`` float64 rank values; non-finite scores rank as -inf (never selected).

    ``node_weights = (src_idx, dst_idx)`` (each edge's source and destination index) gives the
    node-weighted ranking; it always uses ``|score|``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    values = np.where(finite, scores, 0.0)
    if node_weights is not None:
        src_idx, dst_idx = (np.asarray(index, dtype=np.int64) for index in node_weights)
        magnitude = np.abs(values)
        out_strength = np.bincount(src_idx, magnitude)
        in_strength = np.bincount(dst_idx, magnitude)
        values = magnitude * out_strength[src_idx] * in_strength[dst_idx]
    elif absolute:
        values = np.abs(values)
    return np.where(finite, values, -np.inf)


def select_edges(
    scores: np.ndarray,
    *,
    top_n: int | None = None,
    threshold: float | None = None,
    absolute: bool = True,
    node_weights: tuple[np.ndarray, np.ndarray] | None = None,
    within: np.ndarray | None = None,
    drop_zero: bool = False,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the kept edges, strongest first.

    ``within``: a boolean mask the kept edges must lie in. ``drop_zero``: never keep an edge whose
    rank is 0 (the dashboard's rule: an edge with no score is not drawn). ``order``: a precomputed
    ``rank_order`` of the same ranking, when the caller redraws often.
    """
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int | np.integer)):
        raise ValueError(f"n must be a non-negative integer, got {top_n!r}")
    if top_n is not None and top_n < 0:
        raise ValueError(f"n must be a non-negative integer, got {top_n!r}")
    if threshold is not None and not threshold >= 0:  # also rejects NaN
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    ranking = edge_ranking(scores, absolute=absolute, node_weights=node_weights)
    if top_n is not None and top_n > len(ranking):
        raise ValueError(
            f"asked for {top_n} edges but the graph has only {len(ranking)}; use n <= "
            f"{len(ranking)}"
        )
    order = rank_order(ranking) if order is None else order
    ranked = ranking[order]
    keep = np.isfinite(ranked)
    if threshold is not None:
        keep &= ranked >= threshold
    if drop_zero:
        keep &= ranked > 0
    if within is not None:
        keep &= np.asarray(within, dtype=bool)[order]
    chosen = order[keep]
    return chosen if top_n is None else chosen[:top_n]


def rank_order(ranking: np.ndarray) -> np.ndarray:
    """Edge indices by decreasing rank; ties keep edge order; -inf (non-finite scores) last."""
    return np.argsort(-np.asarray(ranking, dtype=np.float64), kind="stable")
