"""Tasks: clean/corrupted prompt pairs, the positions a metric reads, and the metrics.

Public API (import from here; names load on first use, so ``circuitviz.tasks.catalog`` and the
CLI's help never import torch):
    Example, TaskBatch, TaskData, TaskSpec, TaskScores, TASKS, get_task, split_of
    TaskInfo, CATALOG, task_info, task_names (the torch-free catalog)
    build_task_data, load_jsonl_examples, draw_examples
    logit_diff, logprob_diff, answer_loss, METRICS
    evaluate_task, score_task
    heldout_texts, filler_texts, lm_loss
    Instruction (SFT) tasks: SFTExample, SFTFormat, SFTBatch, SFTData, SFTFields, SFTSourceError,
        build_sft_data, load_sft_jsonl, load_hf_examples, tokenize_sft, task_kind, is_sft_batch,
        process_loss, outcome_logprob, sft_loss, extract_answer, same_answer,
        SFTEvalConfig, evaluate_sft, evaluate_sft_task, NoUsableExamples
    heldout_corpus, HeldoutCorpus (the held-out text for a model: real English or demo filler)
"""

from circuitviz._lazy import exports, lazy_namespace

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        (
            "base",
            (
                "METRICS",
                "Example",
                "TaskBatch",
                "TaskData",
                "TaskScores",
                "TaskSpec",
                "answer_loss",
                "logit_diff",
                "logprob_diff",
                "split_of",
                "NoUsableExamples",
            ),
        ),
        ("catalog", ("CATALOG", "TaskInfo", "task_info", "task_names", "task_kind")),
        ("data", ("build_task_data", "draw_examples", "load_jsonl_examples")),
        ("evaluate", ("evaluate_task", "score_task")),
        ("heldout", ("filler_texts", "heldout_texts", "lm_loss")),
        ("registry", ("TASKS", "get_task")),
        ("sft", ("SFTBatch", "SFTData", "SFTExample", "SFTFormat", "is_sft_batch")),
        (
            "sft_sources",
            ("SFTFields", "SFTSourceError", "build_sft_data", "load_hf_examples", "load_sft_jsonl"),
        ),
        ("sft_tokenize", ("tokenize_sft",)),
        ("sft_metrics", ("outcome_logprob", "process_loss", "sft_loss")),
        ("answers", ("extract_answer", "same_answer")),
        ("sft_evaluate", ("SFTEvalConfig", "evaluate_sft", "evaluate_sft_task")),
        ("corpus", ("HeldoutCorpus", "heldout_corpus")),
    ),
)
