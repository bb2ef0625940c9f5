"""Run: start a discovery, a tuning run or a sweep in a background process, and watch it."""

import importlib.util
from pathlib import Path

import jobs
import state
import streamlit as st

from circuitviz.graph.io import load_json
from circuitviz.plotting.circuit import circuit_figure
from circuitviz.runs import RunStoreError, new_run_id

COMMANDS = {"tune": "a tuning run", "sweep": "a top-N sweep", "discover": "a circuit discovery"}
root = state.runs_dir()
available = [c for c in COMMANDS if importlib.util.find_spec(f"circuitviz.cli.{c}") is not None]

st.subheader("Start a run")
st.caption(
    f"Runs are written under `{root}` by a separate process (`circuitviz tune ...`); this page never "
    "runs a model itself, so the dashboard stays responsive."
)
if not available:
    st.warning("This installation has no `tune`, `sweep` or `discover` command yet.")
else:
    from circuitviz.tasks.registry import TASKS

    with st.form("start"):
        kind = st.radio("What", available, format_func=lambda c: COMMANDS[c], horizontal=True)
        c1, c2 = st.columns(2)
        model = c1.text_input(
            "Model",
            "demo",
            help="demo, smollm2-135m, random:gpt2, a .gguf file, a local "
            "Hugging Face directory or a hub id",
        )
        task = c2.selectbox("Task", sorted(TASKS), index=sorted(TASKS).index("sv-disagreement"))
        c3, c4, c5, c6 = st.columns(4)
        method = c3.selectbox(
            "Method", ["eap", "eap-ig"] if kind == "discover" else ["circuit", "full", "random"]
        )
        top_n = c4.text_input(
            "Top-N edges" + (" (comma-separated)" if kind == "sweep" else ""),
            "10,25,50,100" if kind == "sweep" else "100",
        )
        every = c5.number_input("Re-discover every K steps", 1, 10_000, 10)
        steps = c6.number_input("Steps", 1, 1_000_000, 200)
        submitted = st.form_submit_button("Start", type="primary")
    if submitted:
        job_id = new_run_id(task, method)
        sizes = [s.strip() for s in top_n.split(",") if s.strip()]
        if not sizes or not all(s.isdigit() and int(s) > 0 for s in sizes):
            st.error(f"Top-N must be a positive whole number (a list for a sweep), got {top_n!r}.")
            st.stop()
        if kind == "discover":
            output = str(jobs.jobs_dir(root) / f"{job_id}.circuit.json")
            argv = [
                "discover",
                "--model",
                model,
                "--task",
                task,
                "--method",
                method,
                "--top-n",
                sizes[0],
                "--out",
                output,
                "--json",
            ]
        else:
            output = None
            argv = [
                kind,
                "--model",
                model,
                "--task",
                task,
                "--method",
                method,
                "--top-n",
                ",".join(sizes),
                "--every",
                str(every),
                "--steps",
                str(steps),
                "--runs-dir",
                str(root),
            ]
            if kind == "tune":
                argv += ["--run-id", job_id]
        job = jobs.start_job(
            argv, root=root, job_id=job_id, kind=kind, total_steps=int(steps), output=output
        )
        if kind == "tune":
            state.set_view(run=job_id, step=None, compare=None, node=None)
        st.success(f"Started {COMMANDS[kind]} ({job.job_id}).")


def show_discovered(path: str) -> None:
    """Draw a circuit file written by `circuitviz discover --out` (EAP-IG JSON layout)."""
    try:
        scored = load_json(path)
    except ValueError as exc:
        st.error(f"The discovered circuit could not be read: {exc}")
        return
    graph = scored.graph
    valid = graph.valid_mask
    scores = scored.scores[valid].numpy()
    selected = scored.circuit.edge_mask[valid].numpy()
    layout = state.layout_for((graph.n_layers, graph.n_heads, graph.n_kv_heads, graph.paper))
    fig = circuit_figure(
        layout,
        scores,
        selected,
        only_selected=True,
        title=Path(path).name,
        style=state.figure_style(),
    )
    st.plotly_chart(fig, theme=None, width="stretch", key=f"discovered-{path}")


def job_progress(job: jobs.Job) -> float | None:
    if job.kind != "tune" or not job.total_steps:
        return None
    try:
        frames = state.load(job.job_id)
    except RunStoreError:
        return None
    done = int(frames.steps["step"].max()) if len(frames.steps) else 0
    return min(1.0, done / job.total_steps)


@st.fragment(run_every=2.0)
def job_list() -> None:
    recorded = jobs.list_jobs(root)[:8]
    if not recorded:
        st.caption("No jobs started from this dashboard yet.")
        return
    for job in recorded:
        rc = jobs.exit_code(job)
        with st.container(border=True):
            head, stop, watch = st.columns([6, 1, 1])
            status = jobs.status_word(rc)
            head.markdown(f"**{COMMANDS.get(job.kind, job.kind)}** `{job.job_id}` · {status}")
            progress = job_progress(job)
            if progress is not None:
                head.progress(progress, text=f"{progress:.0%} of {job.total_steps} steps")
            if rc is None and stop.button("Stop", key=f"stop-{job.job_id}"):
                jobs.stop_job(job)
                st.rerun()
            if job.kind == "tune" and watch.button("Watch", key=f"watch-{job.job_id}"):
                state.set_view(run=job.job_id, step=None, compare=None, node=None)
                st.switch_page("views/circuit.py")
            if status == "stopped":
                st.info("Stopped. A stopped tuning run keeps every step it recorded.")
            elif status == "failed":
                st.error(jobs.plain_failure(job, rc))
            if job.kind == "discover" and rc == 0 and job.output and Path(job.output).is_file():
                with st.expander("The discovered circuit", expanded=True):
                    show_discovered(job.output)
            with st.expander("log"):
                st.code(jobs.log_tail(job) or "(empty)", language=None)


st.subheader("Jobs")
job_list()
