"""Find the bundled demo model's subject-verb agreement circuit with the library alone.

    python examples/discover_circuit.py [--out circuit.json]

This reproduces, step by step through ``import circuitviz as cv``, what the README's

    circuitviz discover --model demo --task sv-agreement --top-n 100 --out circuit.json --json

computes: EAP-IG scores on 64 training examples, the top 100 edges by |score| (dead ends removed),
and the circuit's faithfulness on 64 dev examples next to a random circuit of the same size. It
prints the same figures as JSON; the numbers match the command's exactly.
"""

from __future__ import annotations

import argparse
import json

import circuitviz as cv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="also write the circuit (.json, .graphml, ...)")
    args = parser.parse_args()

    config = cv.DiscoverConfig()  # the command's defaults: EAP-IG over inputs, top 100 edges
    model = cv.load_model("demo", device="cpu")
    graph = cv.graph_for(model)

    # 1. Score every edge on the training split.
    train = cv.task_data("sv-agreement", model, split="train", n=config.n_examples)
    scores = cv.attribute(model, graph, train.batches(config.batch_size), config.attribution)

    # 2. Keep the 100 strongest edges, then drop the ones on no input -> logits path.
    from circuitviz.graph.select import prune_dead_ends, random_circuit

    circuit = prune_dead_ends(cv.select(scores.scores, graph, config.selection))

    # 3. Faithfulness on held-out examples, and a random circuit of the same size for contrast.
    dev = cv.task_data("sv-agreement", model, split="dev", n=config.n_examples)
    ablation = cv.FaithfulnessConfig.from_attribution(config.attribution)
    batches = list(dev.batches(config.batch_size))
    faith = cv.faithfulness(model, graph, batches, circuit, ablation)
    contrast = random_circuit(graph, circuit.n_edges, seed=config.seed)
    random_faith = cv.faithfulness(model, graph, batches, contrast, ablation)

    if args.out:
        scored = cv.ScoredGraph(graph=graph, scores=scores.scores, circuit=circuit)
        if args.out.endswith((".graphml", ".gexf")):
            from circuitviz.graph.digraph import save_network

            save_network(args.out, scored)
        else:
            cv.save_graph(args.out, scored)
    top = scores.ranked(5)
    print(
        json.dumps(
            {
                "n_edges": graph.n_edges,
                "n_selected": circuit.n_edges,
                "faithfulness": faith,
                "random_faithfulness": random_faith,
                "strongest_edges": [[edge.name, edge.score] for edge in top],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
