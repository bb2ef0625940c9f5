"""Figures of a run (or several) against training step: metrics, edge trends, circuit size.

Inputs are plain data frames and arrays as ``circuitviz.runs.Run`` returns them (``steps()``,
``evals()``, ``score_matrix()``); nothing here reads a run itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from circuitviz.plotting import style as S

# (table, column, panel title) of the dynamics grid, in reading order: the task first (accuracy is
# the headline figure), then what it cost.
PANELS = (
    ("evals", "accuracy", "task accuracy (dev)"),
    ("evals", "task_metric", "task metric (logit difference, dev)"),
    ("evals", "lm_loss", "held-out language-model loss"),
    ("steps", "loss", "training loss"),
    ("steps", "tuned_ratio", "tuned-parameter ratio"),
    ("steps", "n_nodes", "nodes in the circuit"),
    ("steps", "n_edges", "edges in the circuit"),
)
CURSOR = "#444444"  # neutral: run colours are Okabe-Ito


@dataclass(frozen=True, kw_only=True)
class RunSeries:
    """One run's tables for overlaying: ``label`` names it in the legend."""

    label: str
    steps: pd.DataFrame
    evals: pd.DataFrame


def dynamics_figure(
    runs: list[RunSeries],
    *,
    cursor: float | None = None,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """A grid (two columns) of the panels in ``PANELS`` against step, one colour per run, with a vertical
    cursor at step ``cursor`` (the step the Circuit page shows)."""
    style = style or S.FigureStyle()
    rows = -(-len(PANELS) // 2)
    fig = make_subplots(
        rows=rows,
        cols=2,
        shared_xaxes=True,
        subplot_titles=[title for _, _, title in PANELS],
        vertical_spacing=0.07,
        horizontal_spacing=0.08,
    )
    for i, run in enumerate(runs):
        color = S.run_color(i)
        for p, (table, column, _) in enumerate(PANELS):
            frame = run.steps if table == "steps" else run.evals
            if column not in frame or frame[column].isna().all():
                continue
            fig.add_trace(
                go.Scatter(
                    x=frame["step"],
                    y=frame[column],
                    mode="lines+markers" if table == "evals" else "lines",
                    line={"color": color, "width": 2 * style.line_scale},
                    marker={"size": 5},
                    name=run.label,
                    legendgroup=run.label,
                    showlegend=p == _first_panel(run),  # one legend entry per run
                    hovertemplate=f"{run.label}<br>step %{{x}}<br>{column} %{{y:.4g}}<extra></extra>",
                ),
                row=p // 2 + 1,
                col=p % 2 + 1,
            )
    if cursor is not None:
        for p in range(len(PANELS)):
            fig.add_vline(
                x=float(cursor),
                line={"color": CURSOR, "width": 1.5 * style.line_scale, "dash": "dot"},
                row=p // 2 + 1,
                col=p % 2 + 1,
            )
    fig.update_xaxes(title_text="step", row=rows)
    _finish(fig, style, height=rows * 240 + 120)
    return fig


def _first_panel(run: RunSeries) -> int:
    """The first panel the run has data for (its legend entry goes there)."""
    for p, (table, column, _) in enumerate(PANELS):
        frame = run.steps if table == "steps" else run.evals
        if column in frame and not frame[column].isna().all():
            return p
    return -1


def intrinsic_dimension_figure(
    sweep: pd.DataFrame, *, style: S.FigureStyle | None = None
) -> go.Figure:
    """Final values of a top-N sweep against N (the paper's node-level intrinsic dimension).

    ``sweep`` has a ``top_n`` column and any of ``task_metric``, ``lm_loss``, ``tuned_ratio``,
    ``n_nodes`` (one row per run of the sweep)."""
    style = style or S.FigureStyle()
    if "top_n" not in sweep:
        raise ValueError(f"sweep needs a 'top_n' column, got {list(sweep.columns)}")
    columns = [
        ("task_metric", "final task metric"),
        ("lm_loss", "final held-out LM loss"),
        ("tuned_ratio", "mean tuned-parameter ratio"),
        ("n_nodes", "nodes in the circuit"),
    ]
    present = [(c, t) for c, t in columns if c in sweep and not sweep[c].isna().all()]
    if not present:
        raise ValueError("sweep has none of task_metric, lm_loss, tuned_ratio, n_nodes")
    frame = sweep.sort_values("top_n")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=[t for _, t in present])
    for i, (column, _) in enumerate(present):
        fig.add_trace(
            go.Scatter(
                x=frame["top_n"],
                y=frame[column],
                mode="lines+markers",
                line={"color": S.HELPS, "width": 2 * style.line_scale},
                marker={"size": 8},
                showlegend=False,
                hovertemplate=f"top-N %{{x}}<br>{column} %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(title_text="top-N edges")
    _finish(fig, style, height=360)
    return fig


def edge_trends(steps: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and Pearson r of every edge's score against step.

    ``steps`` [n_snapshots], ``matrix`` [n_snapshots, n_edges]. Edges that never change get r = 0.
    """
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(matrix, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != len(x):
        raise ValueError(f"matrix must be [len(steps)={len(x)}, n_edges], got {y.shape}")
    if len(x) < 2:
        return np.zeros(y.shape[1]), np.zeros(y.shape[1])
    dx = x - x.mean()
    dy = y - y.mean(axis=0)
    sxx = float((dx**2).sum())
    sxy = dx @ dy  # [n_edges]
    syy = (dy**2).sum(axis=0)
    slope = sxy / sxx if sxx > 0 else np.zeros(y.shape[1])
    denom = np.sqrt(sxx * syy)
    r = np.divide(sxy, denom, out=np.zeros_like(sxy), where=denom > 0)
    return slope, r


TREND_GROUPS = ("strengthened", "weakened", "flipped")


def trend_groups(
    matrix: np.ndarray, steps: np.ndarray, *, min_r: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group, slope, r) per edge, judged on |score| as the Circuit page's legend is:
    ``flipped`` (2) when the score changes sign between the first and the last snapshot,
    ``strengthened`` (0) when |score| rises (r > min_r), ``weakened`` (1) when it falls
    (r < -min_r), -1 otherwise. ``slope`` and ``r`` are of |score| against step."""
    matrix = np.asarray(matrix, dtype=np.float64)
    slope, r = edge_trends(steps, np.abs(matrix))
    group = np.full(len(slope), -1)
    group[(r > min_r) & (slope > 0)] = 0
    group[(r < -min_r) & (slope < 0)] = 1
    if len(matrix):
        first, last = np.nan_to_num(matrix[0]), np.nan_to_num(matrix[-1])
        group[np.sign(first) * np.sign(last) < 0] = 2
    return group, slope, r


def edge_trend_figure(
    steps: np.ndarray,
    matrix: np.ndarray,
    edge_names: list[str] | tuple[str, ...],
    *,
    min_r: float = 0.5,
    n_show: int = 15,
    candidates: np.ndarray | None = None,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """Edges whose |score| rose (strengthened), fell (weakened) or whose sign flipped, the
    ``n_show`` steepest of each (flips: the largest swing), as score-against-step lines (the
    paper's "Hebbian" analysis), coloured as in the Circuit page's compare legend.
    ``candidates``: optional boolean mask restricting which edges may be shown."""
    style = style or S.FigureStyle()
    if not 0 <= min_r < 1:
        raise ValueError(f"min_r must be in [0, 1), got {min_r!r}")
    matrix = np.asarray(matrix, dtype=np.float64)
    group, slope, r = trend_groups(matrix, steps, min_r=min_r)
    allowed = np.ones(len(slope), bool) if candidates is None else np.asarray(candidates, bool)
    swing = np.abs(np.nan_to_num(matrix[-1] - matrix[0])) if len(matrix) else np.zeros(len(slope))
    titles = ["|score| rose (strengthened)", "|score| fell (weakened)", "sign flipped"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles)
    for col, name in enumerate(TREND_GROUPS, start=1):
        idx = np.flatnonzero((group == col - 1) & allowed)
        key = swing[idx] if name == "flipped" else np.abs(slope[idx])
        idx = idx[np.argsort(-key, kind="stable")][:n_show]
        color = S.DIFF_COLORS[name]
        for k, e in enumerate(idx.tolist()):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=matrix[:, e],
                    mode="lines+markers",
                    line={
                        "color": color,
                        "dash": "solid" if k < 3 else "dash",
                        "width": (2.2 if k < 3 else 1.3) * style.line_scale,
                    },
                    opacity=1.0 if k < 3 else 0.75,
                    marker={"size": 5},
                    name=f"{edge_names[e]} (r={r[e]:.2f})",
                    legendgroup=name,
                    legendgrouptitle_text=S.DIFF_LABELS[name],
                    hovertemplate=f"{edge_names[e]}<br>step %{{x}}<br>score %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if not len(idx):
            suffix = col if col > 1 else ""
            fig.add_annotation(
                text="none" if name == "flipped" else f"no edge with |r| > {min_r:g}",
                showarrow=False,
                xref=f"x{suffix} domain",
                yref=f"y{suffix} domain",
                x=0.5,
                y=0.5,
            )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="edge score", col=1)
    _finish(fig, style, height=460)
    fig.update_layout(
        legend={
            "orientation": "v",
            "x": 1.02,
            "y": 1.0,
            "yanchor": "top",
            "font": {"size": style.label_size},
            "groupclick": "toggleitem",
        }
    )
    return fig


def circuit_size_counts(matrix: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``counts[t, s]`` = number of edges with ``|score| >= thresholds[t]`` in snapshot ``s``."""
    strength = np.sort(np.abs(np.nan_to_num(np.asarray(matrix, dtype=np.float64))), axis=1)
    n_edges = strength.shape[1]
    # For each snapshot, edges below a threshold = insertion point; the rest are kept.
    below = np.stack([np.searchsorted(row, thresholds, side="left") for row in strength], axis=1)
    return n_edges - below  # [n_thresholds, n_snapshots]


def default_thresholds(matrix: np.ndarray, n: int = 24) -> np.ndarray:
    """Log-spaced thresholds from the 99.9th percentile of |score| down by 4 decades."""
    strength = np.abs(np.nan_to_num(np.asarray(matrix, dtype=np.float64)))
    top = float(np.quantile(strength, 0.999)) if strength.size else 1.0
    top = top if top > 0 else 1.0
    return np.logspace(np.log10(top) - 4, np.log10(top), n)


def circuit_size_heatmap(
    step_labels: list[str],
    matrix: np.ndarray,
    thresholds: np.ndarray | None = None,
    *,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """Circuit size (edges with |score| >= threshold) as a threshold x step heatmap, so that
    "the circuit shrank" can be told apart from an arbitrary cut-off."""
    style = style or S.FigureStyle()
    thresholds = default_thresholds(matrix) if thresholds is None else np.asarray(thresholds)
    counts = circuit_size_counts(matrix, thresholds)
    fig = go.Figure(
        go.Heatmap(
            z=np.log10(np.maximum(counts, 1)),
            x=list(step_labels),
            y=[f"{t:.2g}" for t in thresholds],
            customdata=counts,
            colorscale="Viridis",
            colorbar={
                "title": "edges",
                "tickvals": [0, 1, 2, 3, 4, 5],
                "ticktext": ["1", "10", "100", "1k", "10k", "100k"],
            },
            hovertemplate="step %{x}<br>|score| ≥ %{y}<br>%{customdata} edges<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="snapshot", type="category")
    fig.update_yaxes(title_text="threshold on |score|", type="category")
    _finish(fig, style, height=460)
    return fig


def _shades(scale: str, n: int) -> list[str]:
    """``n`` shades of a sequential colour scale, darkest first, skipping its palest third."""
    from plotly.colors import sample_colorscale

    if n == 0:
        return []
    return sample_colorscale(scale, [1.0 - 0.6 * i / max(n - 1, 1) for i in range(n)])


def _finish(fig: go.Figure, style: S.FigureStyle, *, height: int) -> None:
    fig.update_layout(
        height=int(height * (style.px_per_layer / S.FigureStyle().px_per_layer) ** 0.5),
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        plot_bgcolor="white",
        paper_bgcolor="white",
        font={"family": style.font_family, "size": style.font_size, "color": "#222222"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "x": 0},
        hoverlabel={"font": {"size": style.font_size}},
    )
    fig.update_annotations(font_size=style.font_size + 1)
    fig.update_xaxes(showgrid=True, gridcolor="#eeeeee", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eeeeee", zeroline=False)


def node_history_figure(
    steps: np.ndarray,
    labels: list[str],
    attribution: np.ndarray,
    changes: pd.DataFrame,
    *,
    node: str,
    style: S.FigureStyle | None = None,
) -> go.Figure:
    """One box across a run: summed |score| of its edges per snapshot and, when recorded, the
    relative change of the parameters it owns (``changes``: head_changes rows of this box)."""
    style = style or S.FigureStyle()
    has_changes = len(changes) > 0
    fig = make_subplots(
        rows=2 if has_changes else 1,
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"{node}: Σ|score| of its edges", "‖ΔW‖/‖W‖ of what it owns"][
            : 2 if has_changes else 1
        ],
        vertical_spacing=0.18,
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=attribution,
            text=labels,
            mode="lines+markers",
            line={"color": S.HELPS, "width": 2 * style.line_scale},
            showlegend=False,
            hovertemplate="%{text}<br>Σ|score| %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if has_changes:
        for i, (kind, rows) in enumerate(changes.groupby("kind", sort=False)):
            fig.add_trace(
                go.Scatter(
                    x=rows["step"],
                    y=rows["rel_change"],
                    mode="lines+markers",
                    name=f"W_{kind.upper()}" if kind != "mlp" else "MLP",
                    line={"color": S.run_color(i + 1), "width": 1.5 * style.line_scale},
                ),
                row=2,
                col=1,
            )
    fig.update_xaxes(title_text="step", row=2 if has_changes else 1)
    _finish(fig, style, height=420 if has_changes else 260)
    fig.update_layout(legend={"orientation": "h", "y": -0.25, "yanchor": "top"})
    return fig
