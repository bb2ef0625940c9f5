"""Tour: six short steps for newcomers, one at a time with Back and Next; each opens the page it
talks about in the right state."""

import state
import streamlit as st

STEP_KEY = "cv_tour_step"

st.subheader("A six-minute tour")
st.caption("Each step opens the page it talks about, on the current run. Come back here any time.")

STEPS = [
    (
        "1. Nodes and edges",
        "A transformer is drawn as a graph. **Boxes** are the parts that write into the residual "
        "stream: the **input** embeddings (bottom), each **attention head** (`h0`, `h1`, ... in "
        "rows, one row per layer) and each layer's **MLP** (green, right), and the **logits** on "
        "top. An **edge** goes from a box that writes to a box that later reads: into a head's "
        "query, key or value (left, middle, right of its box), into an MLP, or into the logits.",
        {"step": "before", "compare": None, "node": None, "top_n": 50, "node_color": "kind"},
        "views/circuit.py",
    ),
    (
        "2. What an edge's score means (EAP)",
        "Edge attribution patching scores every edge at once with one forward and one backward "
        "pass. A score estimates *how much the task metric (the logit difference between the "
        "right and the wrong answer) changes if this edge carries the corrupted prompt's "
        "activation instead of the clean one*. So a **negative** score (blue) means the edge "
        "helps the right answer; a **positive** one (orange) works against it. A thicker line is "
        "a larger |score|. The **circuit** is the top-N edges by |score|. Hover an edge to read "
        "its score and rank among all edges.",
        {"color_by": "sign", "compare": None, "node": None, "top_n": 50},
        "views/circuit.py",
    ),
    (
        "3. Circuit-tuning",
        "Circuit-tuning fine-tunes **only the parameters of the circuit's boxes** (outlined in "
        "dark), re-discovering the circuit every K steps, while full fine-tuning changes "
        "everything. The demo runs teach the model *subject-verb disagreement* (to pick the verb "
        "of the wrong number), the circuit-tuning paper's task. The **Heads** page shows how much "
        "each head's weights moved under each method.",
        {"only_circuit": False, "compare": None},
        "views/heads.py",
    ),
    (
        "4. Scrub through training",
        "Drag the **Step** slider (or press ▶ Play): the layout never moves, so any motion is the "
        "circuit changing, and the strip above the graph gives the step's accuracy, task metric "
        "and held-out loss. **Compare with** *before* colours the edges that were added, removed, "
        "strengthened or weakened between *before* and *after*, with the node and edge overlap "
        "(IoU). Click a box to see its edges and its score across all steps.",
        {"step": "last", "compare": "first", "node": None, "top_n": 100},
        "views/circuit.py",
    ),
    (
        "5. Why it changed",
        "The **Mechanisms** page shows what `circuitviz analyse` measured at each checkpoint. "
        "Each head's **direct logit attribution** says how much it writes the right answer "
        "straight into the logits: on the demo run, the heads that pushed the agreeing verb "
        "before tuning push the disagreeing one after it (their colour flips), rather than new "
        "heads taking over. Below, the **faithfulness** of the circuit at each step and of the "
        "circuit it started from tells a circuit that moved from one that stopped working, and "
        "the overlap with full fine-tuning shows where the two methods part. Back on the Circuit "
        "page, **boxes: DLA** colours the graph's own boxes the same way as you scrub.",
        {"compare": None, "node": None},
        "views/mechanisms.py",
    ),
    (
        "6. Run your own",
        "The **Run** page starts circuit discovery, a tuning run or a top-N sweep in the "
        "background; the Circuit page follows it live as snapshots land. The **Export** page saves "
        "the current view as SVG, PDF, PNG, interactive HTML, a GIF of the slider, or JSON that "
        "reopens it.",
        {},
        "views/run.py",
    ),
]


index = min(max(int(st.session_state.get(STEP_KEY, 0)), 0), len(STEPS) - 1)
title, text, changes, page = STEPS[index]
st.progress((index + 1) / len(STEPS), text=f"Step {index + 1} of {len(STEPS)}")
with st.container(border=True):
    st.markdown(f"#### {title}")
    st.markdown(text)
    show = st.button("Show me", key=f"tour-{index}", type="primary")
back, forward, _ = st.columns([1, 1, 6])
if back.button("Back", icon=":material/arrow_back:", disabled=index == 0, key="tour-back"):
    st.session_state[STEP_KEY] = index - 1
    st.rerun()
if forward.button(
    "Next", icon=":material/arrow_forward:", disabled=index == len(STEPS) - 1, key="tour-next"
):
    st.session_state[STEP_KEY] = index + 1
    st.rerun()
if show:
    if changes.get("compare") == "first":
        # Compare the first circuit of the run's own task with its last one. (A run that tunes a
        # task stores the original task's "before" apart: sv-disagreement's first circuit of its
        # own is at step 0. Naming "before" here compared "after" with "after".)
        frames = state.quiet_run()
        tokens = frames.tokens if frames is not None else []
        if len(tokens) >= 2:
            changes = {**changes, "compare": tokens[0], "step": tokens[-1]}
        else:
            changes = {**changes, "compare": None, "step": None}
    state.set_view(**changes)
    st.switch_page(page)
