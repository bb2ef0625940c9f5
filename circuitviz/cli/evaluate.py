"""``circuitviz evaluate``: a model's accuracy and mean logit difference on a task."""

from __future__ import annotations

import argparse

from circuitviz.cli.common import (
    UserError,
    add_model_args,
    load_model_from_args,
    message_of,
    print_json,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a task (accuracy, mean logit difference, task figures)",
        description="Score a model on held-out generated examples of a task, or on a JSONL file of "
        "your own pairs. accuracy = fraction where logit(answer) > logit(wrong answer) at the "
        "position before the answer; logit_diff = the mean of that difference.",
    )
    add_model_args(parser)
    parser.add_argument(
        "--task",
        required=True,
        help="sv-agreement, sv-disagreement, gender-pronoun, ioi, or a .jsonl file of pairs",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "dev", "test", "all"],
        help="which examples: a 10%% test split (default), dev, train, or all of a file",
    )
    parser.add_argument("-n", "--n-examples", type=int, default=512, help="examples (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="which examples are drawn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from circuitviz.tasks import evaluate_task

    if args.n_examples <= 0 or args.batch_size <= 0:
        raise UserError("--n-examples and --batch-size must be positive")
    model = load_model_from_args(args)
    try:
        result = evaluate_task(
            model,
            args.task,
            split=args.split,
            n=args.n_examples,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise UserError(message_of(exc)) from exc
    result = {"model": args.model, **result}
    if args.json:
        print_json(result)
        return 0
    print(f"{args.model} on {result['task']} ({result['split']}, {result['n_examples']} examples)")
    for key, value in result.items():
        if key in ("model", "task", "split"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<26} {shown}")
    return 0
