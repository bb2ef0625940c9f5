"""Figures of ``circuitviz analyse``'s results (``Run.analyses()`` frames: step, kind, key, value).

* ``dla_matrix`` / the DLA heatmap: each head's direct logit attribution at one step, layer x head,
  next to step 0's (``plotting.heads.head_heatmap_figure``);
* ``dla_lines``: the nodes with the largest DLA anywhere, against step;
* ``faithfulness_lines``: the run's own and its initial circuit's faithfulness against step, per
  edge budget;
* ``alignment_lines``: edge and node IoU with another run against step;
* ``role_frame`` / ``role_lines``: for each role, the score of every head that holds it at some
  step, against step (a migration shows as two lines crossing);
* ``head_matrix``: any per-head analysis (attention to the tagged tokens) as a layer x head grid.
No torch here: pages and exports read the store only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from circuitviz.graph.names import parse_node
from circuitviz.plotting import style as S

NOT_NODES = ("logit_diff", "rest")


def _split_keys(rows: pd.DataFrame, sep: str, parts: tuple[str, ...], value: str) -> pd.DataFrame:
    """``rows`` of ``Run.analyses()`` as step, the key split at ``sep`` into ``parts``, and the
    value under the name ``value``."""
    if rows.empty:
        return pd.DataFrame(columns=["step", *parts, value])
    split = rows["key"].str.split(sep, n=len(parts) - 1, expand=True)
    columns = {"step": rows["step"].astype(int).to_numpy()}
    columns |= {name: split[i].to_numpy() for i, name in enumerate(parts)}
    columns[value] = rows["value"].astype(float).to_numpy()
    return pd.DataFrame(columns)


def analysed_steps(analyses: pd.DataFrame, kind: str) -> list[int]:
    return sorted({int(s) for s in analyses.loc[analyses["kind"] == kind, "step"]})


def dla_table(analyses: pd.DataFrame) -> pd.DataFrame:
    """node x step of direct logit attribution (rows: the graph's sources)."""
    rows = analyses[(analyses["kind"] == "dla") & ~analyses["key"].isin(NOT_NODES)]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot(index="key", columns="step", values="value")


def dla_matrix(analyses: pd.DataFrame, step: int, n_layers: int, n_heads: int) -> np.ndarray:
    """``[n_layers, n_heads]`` of each head's DLA at ``step`` (NaN where not analysed)."""
    table = dla_table(analyses)
    if table.empty or step not in table.columns:
        return np.full((n_layers, n_heads), np.nan)
    return _grid(table[step].items(), n_layers, n_heads)


def head_matrix(
    analyses: pd.DataFrame, kind: str, step: int, n_layers: int, n_heads: int
) -> np.ndarray:
    """``[n_layers, n_heads]`` of a per-head analysis (keys ``aL.hH``) at ``step``."""
    rows = analyses[(analyses["kind"] == kind) & (analyses["step"] == step)]
    return _grid(zip(rows["key"], rows["value"]), n_layers, n_heads)


def _grid(items, n_layers: int, n_heads: int) -> np.ndarray:
    out = np.full((n_layers, n_heads), np.nan)
    for name, value in items:
        ref = parse_node(name)
        if ref.kind == "head" and ref.layer < n_layers and ref.head < n_heads:
            out[ref.layer, ref.head] = value
    return out


def _line_figure(title: str, y_title: str, style: S.FigureStyle | None) -> go.Figure:
    style = style or S.FigureStyle()
    fig = go.Figure()
    _style(fig, style, title=title)
    fig.update_layout(xaxis_title="step", yaxis_title=y_title)
    return fig


def _style(fig: go.Figure, style: S.FigureStyle, *, title: str = "", height: int = 0) -> None:
    """The look every figure here shares: white template, the style's fonts, a height (at least
    ``height``) that scales with the style, the title if any."""
    fig.update_layout(
        template="plotly_white",
        font={"family": style.font_family, "size": style.font_size, "color": "#222222"},
        height=max(height, 360, style.min_height * 3 // 4),
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    if title:
        fig.update_layout(title={"text": title, "font": {"size": style.title_size}})


def dla_lines(analyses: pd.DataFrame, *, top: int = 8, style: S.FigureStyle | None = None):
    """The ``top`` nodes by largest |DLA| at any step, against step, with the model's logit
    difference dashed."""
    fig = _line_figure("Direct logit attribution per node", "logit(answer) − logit(wrong)", style)
    table = dla_table(analyses)
    if table.empty:
        return fig
    steps = [int(s) for s in table.columns]
    order = table.abs().max(axis=1).sort_values(ascending=False).index[:top]
    for name in order:
        fig.add_trace(
            go.Scatter(x=steps, y=table.loc[name].tolist(), mode="lines+markers", name=name)
        )
    diff = analyses[(analyses["kind"] == "dla") & (analyses["key"] == "logit_diff")].sort_values(
        "step"
    )
    if len(diff):
        fig.add_trace(
            go.Scatter(
                x=diff["step"].tolist(),
                y=diff["value"].tolist(),
                mode="lines",
                name="model's logit difference",
                line={"dash": "dash", "color": "#444"},
            )
        )
    return fig


def faithfulness_frame(analyses: pd.DataFrame) -> pd.DataFrame:
    """step, circuit (own | initial), budget, faithfulness."""
    rows = analyses[(analyses["kind"] == "faithfulness") & analyses["key"].str.contains("@")]
    frame = _split_keys(rows, "@", ("circuit", "budget"), "faithfulness")
    return frame.sort_values(["budget", "circuit", "step"])


def faithfulness_lines(analyses: pd.DataFrame, *, style: S.FigureStyle | None = None):
    """Own circuit (solid) and initial circuit (dotted) faithfulness against step, per budget."""
    fig = _line_figure("Faithfulness over time", "faithfulness", style)
    frame = faithfulness_frame(analyses)
    for (budget, circuit), rows in frame.groupby(["budget", "circuit"], sort=True):
        name = f"{CIRCUIT_NAMES[circuit]}, {float(budget):.0%} of edges"
        fig.add_trace(_circuit_trace(rows, "faithfulness", circuit, name))
    return fig


CIRCUIT_NAMES = {"own": "the circuit then", "initial": "the initial circuit"}


def _circuit_trace(rows, value: str, circuit: str, name: str, color: str | None = None):
    """One circuit's ``value`` against step: the run's circuit then solid, its initial dotted."""
    line = {"dash": "solid" if circuit == "own" else "dot"} | ({"color": color} if color else {})
    return go.Scatter(
        x=rows["step"].tolist(), y=rows[value].tolist(), mode="lines+markers", name=name, line=line
    )


def faithfulness_area_frame(analyses: pd.DataFrame) -> pd.DataFrame:
    """step, measure (cpr | cmd), circuit (own | initial), value: MIB's areas at each step."""
    rows = analyses[
        (analyses["kind"] == "faithfulness") & analyses["key"].str.match(r"^(cpr|cmd):")
    ]
    frame = _split_keys(rows, ":", ("measure", "circuit"), "value")
    return frame.sort_values(["measure", "circuit", "step"])


def faithfulness_area_lines(analyses: pd.DataFrame, *, style: S.FigureStyle | None = None):
    """CPR (the area under the faithfulness curve over the edge fraction; higher is better) and
    CMD (the area between it and 1; lower is better) of the run's circuit then (solid) and of its
    initial circuit (dotted), against step."""
    fig = _line_figure("CPR and CMD over time (MIB)", "area over the edge fraction", style)
    frame = faithfulness_area_frame(analyses)
    colors = {"cpr": S.HELPS, "cmd": S.HURTS}
    for (measure, circuit), rows in frame.groupby(["measure", "circuit"], sort=True):
        name = f"{measure.upper()}, {CIRCUIT_NAMES[circuit]}"
        fig.add_trace(_circuit_trace(rows, "value", circuit, name, colors[measure]))
    return fig


def alignment_frame(analyses: pd.DataFrame) -> pd.DataFrame:
    """other, step, measure (edge_iou | node_iou), budget, value."""
    rows = analyses[analyses["kind"].str.startswith("alignment:")]
    frame = _split_keys(rows, "@", ("measure", "budget"), "value")
    frame.insert(0, "other", rows["kind"].str.removeprefix("alignment:").to_numpy())
    return frame.sort_values(["other", "budget", "measure", "step"])


def alignment_lines(analyses: pd.DataFrame, other: str, *, style: S.FigureStyle | None = None):
    """Edge IoU (solid) and node IoU (dotted) with run ``other`` against step, per budget."""
    fig = _line_figure(f"Circuit overlap with {other}", "intersection over union", style)
    frame = alignment_frame(analyses)
    frame = frame[frame["other"] == other]
    for (budget, measure), rows in frame.groupby(["budget", "measure"], sort=True):
        fig.add_trace(
            go.Scatter(
                x=rows["step"].tolist(),
                y=rows["value"].tolist(),
                mode="lines+markers",
                name=f"{'edges' if measure == 'edge_iou' else 'nodes'}, {float(budget):.0%} of edges",
                line={"dash": "solid" if measure == "edge_iou" else "dot"},
            )
        )
    fig.update_yaxes(range=[0, 1.05])
    return fig


ROLE_NAMES = S.ROLE_LABELS  # one name per role, as the Circuit page's box colours say it


def role_frame(analyses: pd.DataFrame) -> pd.DataFrame:
    """step, role, head, score of every head's role score."""
    return _split_keys(analyses[analyses["kind"] == "roles"], ":", ("role", "head"), "score")


def role_lines(analyses: pd.DataFrame, role: str, *, style: S.FigureStyle | None = None):
    """The score of each head that holds ``role`` (has the top score) at some analysed step,
    against step: a role migrating shows as lines crossing."""
    name = ROLE_NAMES.get(role, role)
    fig = _line_figure(f"Who holds the {name} role", "score", style)
    frame = role_frame(analyses)
    frame = frame[frame["role"] == role]
    if frame.empty:
        return fig
    scored = frame.dropna(subset=["score"])
    if scored.empty:
        return fig
    tops = scored.loc[scored.groupby("step")["score"].idxmax(), "head"].unique()
    for head in tops:
        rows = frame[frame["head"] == head].sort_values("step")
        fig.add_trace(
            go.Scatter(
                x=rows["step"].tolist(), y=rows["score"].tolist(), mode="lines+markers", name=head
            )
        )
    if role != "copying":  # a share of attention: on its whole 0-1 range, so chance stays low
        fig.update_yaxes(range=[0, 1.02])
    return fig


def figures_html(figures: list[go.Figure], *, title: str = "") -> str:
    """One self-contained page (plotly.js inline, works offline) with ``figures`` one under
    another."""
    import html

    import plotly.io as pio

    parts = [
        pio.to_html(fig, full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, fig in enumerate(figures)
    ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h2>{html.escape(title)}</h2>{''.join(parts)}</body></html>"
    )


def ov_frame(analyses: pd.DataFrame, kind: str = "ov") -> pd.DataFrame:
    """step, head, pc1, pc2, cos_unembed (NaN where not measured) of every head's OV analysis
    (``kind="qk"``: its QK trajectory, which has no cosine)."""
    long = _split_keys(analyses[analyses["kind"] == kind], ":", ("head", "measure"), "value")
    if long.empty:
        return pd.DataFrame(columns=["step", "head", "pc1", "pc2", "cos_unembed"])
    wide = long.pivot_table(index=["step", "head"], columns="measure", values="value")
    return wide.reindex(columns=["pc1", "pc2", "cos_unembed"]).reset_index()


def ov_figure(
    analyses: pd.DataFrame, head: str, *, kind: str = "ov", style: S.FigureStyle | None = None
):
    """One head's OV (or ``kind="qk"``: QK) matrix across checkpoints on its two principal
    components, coloured by step, beside the |cosine| of its OV change with the answer's
    unembedding direction against step."""
    from plotly.subplots import make_subplots

    style = style or S.FigureStyle()
    frame = ov_frame(analyses, kind)
    frame = frame[frame["head"] == head].sort_values("step")
    matrix = "W_V W_O" if kind == "ov" else "W_Q W_Kᵀ"
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            f"{head}: {matrix} across checkpoints (PCA)",
            "change vs answer direction" if kind == "ov" else "",
        ),
    )
    steps = frame["step"].tolist()
    fig.add_trace(
        go.Scatter(
            x=frame["pc1"].tolist(),
            y=frame["pc2"].tolist(),
            mode="lines+markers+text",
            text=[str(s) for s in steps],
            textposition="top center",
            marker={"color": steps, "colorscale": "Viridis", "size": 10, "showscale": False},
            line={"color": "#bbbbbb"},
            name="trajectory",
        ),
        row=1,
        col=1,
    )
    cos = frame.dropna(subset=["cos_unembed"])
    fig.add_trace(
        go.Scatter(
            x=cos["step"].tolist(),
            y=cos["cos_unembed"].tolist(),
            mode="lines+markers",
            name="|cos|",
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="PC 1", row=1, col=1)
    fig.update_yaxes(title_text="PC 2", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_yaxes(title_text="|cos|", range=[0, 1.05], row=1, col=2)
    _style(fig, style)
    fig.update_layout(showlegend=False)
    return fig


def bias_figure(analyses: pd.DataFrame, *, style: S.FigureStyle | None = None):
    """The distribution of prejudice risk over occupations at the first and the last analysed
    step (histograms on one axis, 0 to 1), the paper's de-biasing view."""
    fig = _line_figure("Prejudice risk across occupations", "occupations", style)
    rows = analyses[analyses["kind"] == "bias"]
    if rows.empty:
        return fig
    steps = sorted({int(s) for s in rows["step"]})
    for step in dict.fromkeys((steps[0], steps[-1])):
        values = rows.loc[rows["step"] == step, "value"].astype(float).tolist()
        fig.add_trace(
            go.Histogram(
                x=values,
                name=f"step {step} (mean {np.mean(values):.2f})",
                xbins={"start": 0, "end": 1, "size": 0.05},
                opacity=0.6,
            )
        )
    fig.update_layout(barmode="overlay", xaxis_title="prejudice risk |2p − 1|")
    fig.update_xaxes(range=[0, 1])
    return fig


def prompt_tokens(analyses: pd.DataFrame, step: int) -> list[str]:
    """The texts of the prompt whose whole pattern was stored at ``step``, in order."""
    rows = analyses[(analyses["kind"] == "pattern") & (analyses["step"] == step)]
    rows = rows[rows["key"].str.startswith("token:")]
    parts = rows["key"].str.split(":", n=2, expand=True)
    if rows.empty:
        return []
    order = parts[1].astype(int).to_numpy().argsort()
    return parts[2].to_numpy()[order].tolist()


def pattern_matrix(analyses: pd.DataFrame, step: int, head: str) -> np.ndarray:
    """``[n, n]`` attention weights of ``head`` on the stored prompt at ``step`` (query rows, key
    columns; NaN above the diagonal, where a causal head cannot look)."""
    n = len(prompt_tokens(analyses, step))
    out = np.full((n, n), np.nan)
    rows = analyses[(analyses["kind"] == "pattern") & (analyses["step"] == step)]
    rows = rows[rows["key"].str.startswith(f"{head}:")]
    for key, value in zip(rows["key"], rows["value"]):
        _, q, k = key.split(":")
        out[int(q), int(k)] = value
    return out


def pattern_figure(
    analyses: pd.DataFrame, step: int, head: str, *, style: S.FigureStyle | None = None
):
    """``head``'s whole attention pattern on the stored prompt at ``step``, tokens on both axes."""
    style = style or S.FigureStyle()
    tokens = prompt_tokens(analyses, step)
    labels = [f"{i} {t.strip() or repr(t)}" for i, t in enumerate(tokens)]
    fig = go.Figure(
        go.Heatmap(
            z=pattern_matrix(analyses, step, head),
            x=labels,
            y=labels,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": {"text": "attention"}},
        )
    )
    _style(fig, style, title=f"{head} at step {step}", height=max(420, 26 * len(tokens) + 160))
    fig.update_layout(
        xaxis_title="key (attended to)", yaxis_title="query", yaxis={"autorange": "reversed"}
    )
    return fig
