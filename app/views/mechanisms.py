"""Mechanisms: why the circuit changed, from ``circuitviz analyse``'s results in the run store.

Each head's direct logit attribution at an analysed step next to step 0's, the largest nodes'
against step, which head holds each role step by step, where the heads look, the faithfulness of
the circuit the run held at each step and of the one it started from, and the overlap with another
run's circuits step by step.
"""

import state
import streamlit as st
import widgets

from circuitviz.plotting.heads import head_heatmap_figure
from circuitviz.plotting.mechanisms import (
    ROLE_NAMES,
    alignment_frame,
    alignment_lines,
    analysed_steps,
    bias_figure,
    dla_lines,
    dla_matrix,
    faithfulness_area_frame,
    faithfulness_area_lines,
    faithfulness_frame,
    faithfulness_lines,
    figures_html,
    head_matrix,
    ov_figure,
    ov_frame,
    pattern_figure,
    role_frame,
    role_lines,
)
from circuitviz.plotting.view import nearest_token, resolve_token

frames = state.current_run()
if frames is None:
    st.stop()
st.subheader(state.run_title(frames))
style = state.figure_style()
analyses = state.analyses(frames.run_id)
if analyses.empty:
    st.info(
        "This run has not been analysed yet. Analyse it from the Run page, or with "
        f"`circuitviz analyse {frames.run_id}` (add `--against OTHER` to compare it with another "
        "run); the results are written into the run and show here."
    )
    st.stop()
n_layers, n_heads = frames.graph_shape[:2]
shown: dict[str, object] = {}  # every figure on the page by name, for the export below


def show(fig, name: str) -> None:
    shown[name] = fig
    st.plotly_chart(fig, theme=None, width="stretch")


def shared_step_slider(steps: list[int]) -> int:
    """The analysed step to show, on a slider shared with the Circuit page: it follows the view's
    step (the latest analysed step at or before it) whenever that step changed elsewhere, and
    moving it moves the view's step to the run's snapshot nearest the checkpoint, so the Circuit
    page then shows the same moment. Snapshots and checkpoints need not line up: the slider keeps
    the checkpoint chosen here even when the nearest snapshot lies before it."""
    snapshots = frames.snapshots
    synced = (frames.run_id, state.view().step)
    if st.session_state.get("mech_step_synced") != synced or "mech_step" not in st.session_state:
        try:
            at = float(snapshots["step"].iloc[resolve_token(snapshots, state.view().step)])
        except KeyError:  # no snapshot yet, or a step this run lacks: the last checkpoint
            at = float(steps[-1])
        st.session_state["mech_step"] = max([s for s in steps if s <= at] or steps[:1])
        st.session_state["mech_step_synced"] = synced
    elif st.session_state["mech_step"] not in steps:  # the run gained or lost checkpoints
        st.session_state["mech_step"] = steps[-1]

    def moved() -> None:
        if len(snapshots):
            token = nearest_token(snapshots, str(st.session_state["mech_step"]))
            state.set_view(step=token)
            st.session_state["mech_step_synced"] = (frames.run_id, token)

    return st.select_slider(
        "Analysed step (a checkpoint; shared with the Circuit page)",
        options=steps,
        key="mech_step",
        on_change=moved,
    )


dla_steps = analysed_steps(analyses, "dla")
shared = None  # the analysed step the shared slider shows
if dla_steps:
    st.markdown("#### Direct logit attribution per head")
    step = shared = dla_steps[-1] if len(dla_steps) == 1 else shared_step_slider(dla_steps)
    panels = {f"step {dla_steps[0]}": dla_matrix(analyses, dla_steps[0], n_layers, n_heads)}
    panels[f"step {step}"] = dla_matrix(analyses, step, n_layers, n_heads)
    show(
        head_heatmap_figure(panels, colorbar_title="DLA", diverging=True, style=style),
        f"DLA per head, step {dla_steps[0]} and {step}",
    )
    st.caption(
        "Each head's output at the target position, through the final norm at its frozen scale, "
        "onto W_U[answer] − W_U[wrong]: positive pushes the answer. A head whose colour flips "
        "between the panels changed sides during tuning."
    )
    show(dla_lines(analyses, style=style), "DLA per node over steps")

roles = role_frame(analyses)
if len(roles):
    st.markdown("#### Head roles")
    present = [r for r in ROLE_NAMES if r in set(roles["role"])]
    role = st.radio("Role", present, format_func=ROLE_NAMES.get, horizontal=True, key="mech_role")
    show(role_lines(analyses, role, style=style), f"{ROLE_NAMES[role]} role over steps")
    st.caption(
        "Previous token, duplicate token and induction: the mean attention a head pays the "
        "pattern's position on random token sequences (0 to 1; spread evenly it is about "
        "1 / positions). Copying: how much a head raises the logits of the tokens it attends to "
        "from the target position. The lines are the heads that hold the role (the top score) "
        "at some step: where they cross, the role moved to another head."
    )

attention_steps = analysed_steps(analyses, "attention")
if attention_steps:
    st.markdown("#### Attention to the task's tokens")
    # step 0 beside the shared step (the DLA slider's), else beside the last analysed step
    first = attention_steps[0]
    last = shared if shared in attention_steps else attention_steps[-1]
    panels = {
        f"step {s}": head_matrix(analyses, "attention", s, n_layers, n_heads)
        for s in dict.fromkeys((first, last))
    }
    show(
        head_heatmap_figure(panels, colorbar_title="attention", style=style),
        "attention to the task's tokens",
    )
    st.caption(
        "The attention each head pays, from the position where the answer is read, to the tokens "
        "the corrupted prompt changes (the subject whose number flips, the names, the occupation)."
    )
    pattern_steps = analysed_steps(analyses, "pattern")
    if pattern_steps:
        heads_here = [f"a{layer}.h{h}" for layer in range(n_layers) for h in range(n_heads)]
        c1, c2 = st.columns([1, 2])
        chosen = c1.selectbox("Head", heads_here, key="mech_pattern_head")
        at_step = (
            pattern_steps[0]
            if len(pattern_steps) == 1
            else c2.select_slider(
                "Step",
                options=pattern_steps,
                value=last if last in pattern_steps else pattern_steps[-1],
                key="mech_pattern_step",
            )
        )
        show(
            pattern_figure(analyses, at_step, chosen, style=style),
            f"{chosen}'s pattern at step {at_step}",
        )
        st.caption("The head's whole attention pattern on the first probe prompt.")

ov = ov_frame(analyses)
if len(ov):
    st.markdown("#### How a head's OV circuit turned")
    heads = sorted(set(ov["head"]), key=lambda h: tuple(int(x) for x in h[1:].split(".h")))
    last = ov[ov["step"] == ov["step"].max()].dropna(subset=["cos_unembed"])
    default = (
        last.sort_values("cos_unembed", ascending=False)["head"].iloc[0] if len(last) else heads[0]
    )
    left, right = st.columns([2, 1])
    head = left.selectbox("Head", heads, index=heads.index(default), key="mech_ov_head")
    matrix = right.radio(
        "Matrix",
        ["ov", "qk"],
        format_func={"ov": "OV: what it writes", "qk": "QK: where it looks"}.get,
        horizontal=True,
        key="mech_ov_kind",
    )
    show(
        ov_figure(analyses, head, kind=matrix, style=style), f"{head}'s {matrix.upper()} trajectory"
    )
    st.caption(
        "Left: the head's OV matrix (what it writes for what it reads) or QK matrix (which query "
        "attends to which key) at each checkpoint, on the two directions along which it moved "
        "most. Right: how well the OV change since step 0 points along W_U[answer] − W_U[wrong], "
        "averaged over the probe's examples (1: the head learnt to write the answer)."
    )

if (analyses["kind"] == "bias").any():
    st.markdown("#### Bias")
    show(bias_figure(analyses, style=style), "prejudice risk")
    st.caption(
        "Each occupation's prejudice risk |2p − 1|, p the mean probability of the stereotyped "
        "pronoun over the two: 0 means either pronoun alike. De-biasing moves the mass to 0."
    )

faith = faithfulness_frame(analyses)
if len(faith):
    st.markdown("#### Faithfulness over time")
    show(faithfulness_lines(analyses, style=style), "faithfulness over steps")
    st.caption(
        "Solid: the circuit the run held at that step; dotted: the circuit it started from, both "
        "measured with that step's weights. A falling solid line: the circuit became less "
        "faithful. A falling dotted line under a steady solid one: the circuit moved."
    )
    if len(faithfulness_area_frame(analyses)):
        show(faithfulness_area_lines(analyses, style=style), "CPR and CMD over steps")
        st.caption(
            "MIB's summaries over the whole sweep of circuit sizes (0.1% to 100% of edges): CPR, "
            "the area under the faithfulness curve (higher: small circuits already carry the "
            "task), and CMD, the area between it and 1 (lower: closer to the full model at every "
            "size). A gap missing at a step: the full model and the empty circuit scored alike "
            "there, so no ratio is defined."
        )

aligned = alignment_frame(analyses)
if len(aligned):
    st.markdown("#### Compared with another run")
    others = sorted(set(aligned["other"]))
    other = others[0] if len(others) == 1 else st.selectbox("Other run", others, key="mech_other")
    show(alignment_lines(analyses, other, style=style), f"overlap with {other}")

st.markdown("#### Export")
csv_col, html_col = st.columns(2)
csv_col.download_button(
    "The analyses (CSV)",
    analyses.to_csv(index=False).encode(),
    file_name=f"{frames.run_id}.analyses.csv",
    mime="text/csv",
    help="One row per step, analysis and key (a node, a head, a role:head, a circuit@budget)",
)
html_col.download_button(
    "These figures (interactive HTML, offline)",
    figures_html(list(shown.values()), title=f"{frames.run_id}: mechanisms").encode(),
    file_name=f"{frames.run_id}.mechanisms.html",
    mime="text/html",
)
widgets.figure_files(shown, frames.run_id, key="mech_export_figure")
