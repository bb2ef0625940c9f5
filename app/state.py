"""What every page shares: the view (kept in session state and mirrored into the URL), the run
store, and cached loading of runs and layouts.

Loaded runs are cached on (run directory, database file stamps), so a redraw never re-reads SQLite,
while a run that is still being written is re-read as soon as a new row lands. A run is opened only
by its id, among the runs the store lists: a link cannot point the dashboard at any other directory.
Messages never show server paths, and anything that came from the user is shown as plain text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from circuitviz.plotting.layout import Layout, layout_for
from circuitviz.plotting.rundata import RunFrames, load_run_frames
from circuitviz.plotting.style import FigureStyle
from circuitviz.plotting.view import ViewState, nearest_token, token_label
from circuitviz.runs import Run, RunCorrupt, RunNotFound, RunStore, RunStoreError, RunSummary
from circuitviz.runs.store import is_run_id

VIEW_KEY = "cv_view"
PROBLEMS_KEY = "cv_url_problems"
DEMO_PREFERENCE = ("sv-disagreement", "circuit")


# ---- the view and the URL ----------------------------------------------------------------------


def init_view() -> None:
    """Once per browser session: read the view from the URL (bad parameters are reported)."""
    if VIEW_KEY in st.session_state:
        return
    query = {key: st.query_params.get(key) for key in st.query_params}
    view, problems = ViewState.from_query(query)
    st.session_state[VIEW_KEY] = view
    st.session_state[PROBLEMS_KEY] = problems


def view() -> ViewState:
    init_view()
    return st.session_state[VIEW_KEY]


def set_view(**changes) -> ViewState:
    new = view().with_(**changes)
    st.session_state[VIEW_KEY] = new
    return new


def write_url() -> None:
    """Mirror the view into the query string (so the address bar can be shared or reloaded)."""
    # Written on every run, not only when it differs: a run interrupted by a rerun may have
    # updated the server's copy without the browser ever hearing of it.
    st.query_params.from_dict(view().to_query())


def bound(field: str, widget, label: str, *, to_widget=None, from_widget=None, then=None, **kwargs):
    """A widget whose value lives in the view's ``field`` (so it survives page switches and
    appears in the URL). ``to_widget``/``from_widget`` convert between view and widget values;
    ``then`` runs after the user changes it."""
    key = f"w_{field}"
    to_widget = to_widget or (lambda value: value)
    from_widget = from_widget or (lambda value: value)
    st.session_state[key] = to_widget(getattr(view(), field))

    def changed() -> None:
        try:
            set_view(**{field: from_widget(st.session_state[key])})
        except ValueError as exc:
            st.session_state[PROBLEMS_KEY] = [as_text(exc, 200)]
            return
        if then is not None:
            then()

    return from_widget(widget(label, key=key, on_change=changed, **kwargs))


def figure_style() -> FigureStyle:
    return FigureStyle.presentation() if view().presentation else FigureStyle()


# ---- runs -----------------------------------------------------------------------------------


def runs_dir() -> Path:
    return Path(os.environ.get("CIRCUITVIZ_RUNS") or "runs")


def store() -> RunStore:
    return RunStore.default()


@st.cache_data(ttl=3, show_spinner=False)
def list_runs(roots: tuple[str, ...]) -> list[RunSummary]:
    return RunStore([Path(root) for root in roots]).list_runs()


def all_runs() -> list[RunSummary]:
    return list_runs(tuple(str(root) for root in store().roots))


def default_run(runs: list[RunSummary]) -> str | None:
    """The run a first visit shows: the newest finished sv-disagreement circuit-tuning run that is
    not part of a sweep (the demo's), else the newest finished tuning run, else the newest run."""
    if not runs:
        return None
    readable = [r for r in runs if r.status != "corrupt"] or runs
    finished = [r for r in readable if r.status == "finished" and r.kind in (None, "tune")]
    task, method = DEMO_PREFERENCE
    for run in finished:
        if run.task == task and run.method == method and run.sweep_id is None:
            return run.id
    return (finished or readable)[0].id


def run_stamp(run_dir: Path) -> tuple:
    """Changes whenever the run's database (or its write-ahead log) is written."""
    stamp = []
    for name in ("run.sqlite", "run.sqlite-wal"):
        path = Path(run_dir) / name
        try:
            info = path.stat()
            stamp.append((info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamp.append(None)
    return tuple(stamp)


@st.cache_resource(max_entries=12, show_spinner=False)
def _frames(run_dir: str, stamp: tuple, task: str | None) -> RunFrames:
    return load_run_frames(Run(run_dir), task=task)


@st.cache_resource(max_entries=6, show_spinner=False)
def layout_of(shape: tuple) -> Layout:
    """The layout of (n_layers, n_heads, n_kv_heads, paper[, mlp_groups]): a run's
    ``RunFrames.layout_key``."""
    n_layers, n_heads, n_kv_heads, paper, *groups = shape
    return layout_for(
        n_layers, n_heads, n_kv_heads, paper=paper, mlp_groups=groups[0] if groups else None
    )


def run_dir_of(run_id: str) -> Path:
    """The directory of a listed run; RunNotFound for anything else (a path, ``..``, a typo)."""
    run_dir = store().run_dirs().get(run_id) if is_run_id(run_id) else None
    if run_dir is None:
        raise RunNotFound(f"no run {run_id!r}")
    return run_dir


@st.cache_resource(max_entries=12, show_spinner=False)
def _analyses(run_dir: str, stamp: tuple):
    return Run(run_dir).analyses()


def analyses(run_id: str):
    """``circuitviz analyse``'s results of a run (cached until the run is written again)."""
    run_dir = run_dir_of(run_id)
    return _analyses(str(run_dir), run_stamp(run_dir))


def load(run_id: str, task: str | None = None) -> RunFrames:
    """The run's data (cached); raises RunNotFound / RunCorrupt / RunStoreError. ``task`` picks
    which task's circuits, for runs that stored several."""
    run_dir = run_dir_of(run_id)
    return _frames(str(run_dir), run_stamp(run_dir), task)


def as_text(value: object, limit: int = 120) -> str:
    """``value`` as literal text inside Streamlit markdown: an inline code span (no formatting,
    HTML, LaTeX or emoji apply inside one), on one line, at most ``limit`` characters. Streamlit
    turns ``:material/name:`` into an icon even there, so every colon is followed by an invisible
    zero-width space."""
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace(":", ":\u200b")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(value: object) -> str:
    """A run's own text (its label, from the run store) in markdown, its markup characters
    escaped; for what a user or a link typed use ``as_text``."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))


def current_run() -> RunFrames | None:
    """The view's run, or None after telling the user, in plain words, why it cannot be shown."""
    run_id = view().run
    if run_id is None:
        st.info(
            "No runs yet. Start one on the **Run** page, or run `circuitviz tune --model demo "
            "--task sv-disagreement` in a terminal; runs appear here as soon as they start."
        )
        return None
    shown = as_text(run_id)
    try:
        return load(run_id, view().task)
    except RunNotFound:
        n_runs = len(all_runs())
        st.error(
            f"Run {shown} was not found among the {n_runs} runs this dashboard lists. "
            "Pick a run in the sidebar."
        )
    except RunCorrupt:
        st.error(
            f"Run {shown} cannot be read: its files are damaged or not a circuitviz run. Pick "
            "another run in the sidebar, or delete that run's directory."
        )
    except RunStoreError:
        st.warning(f"Run {shown} is busy right now; this page retries on reload.")
    return None


def quiet_run() -> RunFrames | None:
    """The view's run, or None (without a message) when it cannot be read."""
    run_id = view().run
    if run_id is None:
        return None
    try:
        return load(run_id, view().task)
    except RunStoreError:
        return None


def check_view(frames: RunFrames, layout: Layout) -> None:
    """Steps and boxes the link named that this run lacks: warn, naming the value and the nearest
    valid one, and show that instead (never a traceback, never a silent switch)."""
    current = view()
    tokens = frames.tokens
    changes: dict = {}
    if current.step is None and tokens and frames.status != "running":
        changes["step"] = tokens[-1]  # a finished run's newest step, by name (it stays in the URL)
    for field in ("step", "compare"):
        token = getattr(current, field)
        if token is None or not tokens or token in tokens:
            continue
        nearest = nearest_token(frames.snapshots, token)
        warn(
            f"This run has no snapshot at {field} {as_text(token)}; showing the nearest, "
            f"{token_label(nearest, frames.snapshots)}."
        )
        changes[field] = nearest
    if current.node is not None and current.node not in layout.node_index():
        warn(
            f"{as_text(current.node)} is not a box of this graph "
            f"({layout.n_layers} layers × {layout.n_heads} heads); the nearest is "
            f"{layout.nearest_node(current.node)}. No box is selected."
        )
        changes["node"] = None
    if changes:
        set_view(**changes)


def warn(message: str) -> None:
    st.warning(message, icon=":material/warning:")


def run_title(frames: RunFrames) -> str:
    status = frames.shown_status
    color = {"running": "green", "finished": "blue", "failed": "red"}.get(status, "gray")
    return f"{plain(frames.label())} :{color}-badge[{status}]"
