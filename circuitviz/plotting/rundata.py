"""A run's data in memory, in the shapes the figures take, and a view resolved against it.

``load_run_frames`` reads everything a dashboard page or an export needs from a
``circuitviz.runs.Run`` in a handful of queries; the dashboard caches the result, so moving a slider
never touches the database. ``resolve_view`` turns a ``ViewState`` into rows of that data and
``view_scenes`` into the scenes to draw: the one mapping from a view to a picture, shared by the
dashboard, the exports and ``circuitviz export``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from circuitviz.plotting import style as S
from circuitviz.plotting.boxcolors import NodeValues
from circuitviz.plotting.layout import Layout
from circuitviz.plotting.scene import Scene, SceneOptions, build_scene
from circuitviz.plotting.style import FigureStyle
from circuitviz.plotting.view import ViewState, resolve_token, step_tokens, token_label


@dataclass(frozen=True, kw_only=True, eq=False)
class RunFrames:
    """Everything the dashboard shows of one run. ``scores``/``selected`` are
    ``[n_snapshots, n_edges]`` rows in ``snapshots`` order (before, during by step, after)."""

    run_id: str
    status: str
    status_message: str | None
    kind: str | None
    task: str | None
    method: str | None
    model_spec: str | None
    sweep_id: str | None
    created: str | None
    config: dict
    summary: dict
    graph_shape: tuple[int, int, int, bool]  # n_layers, n_heads, n_kv_heads, paper
    snapshot_task: str | None  # the task whose circuits ``scores`` holds
    tasks: tuple[str, ...]  # every task the run stored circuits for
    n_model_params: int | None
    mlp_groups: int | None  # neuron groups per MLP, None for whole MLPs
    snapshots: pd.DataFrame = field(repr=False)
    scores: np.ndarray = field(repr=False)
    selected: np.ndarray = field(repr=False)
    steps: pd.DataFrame = field(repr=False)
    evals: pd.DataFrame = field(repr=False)
    head_changes: pd.DataFrame = field(repr=False)
    noise_std: np.ndarray | None = field(repr=False)
    # ``circuitviz analyse``'s DLA and role rows (step, kind, key, value), to colour boxes by
    analyses: pd.DataFrame = field(
        repr=False, default_factory=lambda: pd.DataFrame(columns=["step", "kind", "key", "value"])
    )
    live: bool | None = None  # a process holds the run's writer lock (None: unknown)

    @property
    def tokens(self) -> list[str]:
        return step_tokens(self.snapshots)

    @property
    def shown_status(self) -> str:
        """The status to show: a run recorded as running whose writer is gone (stopped from the
        Run page, killed, crashed) is "stopped"; ``circuitviz tune --resume`` continues it."""
        if self.status == "running" and self.live is False:
            return "stopped"
        return self.status

    @property
    def n_edges(self) -> int:
        return self.scores.shape[1]

    @property
    def layout_key(self) -> tuple[int, int, int, bool, int | None]:
        """What the run's layout depends on (``plotting.layout.layout_for``)."""
        return (*self.graph_shape, self.mlp_groups)

    def label(self) -> str:
        """A short name for legends: task / method (model)."""
        parts = [p for p in (self.task, self.method) if p]
        return (
            " / ".join(parts) + (f" ({self.model_spec})" if self.model_spec else "") or self.run_id
        )


def stored_tasks(snapshots: pd.DataFrame) -> tuple[str, ...]:
    """The tasks a run stored circuits for, in the order first stored."""
    return tuple(dict.fromkeys(snapshots["task"].tolist()))


def drawn_task(run_task: str, snapshots: pd.DataFrame, asked: str | None = None) -> str | None:
    """The task whose circuits a view of the run draws: ``asked`` when stored, else the run's own
    task when stored, else the first stored (None when there is none)."""
    tasks = stored_tasks(snapshots)
    if asked in tasks:
        return asked
    return run_task if run_task in tasks else (tasks[0] if tasks else None)


def load_run_frames(run, *, task: str | None = None) -> RunFrames:
    """Read a ``circuitviz.runs.Run`` into memory (raises what the run raises: RunCorrupt, ...).

    A run may store circuits for several tasks; ``task`` picks one (default: the run's own task
    when it stored circuits for it, else the first task stored)."""
    meta = run.graph_meta
    snapshots = run.snapshots()
    tasks = stored_tasks(snapshots)
    task = drawn_task(run.task, snapshots, task)
    scores = np.zeros((0, run.n_edges), np.float32)
    selected = np.zeros((0, run.n_edges), bool)
    if len(snapshots):
        snapshots, scores = run.score_matrix(task=task)
        # One circuit per step token: a step stored twice (e.g. around a resume) keeps the last.
        keep = ~pd.Series(step_tokens(snapshots)).duplicated(keep="last").to_numpy()
        snapshots, scores = snapshots[keep].reset_index(drop=True), scores[keep]
        # A live run may store a snapshot between the two queries: match rows by id.
        ids, masks = run.selected_matrix(task=task)
        position = pd.Index(ids["snapshot_id"]).get_indexer(snapshots["snapshot_id"])
        selected = masks[position]
    for array in (scores, selected):
        array.setflags(write=False)
    return RunFrames(
        run_id=run.id,
        status=run.status,
        status_message=run.status_message,
        kind=run.kind,
        task=run.task,
        method=run.method,
        model_spec=run.model_spec,
        sweep_id=run.sweep_id,
        created=getattr(run, "created", None),
        config=dict(run.config or {}),
        summary=dict(run.summary or {}),
        graph_shape=(
            int(meta["n_layers"]),
            int(meta["n_heads"]),
            int(meta.get("n_kv_heads") or meta["n_heads"]),
            bool(meta.get("paper", False)),
        ),
        mlp_groups=meta.get("mlp_groups"),
        n_model_params=meta.get("n_model_params"),
        snapshot_task=task,
        tasks=tasks,
        snapshots=snapshots.reset_index(drop=True),
        scores=scores,
        selected=selected,
        steps=run.steps(),
        evals=run.evals(),
        head_changes=run.head_changes(),
        noise_std=run.noise_floor_std(),
        analyses=_box_analyses(run),
        live=run.is_live() if run.status == "running" else None,
    )


def _box_analyses(run) -> pd.DataFrame:
    """The analyses boxes can be coloured by: DLA and the role scores."""
    frames = [run.analyses(kind) for kind in ("dla", "roles")]
    return pd.concat(frames, ignore_index=True) if any(len(f) for f in frames) else frames[0]


def node_color_modes(frames: RunFrames) -> list[str]:
    """The box colourings this run offers: ``kind`` always, then each analysis it has stored."""
    table = frames.analyses
    modes = ["kind"]
    if (table["kind"] == "dla").any():
        modes.append("dla")
    roles = table.loc[table["kind"] == "roles", "key"].str.split(":").str[0]
    modes += [role for role in S.ROLE_LABELS if (roles == role).any()]
    return modes


def node_values(frames: RunFrames, layout: Layout, mode: str) -> NodeValues | None:
    """The run's ``mode`` analysis (``dla`` or a role) per box and analysed step, or None for
    ``kind`` and for a run without it. Full colour is the largest |DLA| (or copying score) of the
    whole run, so a colour means the same at every step; an attention role's score is a share of
    attention, so its full colour is 1."""
    if mode == "kind":
        return None
    if mode not in S.NODE_COLOR_LABELS:
        raise ValueError(f"no box colouring {mode!r}; choose from {', '.join(S.NODE_COLORS)}")
    table = frames.analyses
    if mode == "dla":
        rows = table[table["kind"] == "dla"]
        keys = rows["key"]
    else:
        rows = table[(table["kind"] == "roles") & table["key"].str.startswith(f"{mode}:")]
        keys = rows["key"].str.removeprefix(f"{mode}:")
    if not len(rows):
        return None
    grid = (
        rows.assign(key=keys, value=pd.to_numeric(rows["value"], errors="coerce"))
        .pivot_table(index="step", columns="key", values="value", aggfunc="last", dropna=False)
        .sort_index()
    )
    values = np.full((len(grid), layout.n_nodes), np.nan, np.float32)
    index = layout.node_index()
    for name in grid.columns:
        if name in index:
            values[:, index[name]] = grid[name].to_numpy(dtype=np.float32)
    finite = values[np.isfinite(values)]
    if mode == "dla":  # signed: either sign at full colour
        top = float(np.abs(finite).max()) if finite.size else 0.0
    elif mode == "copying":  # a logit score; a negative one (suppression) is no copying
        top = float(finite.max()) if finite.size else 0.0
    else:
        top = 1.0
    scale = top if top > 0 else 1.0
    return NodeValues(
        mode=mode,
        steps=grid.index.to_numpy(dtype=np.int64),
        values=values,
        scale=scale,
        sqrt=mode == "dla",
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class ResolvedView:
    """A view's rows of a run: B is the step shown, A the step compared against (or None)."""

    row_b: int
    row_a: int | None
    token_b: str
    token_a: str | None
    scores: np.ndarray = field(repr=False)
    selected: np.ndarray = field(repr=False)
    compare: np.ndarray | None = field(repr=False)
    title: str


def resolve_view(frames: RunFrames, view: ViewState) -> ResolvedView:
    """The rows ``view`` shows. KeyError (naming the run's steps) for a step the run lacks."""
    snaps = frames.snapshots
    row_b = resolve_token(snaps, view.step)
    token_b = frames.tokens[row_b]
    row_a = token_a = None
    if view.compare is not None:
        row_a = resolve_token(snaps, view.compare)
        token_a = frames.tokens[row_a]
    shown = f"top {view.top_n}" if view.top_n is not None else "all edges"
    cut = f", |score| ≥ {view.threshold:g}" if view.threshold > 0 else ""
    if row_a is None:
        what = token_label(token_b, snaps)
    else:
        what = f"{token_label(token_a, snaps)} → {token_label(token_b, snaps)}"
    return ResolvedView(
        row_b=row_b,
        row_a=row_a,
        token_b=token_b,
        token_a=token_a,
        scores=frames.scores[row_b],
        selected=frames.selected[row_b],
        compare=None if row_a is None else frames.scores[row_a],
        title=f"{frames.label()}: {what} ({shown}{cut})",
    )


def scene_options(view: ViewState, style: FigureStyle | None = None) -> SceneOptions:
    """The drawing options a view asks for."""
    return SceneOptions(
        threshold=view.threshold,
        top_n=view.top_n,
        only_selected=view.only_circuit,
        color_by=view.color_by,
        highlight=view.node,
        focus=view.focus and view.node is not None,
        collapse=view.collapse,
        line_scale=(style or FigureStyle()).line_scale,
    )


def view_scenes(
    frames: RunFrames,
    layout: Layout,
    view: ViewState,
    *,
    style: FigureStyle | None = None,
    side_by_side: bool | None = None,
) -> list[tuple[Scene, str]]:
    """(scene, title) of each picture the view shows: one, or A and B side by side when comparing
    in "side" mode (``side_by_side=False`` asks for the overlay whatever the mode). KeyError for a
    step the run lacks; ValueError for a box it lacks."""
    resolved = resolve_view(frames, view)
    options = scene_options(view, style)
    values = node_values(frames, layout, view.node_color)
    steps = frames.snapshots["step"].to_numpy(dtype=np.float64)

    def scene_of(row: int, scores, selected, **compare) -> Scene:
        return build_scene(
            layout, scores, selected, options, node_values=values, step=steps[row], **compare
        )

    side = view.compare_mode == "side" if side_by_side is None else side_by_side
    if resolved.compare is not None and side:
        return [
            (
                scene_of(resolved.row_a, resolved.compare, frames.selected[resolved.row_a]),
                f"A: {token_label(resolved.token_a, frames.snapshots)}",
            ),
            (
                scene_of(resolved.row_b, resolved.scores, resolved.selected),
                f"B: {token_label(resolved.token_b, frames.snapshots)}",
            ),
        ]
    scene = scene_of(
        resolved.row_b,
        resolved.scores,
        resolved.selected,
        compare=resolved.compare,
        noise_std=frames.noise_std if resolved.compare is not None else None,
    )
    return [(scene, resolved.title)]
