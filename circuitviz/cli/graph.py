"""``circuitviz graph``: the computational graph of a model (node and edge counts)."""

from __future__ import annotations

import argparse

from circuitviz.cli.common import UserError, add_model_args, load_model_from_args, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="count the nodes and edges of a model's computational graph",
        description="Build the EAP-IG/MIB computational graph of a model: nodes input, a{L}.h{H} "
        "(read through its q, k and v inputs; k/v per key-value group), m{L} and logits; an edge "
        "joins a writer to every later reader. --paper-graph drops input and logits as in the "
        "circuit-tuning paper.",
    )
    add_model_args(parser)
    parser.add_argument(
        "--paper-graph", action="store_true", help="the circuit-tuning paper's graph"
    )
    parser.add_argument(
        "--mlp-groups",
        type=int,
        default=None,
        metavar="G",
        help="split every MLP into G groups of neurons, each its own node (m{L}.g{j})",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuitviz.graph.topology import graph_for

    model = load_model_from_args(args)
    try:
        graph = graph_for(model.info, paper=args.paper_graph, mlp_groups=args.mlp_groups)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    result = {"model": args.model, "family": model.info.family, **graph.describe()}
    if args.json:
        print_json(result)
        return 0
    convention = "paper (no input/logits)" if graph.paper else "EAP-IG"
    print(f"{args.model} ({model.info.family}), {convention} graph")
    for key in ("n_layers", "n_heads", "n_kv_heads", "n_src", "n_dst", "n_nodes", "n_edges"):
        print(f"  {key:<11} {result[key]:,}")
    return 0
