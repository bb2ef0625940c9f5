"""Where SFT examples come from: a JSONL file, a Hugging Face dataset, or a built-in generator.

Task specs (``task_kind`` in ``circuitviz.tasks.catalog`` says which kind a spec is):

* ``sft:PATH``: a JSONL file, one object per line with ``prompt`` and ``response`` (strings) and
  optional ``answer`` (string) and ``tags`` (list of strings). A malformed line is reported with the
  file, the line number and the field; a line over ``MAX_LINE_BYTES`` or a file over
  ``MAX_FILE_BYTES`` is refused with the limit in the message.
* ``hf:NAME[:CONFIG][:SPLIT]``: a dataset through the ``datasets`` library. NAME is a hub id
  (``openai/gsm8k``; needs the network) or a local path, which works offline: a directory written
  by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a ``.parquet``, ``.json``,
  ``.jsonl`` or ``.csv`` file. A local path takes no CONFIG: ``hf:PATH[:SPLIT]``. SPLIT defaults to
  ``train``. ``SFTFields`` maps columns to prompt/response/answer; by default the first present of
  ``PROMPT_COLUMNS`` and ``RESPONSE_COLUMNS`` are used, and ``answer`` when it is another column.
* a built-in SFT task name (``arithmetic``), generated from a seed.

Every source then splits the same way as pair tasks: train/dev/test (80/10/10) by a stable hash of
the prompt (``split_of``), or ``all``; ``n`` caps the examples drawn, by a seeded sample.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitviz.tasks.base import SPLITS, split_of
from circuitviz.tasks.sft import SFTData, SFTExample, SFTFormat

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024 * 1024
PROMPT_COLUMNS = ("prompt", "question", "instruction", "query", "input")
RESPONSE_COLUMNS = ("response", "completion", "output", "answer", "solution")
LOCAL_SUFFIXES = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


class SFTSourceError(ValueError):
    """An SFT source could not be read; the message names the source and the fix."""


@dataclass(frozen=True, kw_only=True)
class SFTFields:
    """Which columns of a dataset hold the prompt, the response and (optionally) the answer."""

    prompt: str | None = None
    response: str | None = None
    answer: str | None = None


# -- JSONL ------------------------------------------------------------------------------------------


def _line_error(path: Path, lineno: int, message: str) -> SFTSourceError:
    return SFTSourceError(f"{path}, line {lineno}: {message}")


def _parse_line(path: Path, lineno: int, line: bytes) -> SFTExample:
    if len(line) > MAX_LINE_BYTES:
        raise _line_error(
            path, lineno, f"line is {len(line):,} bytes, over the limit of {MAX_LINE_BYTES:,}"
        )
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _line_error(path, lineno, f"not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise _line_error(path, lineno, f"expected a JSON object, got {type(record).__name__}")
    for name in ("prompt", "response"):
        if name not in record:
            raise _line_error(path, lineno, f"missing field {name!r} (needs 'prompt', 'response')")
        if not isinstance(record[name], str) or not record[name].strip():
            raise _line_error(path, lineno, f"field {name!r} must be a non-empty string")
    answer = record.get("answer")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise _line_error(path, lineno, "field 'answer' must be a non-empty string when present")
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise _line_error(path, lineno, "field 'tags' must be a list of strings")
    return SFTExample(
        prompt=record["prompt"], response=record["response"], answer=answer, tags=tuple(tags)
    )


def load_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """Every example of a JSONL file (see the module docstring); blank lines are skipped."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SFTSourceError(
            f"SFT file {path} is a directory; pass a .jsonl file (a dataset saved with "
            "save_to_disk is read as hf:DIR)"
        )
    if not path.is_file():
        raise SFTSourceError(f"SFT file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SFTSourceError(
            f"{path} is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for a JSONL task "
            "file; split it, or use an hf: dataset (read through the datasets library)"
        )
    examples = []
    with path.open("rb") as lines:
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                examples.append(_parse_line(path, lineno, line))
    if not examples:
        raise SFTSourceError(f"SFT file {path} has no examples")
    return examples


# -- Hugging Face datasets ---------------------------------------------------------------------------


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG][:SPLIT]`` -> (name, config, split); a local path takes no config."""
    parts = spec.removeprefix("hf:").split(":")
    name, rest = parts[0], parts[1:]
    if not name:
        raise SFTSourceError(
            f"{spec!r}: expected hf:NAME[:CONFIG][:SPLIT] (e.g. hf:openai/gsm8k:main)"
        )
    if not Path(name).expanduser().exists() and _names_a_file(name):
        raise SFTSourceError(
            f"{spec!r}: no such file or directory {name!r} (a local dataset; a hub id such as "
            "openai/gsm8k has no file suffix and no leading ./ or /)"
        )
    if Path(name).expanduser().exists():
        if len(rest) > 1:
            raise SFTSourceError(f"{spec!r}: a local dataset takes hf:PATH[:SPLIT], no config")
        return name, None, rest[0] if rest and rest[0] else "train"
    if len(rest) > 2:
        raise SFTSourceError(f"{spec!r}: expected hf:NAME[:CONFIG][:SPLIT], got {len(rest)} parts")
    config = rest[0] or None if rest else None
    split = rest[1] if len(rest) > 1 and rest[1] else "train"
    return name, config, split


def _names_a_file(name: str) -> bool:
    """Whether ``name`` can only be a local path: a data file's suffix, or a path's start."""
    return name.startswith((".", "/", "~")) or Path(name).suffix.lower() in LOCAL_SUFFIXES


def _load_local(path: Path, split: str):
    import datasets

    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path))
    elif path.suffix.lower() in LOCAL_SUFFIXES:
        builder = LOCAL_SUFFIXES[path.suffix.lower()]
        loaded = datasets.load_dataset(builder, data_files={"train": str(path)})
    else:
        raise SFTSourceError(
            f"{path}: not a dataset directory (save_to_disk) or a {', '.join(LOCAL_SUFFIXES)} file"
        )
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise SFTSourceError(
                f"{path} has splits {sorted(loaded)}, not {split!r}: use hf:{path}:SPLIT"
            )
        return loaded[split]
    return loaded


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found in milliseconds (the datasets library otherwise retries
    for half a minute before failing), or None if it may be reachable."""
    from circuitviz.hub import hub_offline, hub_unreachable

    if hub_offline("HF_DATASETS_OFFLINE"):
        return None  # offline mode: the datasets library fails at once, or finds its cached copy
    reason = hub_unreachable()
    if reason is None:
        return None
    return f"no network ({reason}; with HF_DATASETS_OFFLINE=1 a copy in the datasets cache is used)"


def _load_hub(name: str, config: str | None, split: str):
    import datasets

    reason = _hub_unreachable()
    try:
        if reason is not None:
            raise ConnectionError(reason)
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the hub raises many types offline
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SFTSourceError(
            f"could not load dataset {name!r} (config {config!r}, split {split!r}) from the Hugging "
            f"Face hub: {reason}. Offline, save it where the network allows "
            "(datasets.load_dataset(...).save_to_disk(DIR)) and pass hf:DIR, or a .parquet/.jsonl file"
        ) from None


def _column(
    columns: list[str], wanted: str | None, defaults: tuple[str, ...], role: str, spec: str
):
    if wanted is not None:
        if wanted not in columns:
            raise SFTSourceError(
                f"{spec}: no column {wanted!r} for the {role}; columns are {columns}"
            )
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise SFTSourceError(
        f"{spec}: none of {list(defaults)} is a column (columns are {columns}); name the {role} "
        f"column with the {role}-field option"
    )


def resolve_fields(columns: list[str], fields: SFTFields, spec: str) -> dict[str, str | None]:
    """The columns used for prompt, response and answer (see ``SFTFields``)."""
    prompt = _column(columns, fields.prompt, PROMPT_COLUMNS, "prompt", spec)
    response = _column(
        columns,
        fields.response,
        tuple(c for c in RESPONSE_COLUMNS if c != prompt),
        "response",
        spec,
    )
    answer = fields.answer
    if answer is not None and answer not in columns:
        raise SFTSourceError(f"{spec}: no column {answer!r} for the answer; columns are {columns}")
    if answer is None and "answer" in columns and "answer" not in (prompt, response):
        answer = "answer"
    return {"prompt": prompt, "response": response, "answer": answer}


def load_hf_examples(spec: str, fields: SFTFields | None = None) -> tuple[list[SFTExample], dict]:
    """Every row of an ``hf:`` dataset as examples, and the column mapping used."""
    name, config, split = parse_hf_spec(spec)
    path = Path(name).expanduser()
    dataset = _load_local(path, split) if path.exists() else _load_hub(name, config, split)
    mapping = resolve_fields(list(dataset.column_names), fields or SFTFields(), spec)
    columns = [column for column in mapping.values() if column is not None]
    rows = dataset.select_columns(columns).to_dict()
    examples = []
    for i in range(len(dataset)):
        values = {role: None if col is None else rows[col][i] for role, col in mapping.items()}
        for role in ("prompt", "response"):
            if not isinstance(values[role], str) or not values[role].strip():
                raise SFTSourceError(
                    f"{spec}, row {i}: column {mapping[role]!r} ({role}) must be a non-empty "
                    f"string, got {values[role]!r:.80}"
                )
        answer = values["answer"]
        answer = str(answer).strip() if answer is not None and str(answer).strip() else None
        examples.append(
            SFTExample(prompt=values["prompt"], response=values["response"], answer=answer)
        )
    if not examples:
        raise SFTSourceError(f"{spec}: the dataset has no rows")
    return examples, mapping


# -- built-in generators and the common front door ----------------------------------------------------


def _generators() -> dict[str, Callable[[random.Random], SFTExample]]:
    from circuitviz.tasks.arithmetic import generate_problem

    return {"arithmetic": generate_problem}


def draw_sft_examples(task: str, *, split: str, n: int, seed: int) -> list[SFTExample]:
    """``n`` distinct examples of a built-in SFT task whose prompts hash into ``split``."""
    generate = _generators()[task]
    rng = random.Random(f"{task}:{split}:{seed}")
    seen: set[str] = set()
    examples: list[SFTExample] = []
    for _ in range(1000 + 200 * n):
        if len(examples) == n:
            break
        example = generate(rng)
        if example.prompt in seen or (split != "all" and split_of(example.prompt) != split):
            continue
        seen.add(example.prompt)
        examples.append(example)
    if len(examples) < n:
        raise SFTSourceError(f"task {task}: only {len(examples)} distinct {split} examples of {n}")
    return examples


def load_sft_examples(task: str, fields: SFTFields | None = None) -> tuple[list[SFTExample], dict]:
    """All examples of a file or dataset spec (``sft:PATH`` or ``hf:...``) and its column mapping."""
    if task.startswith("sft:"):
        return load_sft_jsonl(task.removeprefix("sft:")), {}
    if task.startswith("hf:"):
        return load_hf_examples(task, fields)
    raise SFTSourceError(f"not an SFT file or dataset spec: {task!r} (use sft:PATH or hf:NAME)")


def _select(
    examples: list[SFTExample], *, split: str, n: int | None, seed: int
) -> list[SFTExample]:
    if split != "all":
        examples = [e for e in examples if split_of(e.prompt) == split]
    if n is not None and len(examples) > n:
        keep = sorted(random.Random(f"sft:{split}:{seed}").sample(range(len(examples)), n))
        examples = [examples[i] for i in keep]
    return examples


def build_sft_data(
    task: str,
    tokenizer: Any,
    *,
    split: str = "dev",
    n: int | None = 512,
    seed: int = 0,
    fmt: SFTFormat | None = None,
    fields: SFTFields | None = None,
    device: Any = "cpu",
) -> SFTData:
    """The examples of an SFT task spec in ``split`` (at most ``n``), tokenized with ``fmt``.

    ``task`` is ``sft:PATH``, ``hf:NAME[:CONFIG][:SPLIT]`` or a built-in SFT task name. Raises
    SFTSourceError (a ValueError) naming the problem.
    """
    from circuitviz.tasks.sft_tokenize import tokenize_sft

    if split not in SPLITS:
        raise SFTSourceError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and n < 1:
        raise SFTSourceError(f"n must be >= 1 or None, got {n}")
    if task in _generators():
        examples, mapping = draw_sft_examples(task, split=split, n=n or 512, seed=seed), {}
    else:
        everything, mapping = load_sft_examples(task, fields)
        examples = _select(everything, split=split, n=n, seed=seed)
    data = tokenize_sft(
        tokenizer, examples, fmt or SFTFormat(), task=task, split=split, device=device
    )
    from dataclasses import replace

    return replace(data, source_fields=mapping)
