"""Run: start a discovery, a tuning run or a sweep in a background process, and watch it.

Starting and stopping jobs is allowed only when the dashboard is served on this machine alone
(loopback), or when ``circuitviz app --allow-remote-jobs`` said so.
"""

from pathlib import Path

import jobs
import runform
import state
import streamlit as st

from circuitviz.plotting.circuit import circuit_figure
from circuitviz.plotting.export import read_circuit_json
from circuitviz.plotting.scene import SceneOptions, build_scene
from circuitviz.runs import RunStoreError, new_run_id
from circuitviz.runs.store import DEMO_RUNS
from circuitviz.tasks.catalog import task_info, task_names

root = state.runs_dir()
allowed = jobs.jobs_allowed(st.get_option("server.address"))

st.subheader("Start a run")
st.caption(
    "Runs are written by a separate process (`circuitviz tune ...`) into the dashboard's runs "
    "directory; this page never runs a model itself, so the dashboard stays responsive. Leave a "
    "field empty to use the task's own default (shown) or the engine's."
)
if not allowed:
    st.warning(
        "Starting and stopping jobs is off: this dashboard is served on a network address, and "
        "anyone who can reach it could start processes on this machine. Restart it with "
        "`circuitviz app --allow-remote-jobs` to allow it, or serve it on 127.0.0.1."
    )

top_left, top_right = st.columns([3, 3])
kind = top_left.radio(
    "What", list(runform.COMMANDS), format_func=runform.COMMANDS.get, horizontal=True, key="rk"
)
tasks = task_names()
task = top_right.selectbox("Task", tasks, index=tasks.index("sv-disagreement"), key="rtask")
st.caption(task_info(task).description)
with st.form("start"):
    c1, c2 = st.columns([3, 1])
    model = c1.text_input(
        "Model",
        "demo",
        help="demo, smollm2-135m, random:gpt2, a .gguf file, a local Hugging Face directory or "
        "a hub id",
    )
    method = c2.selectbox("Method", runform.METHODS[kind])
    values = {}
    columns = st.columns(4)
    for i, field in enumerate(runform.fields_of(kind)):
        values[field.key] = columns[i % 4].text_input(
            field.label,
            "",
            placeholder=runform.placeholder(field, task),
            help=field.help or None,
            key=f"field-{kind}-{task}-{field.key}",
        )
    submitted = st.form_submit_button("Start", type="primary", disabled=not allowed)

if submitted and allowed:
    job_id = new_run_id(task, "sweep" if kind == "sweep" else method)
    output = str(jobs.jobs_dir(root) / f"{job_id}.circuit.json") if kind == "discover" else None
    try:
        argv = runform.build_argv(
            kind,
            model=model,
            task=task,
            method=method,
            values=values,
            run_id=job_id,
            runs_dir=str(root),
            output=output,
        )
    except ValueError as exc:
        st.error(f"Nothing was started: {state.as_text(exc, 200)}")
        st.stop()
    job = jobs.start_job(
        argv,
        root=root,
        job_id=job_id,
        kind=kind,
        total_steps=runform.total_steps(argv),
        output=output,
    )
    if kind == "tune":
        state.set_view(run=job_id, step=None, compare=None, node=None)
    st.success(f"Started {runform.COMMANDS[kind]} ({job.job_id}).")


st.subheader("Analyse a run")
st.caption(
    "The mechanisms at each of a run's checkpoints (direct logit attribution per head and MLP, "
    "the faithfulness of its circuits over time), and optionally its circuits against another "
    "run's step by step: `circuitviz analyse` in the background, written into the run. The "
    "Mechanisms page shows the results."
)
# The bundled demo runs come analysed, and analysing writes into a run: they are not offered.
finished = [
    r
    for r in state.all_runs()
    if r.status in ("finished", "stopped", "failed") and Path(r.dir).parent != DEMO_RUNS
]
if not finished:
    st.caption("No finished run to analyse yet.")
else:
    with st.form("analyse"):
        ids = [r.id for r in finished]
        a1, a2 = st.columns(2)
        target = a1.selectbox("Run", ids, key="analyse_run")
        against = a2.selectbox("Compare with (optional)", ["(none)", *ids], key="analyse_against")
        go = st.form_submit_button("Analyse", disabled=not allowed)
    if go and allowed:
        argv = ["analyse", target, "--runs-dir", str(root)]
        if against not in ("(none)", target):
            argv += ["--against", against]
        job_id = new_run_id("analyse", target[:40])
        jobs.start_job(argv, root=root, job_id=job_id, kind="analyse")
        state.set_view(run=target)
        st.success(f"Started the analysis of {target} ({job_id}).")


def show_discovered(path: str) -> None:
    """Draw a circuit file written by `circuitviz discover --out` (EAP-IG JSON layout)."""
    try:
        layout, scores, in_graph = read_circuit_json(path)
    except ValueError:
        st.error("The discovered circuit could not be read (see the log).")
        return
    scene = build_scene(layout, scores, in_graph, SceneOptions(only_selected=True))
    fig = circuit_figure(scene, title="the discovered circuit", style=state.figure_style())
    st.plotly_chart(fig, theme=None, width="stretch", key=f"discovered-{path}")


def job_progress(job: jobs.Job) -> tuple[float, int] | None:
    if job.kind != "tune":
        return None
    try:
        frames = state.load(job.job_id)
    except RunStoreError:
        return None
    total = job.total_steps or frames.config.get("steps")
    if not total:
        return None
    done = int(frames.steps["step"].max()) if len(frames.steps) else 0
    return min(1.0, done / total), int(total)


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
            head.markdown(
                f"**{(runform.COMMANDS | runform.OTHER_JOBS).get(job.kind, job.kind)}** "
                f"`{job.job_id}` · {status}"
            )
            progress = job_progress(job)
            if progress is not None:
                share, total = progress
                head.progress(share, text=f"{share:.0%} of {total} steps")
            if rc is None and stop.button("Stop", key=f"stop-{job.job_id}", disabled=not allowed):
                jobs.stop_job(job)
                st.rerun()
            if job.kind == "tune" and watch.button("Watch", key=f"watch-{job.job_id}"):
                state.set_view(run=job.job_id, step=None, compare=None, node=None)
                st.switch_page("views/circuit.py")
            if job.kind == "analyse" and rc == 0 and watch.button("Show", key=f"show-{job.job_id}"):
                state.set_view(run=job.argv[1], step=None, compare=None, node=None)
                st.switch_page("views/mechanisms.py")
            if status == "stopped":
                st.info("Stopped. A stopped tuning run keeps every step it recorded.")
            elif status == "failed":
                st.error(state.as_text(jobs.plain_failure(job, rc), 300))
            if job.kind == "discover" and rc == 0 and job.output and jobs.exists(job.output):
                with st.expander("The discovered circuit", expanded=True):
                    show_discovered(job.output)
            with st.expander("log"):
                st.code(jobs.log_tail(job) or "(empty)", language=None)


st.subheader("Jobs")
job_list()
