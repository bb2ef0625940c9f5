"""Instruction (SFT) tasks: tokenization (chat template, prompt masking, truncation counts), the
JSONL and Hugging Face ``datasets`` sources, splits, the answer extractor, and the built-in
arithmetic workload."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from circuitviz.tasks import (
    SFTExample,
    SFTFields,
    SFTFormat,
    SFTSourceError,
    build_sft_data,
    extract_answer,
    same_answer,
    task_kind,
    tokenize_sft,
)
from circuitviz.tasks.answers import normalize_answer
from circuitviz.tasks.catalog import CATALOG
from circuitviz.tasks.sft import IGNORE_INDEX
from circuitviz.tasks.sft_sources import load_sft_jsonl, parse_hf_spec


@pytest.fixture(scope="module")
def tokenizer():
    from circuitviz.models.cache import fallback_tokenizer

    return fallback_tokenizer()  # the demo model's word-level English tokenizer


@pytest.fixture(scope="module")
def chat_tokenizer():
    """The demo tokenizer with three special tokens and a minimal chat template."""
    from circuitviz.models.cache import fallback_tokenizer

    tok = fallback_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|bot|>", "<|end|>"]})
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} <|end|>"
        "{% else %}<|bot|> {{ m['content'] }} <|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|bot|>{% endif %}"
    )
    return tok


def _words(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


EXAMPLES = [
    SFTExample(prompt="the keys to the cabinet", response="are on the table #### four"),
    SFTExample(prompt="the dog", response="runs", answer="runs"),
    SFTExample(prompt="where is the cat", response="the cat is near the door"),
]


# --- tokenization ---------------------------------------------------------------------------------


def test_labels_are_masked_on_the_prompt_and_padding(tokenizer):
    data = tokenize_sft(tokenizer, EXAMPLES, SFTFormat(), task="t", split="all")
    batch = data.batch
    assert not data.chat_template
    for row, example in enumerate(EXAMPLES):
        prompt = tokenizer(example.prompt)["input_ids"]
        response = _words(tokenizer, example.response) + [tokenizer.eos_token_id]
        n = len(prompt) + len(response)
        assert batch.input_ids[row, :n].tolist() == prompt + response
        assert int(batch.prompt_len[row]) == len(prompt)
        assert batch.labels[row, : len(prompt)].eq(IGNORE_INDEX).all()
        assert batch.labels[row, len(prompt) : n].tolist() == response
        assert batch.labels[row, n:].eq(IGNORE_INDEX).all()
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
    # The answer's tokens: "four" after ####, "runs" given as answer, none for the third.
    answers = [tokenizer.decode(batch.input_ids[r][batch.answer_mask[r]]) for r in range(3)]
    assert answers == ["four", "runs", ""]
    assert data.n_with_answer == 2 and data.n_answer_not_located == 0


def test_the_chat_template_wraps_the_prompt_and_ends_the_response(chat_tokenizer):
    data = tokenize_sft(chat_tokenizer, EXAMPLES[:1], SFTFormat(), task="t", split="all")
    row = data.batch.input_ids[0]
    n_prompt = int(data.batch.prompt_len[0])
    assert data.chat_template
    assert (
        chat_tokenizer.decode(row[:n_prompt]) == "<|user|> the keys to the cabinet <|end|> <|bot|>"
    )
    end = chat_tokenizer.convert_tokens_to_ids("<|end|>")
    trained = data.batch.labels[0][data.batch.labels[0] != IGNORE_INDEX].tolist()
    assert trained[-1] == end  # the model learns to close its turn
    assert end in data.stop_ids and chat_tokenizer.eos_token_id in data.stop_ids
    plain = tokenize_sft(
        chat_tokenizer, EXAMPLES[:1], SFTFormat(chat_template=False), task="t", split="all"
    )
    assert not plain.chat_template
    assert chat_tokenizer.decode(plain.batch.input_ids[0][: int(plain.batch.prompt_len[0])]) == (
        "the keys to the cabinet"
    )


def test_long_examples_are_truncated_or_dropped_and_counted(tokenizer):
    long = SFTExample(prompt="the dog", response=" ".join(["the cat runs"] * 10) + " #### four")
    huge_prompt = SFTExample(prompt=" ".join(["the cat"] * 10), response="runs")
    examples = [EXAMPLES[1], long, huge_prompt]
    data = tokenize_sft(tokenizer, examples, SFTFormat(max_length=12), task="t", split="all")
    assert data.n_examples == 2 and data.n_truncated == 1 and data.n_dropped_too_long == 1
    assert int(data.batch.attention_mask.sum(1).max()) == 12
    assert data.n_answer_not_located == 1  # "four" was cut off with the rest of the response
    assert data.with_located_answers().n_examples == 1
    dropped = tokenize_sft(
        tokenizer, examples, SFTFormat(max_length=12, overflow="drop"), task="t", split="all"
    )
    assert dropped.n_examples == 1 and dropped.n_truncated == 0 and dropped.n_dropped_too_long == 2


def test_format_and_example_validation():
    with pytest.raises(ValueError, match="max_length"):
        SFTFormat(max_length=1)
    with pytest.raises(ValueError, match="overflow"):
        SFTFormat(overflow="wrap")
    with pytest.raises(ValueError, match="SFTExample.response"):
        SFTExample(prompt="a", response="  ")
    assert SFTExample(prompt="a", response="so #### 12 apples").reference_answer == "12 apples"
    assert SFTExample(prompt="a", response="b").reference_answer is None


def test_batches_select_rows_and_trim_padding(tokenizer):
    data = tokenize_sft(tokenizer, EXAMPLES, SFTFormat(), task="t", split="all")
    batch = data.batch.select([1])
    assert batch.input_ids.shape[1] == int(data.batch.attention_mask[1].sum())
    assert torch.equal(batch.clean_ids, batch.input_ids) and torch.equal(
        batch.train_ids, batch.input_ids
    )
    assert sum(len(b) for b in data.batches(2, shuffle=True, seed=3)) == 3


# --- sources ----------------------------------------------------------------------------------------


def _write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_source_and_its_errors(tmp_path, tokenizer, monkeypatch):
    good = _write_jsonl(
        tmp_path / "good.jsonl",
        [{"prompt": f"the dog {i}", "response": "runs", "answer": "runs"} for i in range(40)],
    )
    data = build_sft_data(f"sft:{good}", tokenizer, split="all", n=None)
    assert data.n_examples == 40 and data.n_with_answer == 40
    cases = [
        ('{"prompt": "a", "response": 3}', r"line 2: field 'response' must be a non-empty string"),
        ('{"prompt": "a"}', r"line 2: missing field 'response'"),
        ("not json", r"line 2: not valid JSON"),
        ('["a", "b"]', r"line 2: expected a JSON object"),
        ('{"prompt": "a", "response": "b", "answer": ""}', r"line 2: field 'answer'"),
        ('{"prompt": "a", "response": "b", "tags": "x"}', r"line 2: field 'tags'"),
    ]
    for line, message in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "a", "response": "b"}\n' + line + "\n")
        with pytest.raises(SFTSourceError, match=re.escape(str(bad)) + ", " + message):
            load_sft_jsonl(bad)
    with pytest.raises(SFTSourceError, match="does not exist"):
        load_sft_jsonl(tmp_path / "missing.jsonl")
    import circuitviz.tasks.sft_sources as sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 20)
    with pytest.raises(SFTSourceError, match=r"line 1: line is .* bytes, over the limit of 20"):
        load_sft_jsonl(good)
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 100)
    with pytest.raises(SFTSourceError, match=r"over the limit of 100 for a JSONL task file"):
        load_sft_jsonl(good)


def _gsm8k_like(n: int) -> dict[str, list[str]]:
    return {
        "question": [f"the dog has {i} cats" for i in range(n)],
        "answer": [f"the dog has cats #### {i}" for i in range(n)],
    }


def test_hf_source_reads_local_datasets_offline(tmp_path, tokenizer):
    import datasets

    rows = _gsm8k_like(30)
    saved = tmp_path / "gsm"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "test": datasets.Dataset.from_dict(_gsm8k_like(7)),
        }
    ).save_to_disk(str(saved))
    data = build_sft_data(f"hf:{saved}", tokenizer, split="all", n=None)
    # question -> prompt, answer -> response; the reference answer is the text after ####.
    assert data.n_examples == 30 and data.source_fields == {
        "prompt": "question",
        "response": "answer",
        "answer": None,
    }
    assert {ex.reference_answer for ex in data.examples} == {str(i) for i in range(30)}
    assert build_sft_data(f"hf:{saved}:test", tokenizer, split="all", n=None).n_examples == 7
    with pytest.raises(SFTSourceError, match=r"has splits \['test', 'train'\], not 'dev'"):
        build_sft_data(f"hf:{saved}:dev", tokenizer, split="all")

    table = datasets.Dataset.from_dict(
        {"q": rows["question"], "a": rows["answer"], "final": [str(i) for i in range(30)]}
    )
    parquet = tmp_path / "rows.parquet"
    table.to_parquet(str(parquet))
    fields = SFTFields(prompt="q", response="a", answer="final")
    data = build_sft_data(f"hf:{parquet}", tokenizer, split="all", n=None, fields=fields)
    assert [ex.answer for ex in data.examples] == [str(i) for i in range(30)]
    with pytest.raises(SFTSourceError, match=r"none of .*'prompt'.* is a column"):
        build_sft_data(f"hf:{parquet}", tokenizer, split="all")
    with pytest.raises(SFTSourceError, match=r"no column 'nope' for the response"):
        build_sft_data(f"hf:{parquet}", tokenizer, fields=SFTFields(prompt="q", response="nope"))

    jsonl = _write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "the dog", "response": "runs"}] * 3)
    assert build_sft_data(f"hf:{jsonl}", tokenizer, split="all", n=None).n_examples == 3


def test_hf_hub_name_fails_offline_with_one_line(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SFTSourceError) as info:
        build_sft_data("hf:openai/gsm8k:main", tokenizer)
    message = str(info.value)
    assert "\n" not in message
    assert "could not load dataset 'openai/gsm8k' (config 'main', split 'train')" in message
    assert "save_to_disk" in message
    # Without the offline switches and without a network, it fails at once (no half-minute retries).
    import socket

    def no_dns(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(SFTSourceError, match=r"no network \(huggingface.co does not resolve"):
        build_sft_data("hf:openai/gsm8k:main", tokenizer)


def test_hf_spec_parsing(tmp_path):
    assert parse_hf_spec("hf:openai/gsm8k") == ("openai/gsm8k", None, "train")
    assert parse_hf_spec("hf:openai/gsm8k:main") == ("openai/gsm8k", "main", "train")
    assert parse_hf_spec("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hf_spec(f"hf:{tmp_path}:test") == (str(tmp_path), None, "test")
    with pytest.raises(SFTSourceError, match="no config"):
        parse_hf_spec(f"hf:{tmp_path}:main:test")


def test_splits_are_disjoint_deterministic_and_capped(tmp_path, tokenizer):
    path = _write_jsonl(
        tmp_path / "many.jsonl",
        [{"prompt": f"the dog {i}", "response": "runs"} for i in range(300)],
    )
    prompts = {}
    for split in ("train", "dev", "test"):
        data = build_sft_data(f"sft:{path}", tokenizer, split=split, n=None)
        prompts[split] = {ex.prompt for ex in data.examples}
    assert sum(len(p) for p in prompts.values()) == 300
    assert not (prompts["train"] & prompts["dev"]) and not (prompts["dev"] & prompts["test"])
    a = build_sft_data(f"sft:{path}", tokenizer, split="train", n=10, seed=1)
    b = build_sft_data(f"sft:{path}", tokenizer, split="train", n=10, seed=1)
    c = build_sft_data(f"sft:{path}", tokenizer, split="train", n=10, seed=2)
    assert a.examples == b.examples and a.examples != c.examples and len(a) == 10


def test_task_kinds():
    assert task_kind("arithmetic") == "sft" and CATALOG["arithmetic"].kind == "sft"
    assert task_kind("sft:my.jsonl") == "sft" and task_kind("hf:openai/gsm8k:main") == "sft"
    assert task_kind("sv-agreement") == "pairs" and task_kind("pairs.jsonl") == "pairs"
    with pytest.raises(ValueError, match="sft:FILE.jsonl"):
        task_kind("nonsense")
    from circuitviz.tasks import get_task

    with pytest.raises(ValueError, match="instruction"):
        get_task("arithmetic")
    from circuitviz.tasks.catalog import KIND_TUNE_DEFAULTS

    defaults = KIND_TUNE_DEFAULTS[CATALOG["arithmetic"].kind]["attribution"]
    assert defaults["metric"] == "process" and defaults["baseline"] == "mean"


# --- the answer extractor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is 5.\n#### 12", "12"),
        ("So 3 + 4 = 7.\n####   -8  \nthanks", "-8"),
        ("x #### 4\nThe next problem. #### 5", "4"),  # the first mark ends the answer
        ("####5", "5"),
        ("#### 1,234.50", "1,234.50"),
        ("#### Paris.", "Paris."),
        ("I think 3 + 4 = 7, so 7.", "7"),
        ("It costs .5 dollars", ".5"),
        ("value is 3.14.", "3.14"),
        ("We had 1,000,000 of them", "1,000,000"),
        ("  no numbers here  ", "no numbers here"),
        ("####\n", "####"),  # a mark with nothing after and no number: the whole text
        ("", ""),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_answers_compare_by_value_and_by_normalised_text():
    assert same_answer("#### 1,234.50", "1234.5")
    assert same_answer("so the total is $42.", "42")
    assert same_answer("#### 42.0", "42")
    assert same_answer("#### Paris.", "paris")
    assert not same_answer("#### 41", "42")
    assert not same_answer("#### 42 apples", "42")  # strict: extra words are a different answer
    assert normalize_answer("  New   York ") == "new york"
    assert normalize_answer("-0.50") == "-0.5"


# --- arithmetic -----------------------------------------------------------------------------------------


def test_arithmetic_problems_are_correct_and_split_by_seed(tokenizer):
    from circuitviz.tasks.arithmetic import INSTRUCTION, generate_problem

    rng = random.Random(0)
    steps = set()
    for _ in range(300):
        example = generate_problem(rng)
        assert example.prompt.endswith(INSTRUCTION)
        equations = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", example.response)
        n_steps = int(example.tags[0].removeprefix("steps="))
        steps.add(n_steps)
        for a, op, b, c in equations:  # every worked equation is right
            a, b, c = int(a), int(b), int(c)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c
        assert int(equations[-1][3]) == int(example.answer) >= 1
        assert example.response.endswith(f"#### {example.answer}")
        assert example.reference_answer == example.answer
    assert steps == {1, 2, 3}
    splits = {
        split: build_sft_data("arithmetic", tokenizer, split=split, n=40, seed=5)
        for split in ("train", "dev", "test")
    }
    prompts = {split: {ex.prompt for ex in data.examples} for split, data in splits.items()}
    assert all(len(p) == 40 for p in prompts.values())
    assert not (prompts["train"] & prompts["test"]) and not (prompts["dev"] & prompts["test"])
    again = build_sft_data("arithmetic", tokenizer, split="test", n=40, seed=5)
    other = build_sft_data("arithmetic", tokenizer, split="test", n=40, seed=6)
    assert again.examples == splits["test"].examples and other.examples != again.examples


def test_a_local_path_that_is_wrong_is_named_as_one(tmp_path):
    """A directory where a file should be, and a missing local file given as hf:, are said to be
    so (they were "does not exist" and a hub that cannot be reached)."""
    from circuitviz.tasks.data import load_jsonl_examples

    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(SFTSourceError, match="dir.jsonl is a directory; pass a .jsonl file"):
        load_sft_jsonl(tmp_path / "dir.jsonl")
    with pytest.raises(ValueError, match="dir.jsonl is a directory; pass a .jsonl file of pairs"):
        load_jsonl_examples(tmp_path / "dir.jsonl")
    for name in ("nonexist.csv", "./data/train.parquet", "~/nowhere/d"):
        with pytest.raises(SFTSourceError, match=f"no such file or directory '{re.escape(name)}'"):
            parse_hf_spec(f"hf:{name}")
    assert parse_hf_spec("hf:openai/gsm8k:main")[0] == "openai/gsm8k"  # a hub id stays one
