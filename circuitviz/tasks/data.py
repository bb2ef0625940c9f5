"""From a task name (or a user's JSONL file) and a tokenizer to padded, checked TaskData.

1. Draw examples: a registered task's generator runs on `random.Random(f"{task}:{split}:{seed}")`
   and keeps the examples whose prompt hashes into `split` (see `split_of`), without duplicates,
   until it has `n`. A .jsonl path is read line by line instead.
2. Tokenize with the model's own tokenizer. The answer (and wrong answer) must add exactly one token
   after the prompt: `tokens(clean + answer) == tokens(clean) + [answer_id]`; otherwise the example is
   dropped and counted (`n_dropped_multitoken`).
3. Clean and corrupted prompts must have the same number of tokens; pairs that do not are excluded
   from the batches and counted (`n_length_mismatch`, with the pairs kept in `TaskData.mismatched`).
4. Pad everything on the right into one TaskBatch; `TaskData.batches` slices it.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitviz.tasks.base import SPLITS, Example, TaskBatch, TaskData, split_of
from circuitviz.tasks.registry import get_task

logger = logging.getLogger(__name__)

REQUIRED_FIELDS: tuple[str, ...] = ("clean", "corrupt", "answer", "wrong")


def is_task_file(task: str | Path) -> bool:
    return str(task).endswith(".jsonl")


def _line_error(path: Path, lineno: int, message: str) -> ValueError:
    return ValueError(f"{path}, line {lineno}: {message}")


def _parse_line(path: Path, lineno: int, line: str) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise _line_error(path, lineno, f"not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise _line_error(path, lineno, f"expected a JSON object, got {type(record).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise _line_error(
                path, lineno, f"missing field {name!r} (needs {list(REQUIRED_FIELDS)})"
            )
        if not isinstance(record[name], str) or not record[name]:
            raise _line_error(path, lineno, f"field {name!r} must be a non-empty string")
    continuation = record.get("continuation", "")
    if not isinstance(continuation, str):
        raise _line_error(path, lineno, "field 'continuation' must be a string")
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _line_error(path, lineno, "field 'tags' must be a list of strings")
    try:
        return Example(
            clean=record["clean"],
            corrupt=record["corrupt"],
            answer=record["answer"],
            wrong=record["wrong"],
            continuation=continuation,
            tags=tuple(tags),
        )
    except ValueError as err:
        raise _line_error(path, lineno, str(err)) from None


MAX_LINE_BYTES = 1 << 20  # 1 MiB: a pair is a few sentences; a longer line is not a pair
MAX_FILE_BYTES = 256 << 20  # 256 MiB


def load_jsonl_examples(path: str | Path) -> list[Example]:
    """Read user pairs: one JSON object per line with clean, corrupt, answer, wrong (strings) and
    optional continuation (string) and tags (list of strings). Blank lines are skipped.

    Answers carry their leading space (" are"), as in the built-in tasks. A malformed line raises a
    ValueError naming the file, the line number and the field. A line may hold at most 1 MiB and a
    file 256 MiB (checked before anything is parsed, so a huge line fails at once).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"task file {path} is a directory; pass a .jsonl file of pairs")
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"task file {path} is {size / 2**20:.0f} MiB; pair files may hold at most "
            f"{MAX_FILE_BYTES >> 20} MiB (split it, or sample the pairs you need)"
        )
    examples = []
    with path.open("rb") as lines:
        for lineno, raw in enumerate(iter(lambda: lines.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise _line_error(
                    path, lineno, f"longer than {MAX_LINE_BYTES >> 20} MiB; one pair per line"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _line_error(
                    path, lineno, f"not UTF-8 text (byte {err.start + 1}); save the file as UTF-8"
                ) from None
            if line.strip():
                examples.append(_parse_line(path, lineno, line))
    if not examples:
        raise ValueError(f"task file {path} has no examples")
    return examples


def draw_examples(task: str, *, split: str, n: int, seed: int) -> list[Example]:
    """`n` distinct examples of a registered task whose prompts hash into `split`.

    Tasks that share an `original_task` (sv-disagreement and sv-agreement) draw the same prompts for
    the same seed, so a task and its original can be compared example by example.
    """
    spec = get_task(task)
    rng = random.Random(f"{spec.original_task or spec.name}:{split}:{seed}")
    seen: set[tuple[str, str]] = set()
    examples: list[Example] = []
    for _ in range(1000 + 100 * n):
        if len(examples) == n:
            break
        example = spec.generate(rng)
        key = (example.clean, example.answer)
        if key in seen or (split != "all" and split_of(example.clean) != split):
            continue
        seen.add(key)
        examples.append(example)
    if len(examples) < n:
        logger.warning(
            "task %s split %s: only %d distinct examples of %d", task, split, len(examples), n
        )
    return examples


def _select_file_examples(
    examples: list[Example], *, split: str, n: int | None, seed: int
) -> list[Example]:
    if split != "all":
        examples = [e for e in examples if split_of(e.clean) == split]
    if n is not None and len(examples) > n:
        keep = sorted(random.Random(f"file:{split}:{seed}").sample(range(len(examples)), n))
        examples = [examples[i] for i in keep]
    return examples


@dataclass(frozen=True, kw_only=True)
class _Encoded:
    """Token lists of one example (before padding)."""

    clean: list[int]
    corrupt: list[int]
    answer_id: int
    wrong_id: int
    train: list[int]


def _single_added_token(prompt: list[int], full: list[int]) -> int | None:
    if len(full) == len(prompt) + 1 and full[: len(prompt)] == prompt:
        return full[-1]
    return None


def _mostly_unknown(ids: list[int], unk_id: int | None) -> bool:
    return unk_id is not None and 2 * sum(token == unk_id for token in ids) > len(ids)


def _encode(
    tokenizer: Any, examples: list[Example], max_length: int | None = None
) -> list[_Encoded | str]:
    """Token lists per example, or the reason it is left out: "multitoken", "identical" (answer
    and wrong answer are one token), "length" (clean and corrupted prompts differ in length),
    "same-prompt" (they tokenise identically), "unknown" (the prompt is mostly unknown tokens) or
    "too-long" (longer than ``max_length`` tokens)."""

    def ids(texts: list[str], special: bool = True) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=special)["input_ids"] if texts else []

    clean = ids([e.clean for e in examples])
    corrupt = ids([e.corrupt for e in examples])
    with_answer = ids([e.clean + e.answer for e in examples])
    with_wrong = ids([e.clean + e.wrong for e in examples])
    sentences = ids([e.sentence for e in examples])
    continuations = ids([e.continuation for e in examples], special=False)
    out: list[_Encoded | str] = []
    unk_id = getattr(tokenizer, "unk_token_id", None)
    for i in range(len(examples)):
        answer_id = _single_added_token(clean[i], with_answer[i])
        wrong_id = _single_added_token(clean[i], with_wrong[i])
        if _mostly_unknown(clean[i], unk_id) or _mostly_unknown(corrupt[i], unk_id):
            out.append("unknown")
        elif clean[i] == corrupt[i]:
            out.append("same-prompt")
        elif answer_id is None or wrong_id is None:
            out.append("multitoken")
        elif answer_id == wrong_id:
            out.append("identical")
        elif len(clean[i]) != len(corrupt[i]):
            out.append("length")
        else:
            prefix = clean[i] + [answer_id]
            full = sentences[i]
            train = full if full[: len(prefix)] == prefix else prefix + continuations[i]
            if max_length is not None and len(train) > max_length:
                out.append("too-long")
                continue
            out.append(
                _Encoded(
                    clean=clean[i],
                    corrupt=corrupt[i],
                    answer_id=answer_id,
                    wrong_id=wrong_id,
                    train=train,
                )
            )
    return out


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: ids [batch, pos] and mask [batch, pos]."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def build_batch(encoded: list[_Encoded], pad_id: int) -> TaskBatch:
    clean_ids, attention_mask = _pad([e.clean for e in encoded], pad_id)
    corrupt_ids, _ = _pad([e.corrupt for e in encoded], pad_id)
    train_ids, train_mask = _pad([e.train for e in encoded], pad_id)
    target_pos = torch.tensor([len(e.clean) - 1 for e in encoded], dtype=torch.long)
    return TaskBatch(
        clean_ids=clean_ids,
        corrupt_ids=corrupt_ids,
        attention_mask=attention_mask,
        target_pos=target_pos,
        answer_ids=torch.tensor([e.answer_id for e in encoded], dtype=torch.long),
        wrong_ids=torch.tensor([e.wrong_id for e in encoded], dtype=torch.long),
        train_ids=train_ids,
        train_mask=train_mask,
        answer_pos_in_train=target_pos + 1,
    )


def build_task_data(
    task_name_or_path: str | Path,
    tokenizer: Any,
    *,
    split: str = "dev",
    n: int | None = 512,
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_length: int | None = None,
) -> TaskData:
    """Examples of a registered task (or a .jsonl file of pairs), tokenized and checked.

    `split` is "train", "dev", "test" (80/10/10 by a stable hash of the clean prompt; disjoint, and
    the same for every seed) or "all". `n` caps the number of examples drawn (None: a whole file).
    Positions and token ids come from `tokenizer`, so the same call serves the demo model and real
    models alike. Examples longer than `max_length` tokens (the model's context) are left out and
    counted (`n_too_long`). Pairs whose clean and corrupted prompts tokenise identically, or whose
    prompts are mostly unknown tokens, measure nothing: they are an error naming how many.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}")
    if is_task_file(task_name_or_path):
        name = str(task_name_or_path)
        examples = _select_file_examples(load_jsonl_examples(name), split=split, n=n, seed=seed)
    else:
        name = str(task_name_or_path)
        examples = draw_examples(name, split=split, n=512 if n is None else n, seed=seed)
    return encode_examples(
        name, examples, tokenizer, split=split, device=device, max_length=max_length
    )


def encode_examples(
    name: str,
    examples: list[Example],
    tokenizer: Any,
    *,
    split: str = "all",
    device: torch.device | str = "cpu",
    max_length: int | None = None,
) -> TaskData:
    """Tokenize and check ``examples`` (steps 2-4 of the module docstring) as task ``name``."""
    encoded = _encode(tokenizer, examples, max_length)
    kept = [(ex, enc) for ex, enc in zip(examples, encoded) if isinstance(enc, _Encoded)]
    reasons = [enc for enc in encoded if isinstance(enc, str)]
    _refuse_unmeasurable(name, examples, encoded)
    n_length_mismatch = reasons.count("length")
    if reasons:
        logger.warning(
            "task %s: left out %d multi-token, %d identical-token, %d length-mismatched and %d "
            "too-long pairs",
            name,
            reasons.count("multitoken"),
            reasons.count("identical"),
            n_length_mismatch,
            reasons.count("too-long"),
        )
    batch = build_batch([enc for _, enc in kept], pad_token_id(tokenizer)).to(device)
    return TaskData(
        task=name,
        split=split,
        examples=tuple(ex for ex, _ in kept),
        batch=batch,
        n_dropped_multitoken=reasons.count("multitoken"),
        n_dropped_identical=reasons.count("identical"),
        n_length_mismatch=n_length_mismatch,
        n_too_long=reasons.count("too-long"),
        mismatched=tuple(ex for ex, enc in zip(examples, encoded) if enc == "length"),
    )


def _refuse_unmeasurable(name: str, examples: list[Example], encoded: list) -> None:
    """A pair whose clean and corrupted prompts are the same tokens (or mostly unknown tokens)
    would score as if the model knew nothing: refuse the data instead of reporting a number."""
    unknown = [ex for ex, enc in zip(examples, encoded) if enc == "unknown"]
    same = [ex for ex, enc in zip(examples, encoded) if enc == "same-prompt"]
    if not unknown and not same:
        return
    first = (unknown or same)[0]
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} have prompts that are mostly unknown tokens")
    if same:
        parts.append(f"{len(same)} have clean and corrupted prompts that tokenise identically")
    raise ValueError(
        f"task {name}: of {len(examples)} pairs, {' and '.join(parts)} for this model's tokenizer "
        f"(e.g. {first.clean!r} / {first.corrupt!r}); such pairs measure nothing. Use words the "
        "model knows (a model with a byte-level tokenizer such as smollm2-135m reads any text), "
        "or remove those pairs"
    )
