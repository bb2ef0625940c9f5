"""``circuitviz discover``: score every edge on a task, keep a circuit, measure its faithfulness.

The flags are derived from ``DiscoverConfig`` (``circuitviz.attribution.config``); the work is
``circuitviz.attribution.discover.discover``, the same function the library exposes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from circuitviz.cli.common import (
    UserError,
    add_model_args,
    check_output_file,
    load_model_from_args,
    print_json,
)

OUT_SUFFIXES = (".json", ".safetensors", ".graphml", ".gexf")


def register(subparsers) -> None:
    from circuitviz.attribution.config import METHOD_NAMES, DiscoverConfig
    from circuitviz.cli.flags import add_config_flags

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
    parser.add_argument(
        "--task",
        default="sv-agreement",
        help="a task name, a .jsonl file of pairs, sft:FILE.jsonl or hf:DATASET[:CONFIG][:SPLIT] "
        "(instruction tasks score with --metric process or outcome and the mean baseline by "
        "default)",
    )
    add_config_flags(
        parser,
        DiscoverConfig,
        DiscoverConfig(),
        groups={f"attribution.{name}": "attribution" for name in _ATTRIBUTION_FIELDS}
        | {f"selection.{name}": "selection" for name in ("rule", "top_n", "threshold")},
    )
    # Earlier versions called the attribution method --method; it still works.
    parser.add_argument(
        "--method",
        dest="legacy_method",
        default=None,
        choices=(*METHOD_NAMES, "eap-ig"),
        help=argparse.SUPPRESS,
    )
    # Pruning dead ends is the default now; --prune is still accepted.
    parser.add_argument("--prune", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the circuit: .json (EAP-IG/MIB layout), .safetensors (compact), or .graphml / "
        ".gexf (a network for Gephi, Cytoscape or networkx)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


_ATTRIBUTION_FIELDS = ("method", "baseline", "positions", "metric", "ig_steps")


THRESHOLD_AND_TOP_N = (
    "--top-n and --threshold choose the circuit two ways (the N largest |scores|, or every edge "
    "with |score| >= T), and one would be ignored: give one of them"
)


def build_config(args: argparse.Namespace):
    """A DiscoverConfig from the flags; ``--threshold`` alone implies ``--selection threshold``."""
    from circuitviz.attribution.config import DiscoverConfig
    from circuitviz.cli.flags import build_config as build
    from circuitviz.cli.flags import given_values

    if getattr(args, "legacy_method", None) is not None:
        if getattr(args, "attribution.method", None) is not None:
            raise UserError("--method is the old name of --attribution: give one of them")
        setattr(args, "attribution.method", args.legacy_method)
    given = given_values(args, DiscoverConfig)
    selection = given.get("selection", {})
    if "threshold" in selection and selection.setdefault("rule", "threshold") != "threshold":
        raise UserError(
            f"--threshold keeps edges by |score| and cannot be combined with --selection "
            f"{selection['rule']}; drop one of them"
        )
    if selection.get("rule") == "threshold" and "top_n" in selection:
        raise UserError(THRESHOLD_AND_TOP_N)
    try:
        return build(
            DiscoverConfig, DiscoverConfig(), *DiscoverConfig.defaults_for(args.task), given
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from circuitviz.attribution.discover import circuit_metadata, discover
    from circuitviz.graph.io import ScoredGraph, save_graph

    config = build_config(args)
    if args.out is not None:
        check_output_file(args.out, OUT_SUFFIXES, flag="--out")
    started = time.perf_counter()
    model = load_model_from_args(args)
    try:
        found = discover(model, args.task, config)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise UserError(str(exc)) from exc
    result = {"model": args.model, "task": args.task, **found.describe()}
    if found.sweep is not None:
        result["sweep"] = {"n_edges": found.sweep.n_edges, "faithfulness": found.sweep.faithfulness}
    if args.out is not None:
        scored = ScoredGraph(
            graph=found.graph,
            scores=found.scores.scores,
            circuit=found.circuit,
            metadata=circuit_metadata(found, model=args.model, task=args.task),
            d_model=model.info.d_model,
        )
        if args.out.suffix.lower() in (".graphml", ".gexf"):
            from circuitviz.graph.digraph import save_network

            result["out"] = str(save_network(args.out, scored))
        else:
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
