"""``circuitviz discover``: score every edge on a task, keep a circuit, measure its faithfulness."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from circuitviz.cli.common import UserError, add_model_args, load_model_from_args, print_json

METHOD_ALIASES = {
    "eap": "eap",
    "eap-ig": "eap-ig-inputs",
    "eap-ig-inputs": "eap-ig-inputs",
    "eap-ig-activations": "eap-ig-activations",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "discover",
        help="find a task's circuit with EAP / EAP-IG and measure its faithfulness",
        description="Score every edge of the model's graph on a task (EAP or EAP-IG), keep a "
        "circuit (top-N edges, a threshold, or the paper's node-weighted ranking), and report its "
        "faithfulness (m_circuit - m_empty) / (m_full - m_empty) on held-out examples, next to a "
        "random circuit of the same size. A score estimates m(edge patched to its baseline) - "
        "m(clean): negative edges help the correct answer.",
    )
    add_model_args(parser)
    parser.add_argument("--task", default="sv-agreement", help="a task name or a .jsonl file")
    parser.add_argument("--method", default="eap-ig", choices=sorted(METHOD_ALIASES))
    parser.add_argument("--baseline", default="corrupted", choices=["corrupted", "mean", "zero"])
    parser.add_argument("--positions", default="all", choices=["all", "target"])
    parser.add_argument(
        "--metric", default="logit_diff", choices=["logit_diff", "logprob_diff", "answer_loss"]
    )
    parser.add_argument("--ig-steps", type=int, default=5, help="EAP-IG steps (default 5)")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--top-n", type=int, default=None, help="keep N edges (default 100)")
    select.add_argument("--threshold", type=float, default=None, help="keep edges with |s| >= T")
    parser.add_argument(
        "--selection",
        default="top-n",
        choices=["top-n", "node-weighted"],
        help="how --top-n ranks edges: by |score|, or the paper's node-weighted |score|",
    )
    parser.add_argument("--prune", action="store_true", help="drop edges off input->logits paths")
    parser.add_argument("--paper-graph", action="store_true", help="no input/logits nodes")
    parser.add_argument("-n", "--n-examples", type=int, default=64, help="examples per split")
    parser.add_argument("--split", default="train", choices=["train", "dev", "test"])
    parser.add_argument(
        "--eval-split", default="dev", choices=["train", "dev", "test"], help="for faithfulness"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="examples drawn and random circuit")
    parser.add_argument("--sweep", action="store_true", help="also report MIB's CPR and CMD")
    parser.add_argument("--out", type=Path, default=None, help="write .json or .safetensors")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.n_examples <= 0 or args.batch_size <= 0:
        raise UserError("--n-examples and --batch-size must be positive")
    if args.ig_steps < 1:
        raise UserError("--ig-steps must be at least 1")
    if args.top_n is not None and args.top_n < 0:
        raise UserError("--top-n must be >= 0")
    if args.out is not None and args.out.suffix.lower() not in (".json", ".safetensors"):
        raise UserError(f"--out {args.out}: use a .json (EAP-IG style) or .safetensors file")
    if args.threshold is not None and args.selection != "top-n":
        raise UserError("--selection node-weighted ranks edges for --top-n, not --threshold")


def _select(scores, graph, args):
    from circuitviz.graph.select import node_weighted, prune_dead_ends, threshold, top_n

    if args.threshold is not None:
        circuit = threshold(scores, graph, args.threshold)
    else:
        n = 100 if args.top_n is None else args.top_n
        if n > graph.n_edges:
            raise UserError(f"--top-n {n} exceeds the graph's {graph.n_edges} edges")
        circuit = (
            node_weighted(scores, graph, n)
            if args.selection != "top-n"
            else top_n(scores, graph, n)
        )
    return prune_dead_ends(circuit) if args.prune else circuit


def _task_data(args, model, split: str):
    from circuitviz.tasks import build_task_data

    try:
        data = build_task_data(
            args.task, model.tokenizer, split=split, n=args.n_examples, seed=args.seed
        )
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise UserError(str(exc).strip("'\"")) from exc
    if data.n_examples == 0:
        raise UserError(f"task {args.task!r} gave no usable examples on split {split!r}")
    return data


def run(args: argparse.Namespace) -> int:
    from circuitviz.attribution import (
        SIGN_CONVENTION,
        AttributionConfig,
        FaithfulnessConfig,
        attribute,
        circuit_and_random_faithfulness,
        faithfulness_sweep,
    )
    from circuitviz.graph.io import ScoredGraph, save_graph
    from circuitviz.graph.topology import graph_for

    _check_args(args)
    started = time.perf_counter()
    model = load_model_from_args(args)
    graph = graph_for(model.info, paper=args.paper_graph)
    data = _task_data(args, model, args.split)
    held_out = _task_data(args, model, args.eval_split)
    config = AttributionConfig(
        method=METHOD_ALIASES[args.method],
        baseline=args.baseline,
        positions=args.positions,
        metric=args.metric,
        ig_steps=args.ig_steps,
    )
    edge_scores = attribute(model, graph, data.batches(args.batch_size), config)
    circuit = _select(edge_scores.scores, graph, args)
    faith_config = FaithfulnessConfig(
        baseline=args.baseline, positions=args.positions, metric=args.metric
    )
    eval_batches = list(held_out.batches(args.batch_size))
    faith, random_faith, metrics = circuit_and_random_faithfulness(
        model, graph, eval_batches, circuit, faith_config, seed=args.seed
    )
    result = {
        "model": args.model,
        "task": args.task,
        **config.describe(),
        "paper_graph": graph.paper,
        "n_edges": graph.n_edges,
        "n_selected": circuit.n_edges,
        "n_nodes_selected": len(circuit.nodes()),
        "faithfulness": faith,
        "random_faithfulness": random_faith,
        "m_full": metrics.m_full,
        "m_empty": metrics.m_empty,
        "m_circuit": metrics.m_circuits[0],
        "n_examples": edge_scores.n_examples,
        "n_eval_examples": metrics.n_examples,
    }
    if args.sweep:
        sweep = faithfulness_sweep(model, graph, eval_batches, edge_scores.scores, faith_config)
        result.update(cpr=sweep.cpr, cmd=sweep.cmd)
        result["sweep"] = {"n_edges": sweep.n_edges, "faithfulness": sweep.faithfulness}
    if args.out is not None:
        metadata = {k: v for k, v in result.items() if k != "sweep"}
        metadata["sign"] = SIGN_CONVENTION
        scored = ScoredGraph(
            graph=graph,
            scores=edge_scores.scores,
            circuit=circuit,
            metadata=metadata,
            d_model=model.info.d_model,
        )
        result["out"] = str(save_graph(args.out, scored))
    result["seconds"] = round(time.perf_counter() - started, 2)
    if args.json:
        print_json(result)
        return 0
    _print_summary(result)
    return 0


def _print_summary(result: dict) -> None:
    print(
        f"{result['model']} on {result['task']}: {result['method']}, {result['baseline']} "
        f"baseline, {result['n_examples']} examples"
    )
    print(f"  kept {result['n_selected']:,} of {result['n_edges']:,} edges")
    print(
        f"  faithfulness {result['faithfulness']:.3f} "
        f"(random circuit of the same size: {result['random_faithfulness']:.3f})"
    )
    print(
        f"  {result['metric']}: full {result['m_full']:.3f}, circuit {result['m_circuit']:.3f}, "
        f"empty {result['m_empty']:.3f}"
    )
    if "cpr" in result:
        print(f"  CPR {result['cpr']:.3f}  CMD {result['cmd']:.3f}")
    if "out" in result:
        print(f"  wrote {result['out']}")
