"""Two runs of one model compared step by step: do they find the same circuit, and where do they part?

For runs on the same graph (circuit- against full fine-tuning, two seeds, two N), from their stored
snapshots alone (no model is loaded):

1. At every step both runs have a snapshot of their task, each run's circuit at an edge budget is
   its top ``k`` edges by |score| (``k`` = the budget times the graph's edges), and its nodes are
   those the edges touch.
2. ``edge_iou`` and ``node_iou`` are intersection over union of the two sets.
3. ``diverging_edges``: each edge's change in |score| from a run's first snapshot to its last; the
   edges one run strengthens while the other does not (its change <= 0), largest gap first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from circuitviz.graph.names import parse_edge, parse_node
from circuitviz.runs import Run


def _snapshots(run: Run) -> dict[int, np.ndarray]:
    """step -> |scores| ``[n_edges]`` of the run's own task (the last snapshot at each step)."""
    frame, matrix = run.score_matrix(task=run.task)
    if not len(frame):
        raise ValueError(f"run {run.id} has no snapshot of its task {run.task}")
    return {int(step): np.abs(matrix[i].astype(np.float64)) for i, step in enumerate(frame["step"])}


def _check_same_graph(a: Run, b: Run) -> None:
    if a.edge_names() != b.edge_names():
        raise ValueError(
            f"runs {a.id} and {b.id} were recorded on different graphs (models, or MLP groups); "
            "only runs of one model can be aligned"
        )


def _top(magnitudes: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries (ties broken by edge order, as selection does)."""
    order = np.lexsort((np.arange(len(magnitudes)), -magnitudes))
    return order[:k]


def _nodes(edge_names: list[str], edges: np.ndarray) -> set[str]:
    out: set[str] = set()
    for i in edges:
        src, dst = parse_edge(edge_names[i])
        out.update((parse_node(src).base, parse_node(dst).base))
    return out


def circuit_alignment(a: Run, b: Run, budgets=(0.01, 0.1)) -> pd.DataFrame:
    """step, budget, k, edge_iou, node_iou at every step both runs have a snapshot."""
    _check_same_graph(a, b)
    snaps_a, snaps_b = _snapshots(a), _snapshots(b)
    names = a.edge_names()
    rows = []
    for step in sorted(set(snaps_a) & set(snaps_b)):
        for budget in budgets:
            k = max(1, round(budget * len(names)))
            ea, eb = set(_top(snaps_a[step], k).tolist()), set(_top(snaps_b[step], k).tolist())
            na, nb = _nodes(names, np.array(sorted(ea))), _nodes(names, np.array(sorted(eb)))
            rows.append(
                {
                    "step": step,
                    "budget": budget,
                    "k": k,
                    "edge_iou": len(ea & eb) / len(ea | eb),
                    "node_iou": len(na & nb) / len(na | nb),
                }
            )
    if not rows:
        raise ValueError(f"runs {a.id} and {b.id} share no snapshot step: nothing to align")
    return pd.DataFrame(rows)


def diverging_edges(a: Run, b: Run, top: int = 20) -> pd.DataFrame:
    """The edges ``a`` strengthens (|score| up from its first to its last snapshot) while ``b``
    does not: edge, change_a, change_b, largest ``change_a - change_b`` first."""
    _check_same_graph(a, b)
    snaps_a, snaps_b = _snapshots(a), _snapshots(b)
    change_a = snaps_a[max(snaps_a)] - snaps_a[min(snaps_a)]
    change_b = snaps_b[max(snaps_b)] - snaps_b[min(snaps_b)]
    keep = np.flatnonzero((change_a > 0) & (change_b <= 0))
    gap = change_a[keep] - change_b[keep]
    chosen = keep[np.argsort(-gap, kind="stable")[:top]]
    names = a.edge_names()
    return pd.DataFrame(
        {
            "edge": [names[i] for i in chosen],
            "change_a": change_a[chosen],
            "change_b": change_b[chosen],
        }
    )
