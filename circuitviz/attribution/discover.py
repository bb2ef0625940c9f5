"""Circuit discovery end to end: what ``circuitviz discover`` and ``circuitviz.discover`` run.

1. Draw ``n_examples`` examples of the task on ``split`` (and on ``eval_split``), tokenised with the
   model's own tokenizer.
2. Score every edge of the model's graph on the first set (``attribute``: EAP or EAP-IG).
3. Select the circuit (``graph.select.select``: top-N, threshold or node-weighted), then remove
   the edges on no input -> logits path (unless ``keep_dead_ends``), as the reference EAP-IG / MIB
   evaluation does: such edges cannot carry the input to the logits.
4. Measure faithfulness (m_circuit - m_empty) / (m_full - m_empty) on the held-out set, next to a
   random circuit of the same size; with ``sweep``, also MIB's CPR and CMD over edge budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from circuitviz.attribution.config import SIGN_CONVENTION, DiscoverConfig
from circuitviz.attribution.eap import attribute
from circuitviz.attribution.faithfulness import (
    CircuitMetrics,
    FaithfulnessConfig,
    SweepResult,
    circuit_and_random_faithfulness,
    faithfulness_sweep,
)
from circuitviz.attribution.scores import EdgeScores
from circuitviz.graph.select import Circuit, prune_dead_ends, select
from circuitviz.graph.topology import Graph, graph_for


@dataclass(frozen=True, kw_only=True)
class Discovery:
    """The result of one discovery (``describe()`` is what ``discover --json`` prints)."""

    config: DiscoverConfig
    graph: Graph = field(repr=False)
    scores: EdgeScores = field(repr=False)
    circuit: Circuit = field(repr=False)
    n_dead_ends: int  # selected edges removed for lying on no input -> logits path
    faithfulness: float
    random_faithfulness: float
    metrics: CircuitMetrics
    sweep: SweepResult | None = None

    def describe(self) -> dict:
        out = {
            **self.config.attribution.describe(),
            "selection": self.config.selection.rule,
            "paper_graph": self.graph.paper,
            "n_edges": self.graph.n_edges,
            "n_selected": self.circuit.n_edges,
            "n_dead_ends_removed": self.n_dead_ends,
            "dead_ends_kept": self.config.keep_dead_ends,
            "n_nodes_selected": len(self.circuit.nodes()),
            "faithfulness": self.faithfulness,
            "random_faithfulness": self.random_faithfulness,
            "m_full": self.metrics.m_full,
            "m_empty": self.metrics.m_empty,
            "m_circuit": self.metrics.m_circuits[0],
            "n_examples": self.scores.n_examples,
            "n_eval_examples": self.metrics.n_examples,
        }
        if self.sweep is not None:
            out.update(cpr=self.sweep.cpr, cmd=self.sweep.cmd)
        return out


def task_examples(model, task: str, config: DiscoverConfig, split: str, *, flag: str = "--split"):
    """The task's examples on ``split``: pairs, or an instruction task's prompts and responses
    (through the chat template; for the ``outcome`` metric only those whose answer was located).
    ValueError when none is usable, naming ``flag``, the option that chose the split."""
    from circuitviz.tasks import build_sft_data, build_task_data
    from circuitviz.tasks.catalog import task_kind

    if task_kind(task) == "sft":
        from circuitviz.tasks import SFTFormat

        data = build_sft_data(
            task,
            model.tokenizer,
            split=split,
            n=config.n_examples,
            seed=config.seed,
            fmt=SFTFormat().within_context(model.info.n_ctx),
        )
        if config.attribution.metric == "outcome":
            data = data.with_located_answers()
    else:
        data = build_task_data(
            task,
            model.tokenizer,
            split=split,
            n=config.n_examples,
            seed=config.seed,
            max_length=model.info.n_ctx or None,
        )
    if data.n_examples == 0:
        raise ValueError(
            f"task {task!r} gave no usable examples on split {split!r} ({flag}); a small file "
            f"may leave a split empty: {flag} all uses every example"
        )
    return data


def discover(
    model,
    task: str,
    config: DiscoverConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Discovery:
    """Run steps 1-4 of the module docstring on a loaded model (``circuitviz.models.load_model``).

    >>> import circuitviz as cv
    >>> found = cv.discover(cv.load_model("demo"), "sv-agreement", cv.DiscoverConfig(n_examples=16))
    >>> found.circuit.n_edges <= 100 and found.faithfulness > found.random_faithfulness
    True
    """
    config = config or DiscoverConfig()
    say = progress or (lambda _stage: None)
    graph = graph_for(model.info, paper=config.paper_graph, mlp_groups=config.mlp_groups)
    config.selection.check_fits(graph.n_edges)  # before any work
    data = task_examples(model, task, config, config.split)
    held_out = task_examples(model, task, config, config.eval_split, flag="--eval-split")
    say("scoring edges")
    scores = attribute(model, graph, data.batches(config.batch_size), config.attribution)
    selected = select(scores.scores, graph, config.selection)
    from_input = config.attribution.positions != "target"  # as evaluate_circuits prunes
    circuit = (
        selected if config.keep_dead_ends else prune_dead_ends(selected, from_input=from_input)
    )
    say("measuring faithfulness")
    faith_config = FaithfulnessConfig.from_attribution(
        config.attribution, keep_dead_ends=config.keep_dead_ends
    )
    eval_batches = list(held_out.batches(config.batch_size))
    faith, random_faith, metrics = circuit_and_random_faithfulness(
        model, graph, eval_batches, circuit, faith_config, seed=config.seed
    )
    metrics.check_span()
    sweep = None
    if config.sweep:
        say("sweeping edge budgets")
        sweep = faithfulness_sweep(model, graph, eval_batches, scores.scores, faith_config)
    return Discovery(
        config=config,
        graph=graph,
        scores=scores,
        circuit=circuit,
        n_dead_ends=selected.n_edges - circuit.n_edges,
        faithfulness=faith,
        random_faithfulness=random_faith,
        metrics=metrics,
        sweep=sweep,
    )


def circuit_metadata(discovery: Discovery, **extra) -> dict:
    """What a circuit file records about how it was found (``graph.io`` writes it)."""
    return {**extra, **discovery.describe(), "sign": SIGN_CONVENTION}
