"""The small public API of ``import circuitviz as cv``: what a notebook needs, with one runnable
example each (the examples run as doctests in the test suite, on the bundled demo model).

    >>> import circuitviz as cv
    >>> model = cv.load_model("demo")
    >>> graph = cv.graph_for(model)
    >>> graph.n_edges
    1519
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


def graph_for(model, *, paper: bool = False, mlp_groups: int | None = None):
    """The computational graph of a loaded model (``cv.load_model`` / ``cv.from_model``): nodes
    ``input``, ``a{L}.h{H}`` (read through ``<q>``, ``<k>``, ``<v>``), ``m{L}`` and ``logits``, and
    every causally possible edge between them.

    >>> import circuitviz as cv
    >>> graph = cv.graph_for(cv.load_model("demo"))
    >>> graph.src_names[:3], graph.dst_names[-1]
    (('input', 'a0.h0', 'a0.h1'), 'logits')
    """
    from circuitviz.graph.topology import graph_for as build

    return build(getattr(model, "info", model), paper=paper, mlp_groups=mlp_groups)


def task_data(
    task: str | Path | Sequence,
    model,
    *,
    split: str = "all",
    n: int | None = 64,
    seed: int = 0,
):
    """Examples of a task, tokenised for ``model``: a built-in task name (``sv-agreement``, ...),
    a ``.jsonl`` file of pairs, or a list of pairs (dicts with ``clean``, ``corrupt``, ``answer``,
    ``wrong``). ``data.batches(16)`` feeds ``cv.attribute`` and ``cv.faithfulness``.

    >>> import circuitviz as cv
    >>> model = cv.load_model("demo")
    >>> pairs = [{"clean": "the keys to the cabinet", "corrupt": "the key to the cabinet",
    ...           "answer": " are", "wrong": " is"}]
    >>> cv.task_data(pairs, model).n_examples
    1
    >>> cv.task_data("sv-agreement", model, split="dev", n=8).n_examples
    8
    """
    from circuitviz.tasks.base import Example
    from circuitviz.tasks.data import build_task_data, encode_examples

    common = {"device": model.device, "max_length": model.info.n_ctx or None}
    if isinstance(task, str | Path):
        return build_task_data(task, model.tokenizer, split=split, n=n, seed=seed, **common)
    examples = [item if isinstance(item, Example) else Example(**item) for item in task]
    return encode_examples("examples", examples, model.tokenizer, split="all", **common)


def faithfulness(
    model,
    graph,
    batches: Iterable,
    circuit,
    config=None,
    *,
    metric: Callable | None = None,
) -> float:
    """(m_circuit - m_empty) / (m_full - m_empty) of ``circuit``, measured by running the model with
    every edge outside it replaced by its baseline (``cv.FaithfulnessConfig``: corrupted, mean or
    zero; dead-end edges removed first unless ``keep_dead_ends``). ``ValueError`` where the full
    model and the empty circuit give the same mean metric up to rounding: the ratio is undefined.

    >>> import circuitviz as cv
    >>> model = cv.load_model("demo")
    >>> graph = cv.graph_for(model)
    >>> data = cv.task_data("sv-agreement", model, split="dev", n=16)
    >>> full = cv.select(graph.valid_mask.float(), graph, cv.SelectionConfig(top_n=graph.n_edges))
    >>> round(cv.faithfulness(model, graph, data.batches(16), full), 6)
    1.0
    """
    from circuitviz.attribution.faithfulness import FaithfulnessConfig, evaluate_circuits

    metrics = evaluate_circuits(
        model, graph, batches, [circuit], config or FaithfulnessConfig(), metric=metric
    )
    metrics.check_span()
    (value,) = metrics.faithfulness()
    return value


def open_run(run: str | Path, *, runs_dir: str | Path | None = None):
    """A recorded run (``circuitviz tune``), by id or directory: its config, per-step records
    (``steps()``, ``evals()``), circuit snapshots and checkpoints. Looks in ``runs_dir`` (default
    ``$CIRCUITVIZ_RUNS`` or ``./runs``) and the bundled demo runs.

    >>> import circuitviz as cv
    >>> run = cv.open_run("sv-disagreement-circuit")
    >>> run.method, run.status
    ('circuit', 'finished')
    """
    from circuitviz.runs import RunStore

    return RunStore.default(runs_dir).open(str(run))
