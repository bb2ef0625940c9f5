"""``circuitviz evaluate``: a model's figures on a pair task or an instruction (SFT) task."""

from __future__ import annotations

import argparse
import sys

from circuitviz.cli.common import (
    UserError,
    add_model_args,
    finite_or_none,
    load_model_from_args,
    message_of,
    print_json,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a task (accuracy and logit difference; exact match for SFT tasks)",
        description="Score a model on held-out examples of a task. Pair tasks (sv-agreement, "
        "sv-disagreement, gender-pronoun, ioi, or a .jsonl file of your own pairs): accuracy = "
        "fraction where logit(answer) > logit(wrong answer) at the position before the answer; "
        "logit_diff = the mean of that difference. Instruction tasks (arithmetic, sft:FILE.jsonl, "
        "hf:DATASET[:CONFIG][:SPLIT]): response_loss = mean loss per response token; exact_match = "
        "fraction of greedy generated answers (text after '#### ', else the last number, else the "
        "whole response) equal to the reference answer. An evaluation with no usable example "
        "exits with status 1.",
    )
    add_model_args(parser)
    parser.add_argument(
        "--task",
        required=True,
        help="sv-agreement, sv-disagreement, gender-pronoun, ioi, arithmetic, a .jsonl file of "
        "pairs, sft:FILE.jsonl (prompt/response/answer) or hf:DATASET[:CONFIG][:SPLIT]",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "dev", "test", "all"],
        help="which examples: train/dev/test are 80/10/10 by a hash of the prompt; 'all' scores "
        "every example of a file or dataset (default test)",
    )
    parser.add_argument(
        "-n", "--n-examples", type=int, default=None, help="examples (default 512; SFT 256)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which examples are drawn")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (SFT 16)")
    parser.add_argument(
        "--runs-dir", default=None, metavar="DIR", help="where run: models are looked up first"
    )
    parser.add_argument(
        "--heldout",
        type=int,
        default=None,
        metavar="N",
        help="also the language-model loss on N held-out texts no task uses (real English for "
        "real models, the demo filler for the demo model): keys heldout_loss, heldout_text",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sft = parser.add_argument_group("instruction (SFT) tasks")
    sft.add_argument(
        "--max-new-tokens", type=int, default=128, help="bound on each generated response (128)"
    )
    sft.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="tokens of prompt + response; longer examples are truncated and counted (512)",
    )
    sft.add_argument(
        "--no-chat-template",
        action="store_true",
        help="feed prompts as plain text even when the tokenizer has a chat template",
    )
    sft.add_argument("--system-prompt", default=None, help="a system turn (chat template only)")
    sft.add_argument(
        "--no-generate", action="store_true", help="response loss only, no exact match"
    )
    for role in ("prompt", "response", "answer"):
        sft.add_argument(
            f"--{role}-field", default=None, metavar="COLUMN", help=f"hf: column of the {role}"
        )
    parser.set_defaults(func=run)


def _pair_result(args, model) -> dict:
    from circuitviz.tasks import evaluate_task

    return evaluate_task(
        model,
        args.task,
        split=args.split,
        n=512 if args.n_examples is None else args.n_examples,
        seed=args.seed,
        batch_size=args.batch_size or 64,
    )


def _sft_result(args, model) -> dict:
    from circuitviz.tasks import SFTEvalConfig, SFTFields, SFTFormat, evaluate_sft_task

    fmt = SFTFormat(
        chat_template=not args.no_chat_template,
        system_prompt=args.system_prompt,
        max_length=args.max_length,
    ).within_context(model.info.n_ctx)
    fields = SFTFields(
        prompt=args.prompt_field, response=args.response_field, answer=args.answer_field
    )
    config = SFTEvalConfig(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size or 16,
        exact_match=not args.no_generate,
    )
    return evaluate_sft_task(
        model,
        args.task,
        split=args.split,
        n=256 if args.n_examples is None else args.n_examples,
        seed=args.seed,
        fmt=fmt,
        fields=fields,
        config=config,
    )


def run(args: argparse.Namespace) -> int:
    from circuitviz.tasks import NoUsableExamples, task_kind

    for name in ("n_examples", "batch_size", "max_new_tokens", "max_length"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    try:
        kind = task_kind(args.task)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if args.heldout is not None and args.heldout < 1:
        raise UserError(f"--heldout must be >= 1, got {args.heldout}")
    model = load_model_from_args(args)
    try:
        result = _sft_result(args, model) if kind == "sft" else _pair_result(args, model)
        if args.heldout is not None:
            result.update(_heldout(model, args.heldout, args.seed))
    except NoUsableExamples as exc:
        print(f"circuitviz evaluate: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise UserError(message_of(exc)) from exc
    result = finite_or_none({"model": args.model, **result})
    if args.json:
        print_json(result)
        return 0
    _print_text(args, result)
    return 0


def _heldout(model, n: int, seed: int) -> dict:
    """General-text loss on held-out text no task uses (real English for real models)."""
    from circuitviz.tasks import heldout_corpus, lm_loss
    from circuitviz.tuning.discovery import hook_flags

    corpus = heldout_corpus(model.tokenizer, n, seed=seed)
    with hook_flags(model.bridge, False):
        loss = lm_loss(model, list(corpus.texts), batch_size=16)
    return {"heldout_loss": loss, "heldout_text": corpus.name, "n_heldout": len(corpus.texts)}


def _print_text(args, result: dict) -> None:
    print(f"{args.model} on {result['task']} ({result['split']}, {result['n_examples']} examples)")
    if args.task.endswith(".jsonl") and result["split"] != "all":
        print(f"  (the {result['split']} split of the file: --split all scores every pair)")
    for key, value in result.items():
        if key in ("model", "task", "split", "samples", "fields"):
            continue
        shown = "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<26} {shown}")
    for sample in result.get("samples", []):
        mark = "right" if sample["correct"] else "wrong"
        print(f"  [{mark}] answer {sample['extracted']!r}, reference {sample['reference']!r}")
